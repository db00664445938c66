"""The model store (issue 18): versions by content hash, activate/rollback/remove, uploads that are
refused leave the store as it was, and a kill -9 during activation leaves exactly one active model."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from edge.errors import ModelRejected
from edge.scoring.model_store import ModelStore
from tests.harness import make_linear_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def two_models(tmp_path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    make_linear_model(a, seed=1)
    make_linear_model(b, seed=2)
    return a, b


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tar_of(directory: Path, path: Path, extra: tarfile.TarInfo | None = None, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(directory, arcname="model")
        if extra is not None:
            tar.addfile(extra, io.BytesIO(data) if data else None)
    return path


def test_versions_are_content_hashes_and_activation_moves_previous(tmp_path, two_models):
    store = ModelStore(tmp_path / "store")
    a, b = (store.add(m) for m in two_models)
    assert a != b and store.add(two_models[0]) == a and store.versions() == sorted([a, b])
    assert store.state()["active"] is None
    store.activate(a)
    store.activate(b)
    assert store.state() == {"active": b, "previous": a, "shadow": None}
    assert store.rollback() == a
    assert store.state()["active"] == a and store.state()["previous"] == b
    listed = {m["version"]: m for m in store.list()}
    assert listed[a]["active"] and listed[a]["name"] == "linear-test" and not listed[b]["active"]
    with pytest.raises(ModelRejected, match="is active"):
        store.remove(a)
    store.remove(b)
    assert store.versions() == [a] and store.state()["previous"] is None
    with pytest.raises(ModelRejected, match="no previous"):
        store.rollback()


def test_a_tar_gz_is_added_like_its_directory(tmp_path, two_models):
    store = ModelStore(tmp_path / "store")
    assert store.add(tar_of(two_models[0], tmp_path / "a.tar.gz")) == store.add(two_models[0])
    assert len(store.versions()) == 1


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 2
    return info


@pytest.mark.parametrize("case, match", [
    ("symlink", "not a regular file"),
    ("dotdot", "escapes"),
    ("absolute", "escapes"),
    ("corrupt onnx", "ONNX model"),
    ("missing scalers", "scalers.npz is missing"),
    ("wrong features", "features must be"),
    ("not an archive", "not a readable tar.gz"),
])
def test_a_bad_upload_is_refused_and_the_store_is_unchanged(tmp_path, two_models, case, match):
    store = ModelStore(tmp_path / "store")
    store.activate(store.add(two_models[0]))
    before = snapshot(store.root)
    bad = tmp_path / "bad"
    make_linear_model(bad, seed=3)
    archive = tmp_path / "bad.tar.gz"
    if case == "symlink":
        tar_of(bad, archive, _link("model/evil", "/etc/passwd"))
    elif case == "dotdot":
        tar_of(bad, archive, _file("model/../../evil"), b"hi")
    elif case == "absolute":
        tar_of(bad, archive, _file("/tmp/evil"), b"hi")
    elif case == "corrupt onnx":
        (bad / "model.onnx").write_bytes(b"not onnx at all")
        tar_of(bad, archive)
    elif case == "missing scalers":
        (bad / "scalers.npz").unlink()
        tar_of(bad, archive)
    elif case == "wrong features":
        manifest = json.loads((bad / "manifest.json").read_text())
        manifest["features"][0] = "Something Else"
        (bad / "manifest.json").write_text(json.dumps(manifest))
        tar_of(bad, archive)
    else:
        archive.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ModelRejected, match=match):
        store.add(archive)
    assert snapshot(store.root) == before
    assert not list(store.root.glob(".*")), "no staging directory left behind"


ACTIVATE_FOREVER = """
import sys
from pathlib import Path
from edge.scoring.model_store import ModelStore
store = ModelStore(Path(sys.argv[1]))
a, b = sys.argv[2], sys.argv[3]
print("ready", flush=True)
while True:
    store.activate(a)
    store.activate(b)
"""


def test_kill_9_during_activation_leaves_exactly_one_active_model(tmp_path, two_models):
    store = ModelStore(tmp_path / "store")
    a, b = (store.add(m) for m in two_models)
    store.activate(a)
    seen = set()
    for i in range(12):
        proc = subprocess.Popen([sys.executable, "-c", ACTIVATE_FOREVER, str(store.root), a, b],
                                cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.037 * i)  # a different point in the loop each time
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = ModelStore(store.root).state()  # parses: the record is whole
        assert state["active"] in {a, b} and state["previous"] in {a, b} and state["active"] != state["previous"]
        seen.add(state["active"])
        assert [p.name for p in store.root.iterdir() if p.is_dir()] and set(store.versions()) == {a, b}
    assert seen == {a, b}, "the kills should land on both sides of a switch"
