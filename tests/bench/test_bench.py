"""`python -m bench --quick` end to end: every section runs and lands in the JSON.

No timing assertions: the figures depend on the machine; only the shape of the results and
that real work was measured (non-zero request counts, every SSE client connected) are checked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import BUNDLED, make_linear_model

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_quick_bench_writes_every_section(tmp_path: Path) -> None:
    if (BUNDLED / "manifest.json").is_file():
        model_dir = BUNDLED
    else:  # before models/default is converted: the tiny linear model is enough for a smoke run
        model_dir = tmp_path / "model"
        make_linear_model(model_dir)
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--model-dir", str(model_dir), "--out", str(out),
                           "--tmp", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "quick.json").read_text())
    assert (out / "quick.md").read_text().startswith("Measured by `make bench`")
    assert results["quick"] is True and results["failed"] is False
    for key in ("cpu", "cores", "python", "versions"):
        assert key in results["machine"]
    assert "onnxruntime" in results["machine"]["versions"]

    inference = results["inference"]
    for key in ("onnx_batch1_us", "onnx_batch256_us", "keras_predict_batch1_us", "keras_call_batch1_us"):
        assert key in inference
    assert inference["onnx_batch1_us"] > 0 and inference["onnx_batch256_us"] > 0

    http = results["http"]
    for name in ("bare", "edge-full", "edge-normal"):
        assert http["single"][name]["rps"] > 0 and http["single"][name]["errors"] == 0
        assert http["single_crowd"][name]["rps"] > 0 and http["single_crowd"][name]["errors"] == 0
        assert http["fixed_rate"][name]["p99_ms"] is not None
    for name in ("edge-full", "edge-normal"):
        assert http["single"][name]["ratio_to_bare"] > 0 and http["single_crowd"][name]["ratio_to_bare"] > 0
        assert http["batch"][name]["readings_per_s"] > 0
    # the durable yardstick (bench/bare_app.py) ran both closed-loop loads without an error
    for key in ("single", "single_crowd"):
        assert http[key]["bare-durable"]["rps"] > 0 and http[key]["bare-durable"]["errors"] == 0
        assert http[key]["bare-durable"]["ratio_to_bare"] > 0 and http[key]["edge-full"]["ratio_to_durable"] > 0

    resources = results["resources"]
    for key in ("rss_after_bytes", "startup_s", "bytes_per_reading"):
        assert resources[key] > 0
    assert resources["stored_readings"] == results["plan"]["stored_readings"]

    sse = results["sse"]
    assert sse["clients"] == 100 and sse["without"]["rps"] > 0
    # the dashboard's shape (the target) and the default shape, measured in the same rounds
    assert sse["shape"] == "arrays"
    for key, shape in (("with", "arrays"), ("with_objects", "objects")):
        assert sse[key]["rps"] > 0 and sse[key]["delivered_fraction"] >= 1.0, key  # every reading reached every client
        assert all(r["clients_failed"] == 0 and r["shape"] == shape for r in sse[key]["rounds"])
    assert sse["with"]["bytes_per_client_per_reading"] < sse["with_objects"]["bytes_per_client_per_reading"]
    assert sse["slowdown"] is not None and sse["slowdown_objects"] is not None
    # the floor: the same readers got every stored reading from the pusher, in the dashboard's frames
    floor = sse["with_floor"]
    assert floor["rps"] > 0 and floor["delivered_fraction"] >= 1.0 and sse["slowdown_floor"] is not None
    assert all(r["clients_failed"] == 0 and r["pushed"] >= r["stored"] for r in floor["rounds"])
    assert floor["sender_cpu_us_per_reading"] > 0
    assert abs(floor["bytes_per_client_per_reading"] - sse["with"]["bytes_per_client_per_reading"]) < 40
    table = (out / "quick.md").read_text()
    assert "dashboard's shape arrays" in table and "default shape objects" in table
    assert "ingest slowdown with 100 SSE clients of the dashboard's event shape (arrays)" in {
        t["name"] for t in results["targets"]}
    assert {t["path"] for t in results["targets"]} >= {"http.single.edge-full.ratio_to_bare", "resources.startup_s"}
    # the servers are gone
    assert not list(tmp_path.glob("fdedge-bench-*")), "the temporary work dir was not removed"


def test_durable_yardstick_stores_each_body_before_answering(tmp_path: Path, monkeypatch, make_client) -> None:
    """The durable bare app is a yardstick only if it does the work: every answered body is in its log."""
    from bench.bare_app import durable
    from bench.common import DURABLE_LOG

    log = tmp_path / "durable.log"
    monkeypatch.setenv(DURABLE_LOG, str(log))
    bodies = [b'{"n": %d}' % i for i in range(5)]
    with make_client(app=durable) as client:
        for body in bodies:
            answer = client.post("/send", content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 200 and len(answer.json()[0]) == 8
            assert log.read_bytes().endswith(body)
    assert log.read_bytes() == b"".join(bodies)
