"""The appliance never loads the build step's libraries.

TensorFlow alone is 1.3 GB and ~0.7 GB of RSS; a Raspberry Pi install carries only
onnxruntime and numpy. Modules are discovered by walking the package, so modules added
to edge/ later are covered without editing this test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("tensorflow", "keras", "sklearn", "joblib", "tf2onnx")
REPO = Path(__file__).resolve().parent.parent

SCRIPT = f"""
import importlib, json, pkgutil, sys
import edge
imported, failed = [], {{}}
for info in pkgutil.walk_packages(edge.__path__, "edge."):
    if info.name.rsplit(".", 1)[-1] == "__main__":
        continue  # running the CLI is not importing it
    try:
        importlib.import_module(info.name)
        imported.append(info.name)
    except Exception as exc:
        failed[info.name] = f"{{type(exc).__name__}}: {{exc}}"
loaded = sorted(m for m in {FORBIDDEN!r} if m in sys.modules)
print(json.dumps({{"imported": imported, "failed": failed, "loaded": loaded}}))
"""


def test_edge_imports_no_build_dependencies() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["failed"], f"edge modules fail to import: {result['failed']}"
    assert "edge.cli" in result["imported"] and "edge.fdrest" in result["imported"]
    assert result["loaded"] == [], f"importing edge.* loaded {result['loaded']} (imported: {result['imported']})"


def test_onnxruntime_telemetry_is_off_and_writes_nothing(tmp_path):
    """An appliance must not phone home: no device id, no event database, no DNS lookup."""
    code = (
        "import edge.scoring.model, pathlib\n"
        "m = edge.scoring.model.load(pathlib.Path('models/default'))\n"
        "import os; print(os.environ['ORT_DISABLE_TELEMETRY'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env["HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
    assert not (tmp_path / ".cache" / "Microsoft").exists()
