"""Model management over HTTP (issue 18 item 2): off without an admin token, admin only, uploads
checked (a bad or escaping archive refused naming what was wrong, the store unchanged), an
activation that replays the manifest's parity samples before it switches, rollback."""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from edge.fdrest import FEATURES
from edge.token_cli import main as token_cli
from tests.harness import linear_expected, make_linear_model, reading
from tests.harness import model_archive as archive

ADMIN = {"Authorization": "Bearer admin-secret"}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def with_replay(directory: Path, params: dict, skew: float = 0.0, n: int = 8) -> None:
    """Parity samples in the manifest as the build step keeps them: x in the model's input order,
    y the faults it expects (here the linear model's exact answer, plus `skew`)."""
    x = np.random.default_rng(7).normal(size=(n, 35))
    manifest = json.loads((directory / "manifest.json").read_text())
    order = [FEATURES.index(name) for name in manifest["features"]]
    manifest["parity"] = {"tolerance": 1e-4, "replay": {"x": x[:, order].tolist(),
                                                         "y": (linear_expected(params, x) + skew).tolist()}}
    (directory / "manifest.json").write_text(json.dumps(manifest))


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"hi",
           link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else b""


def faults_of(client, seed: int) -> np.ndarray:
    r = client.post("/send", json=reading(seed))
    assert r.status_code == 200, r.text
    return np.array(list(r.json()[0].values()))


@pytest.fixture
def model_b(tmp_path) -> tuple[Path, dict]:
    directory = tmp_path / "model-b"
    params = make_linear_model(directory, seed=5)
    with_replay(directory, params)
    return directory, params


def test_without_an_admin_token_model_management_over_http_is_off(make_client):
    client = make_client(token="ingest", read_token="read")
    for method, path in (("GET", "/api/models"), ("POST", "/api/models"), ("POST", "/api/models/rollback"),
                         ("POST", "/api/models/0123/activate")):
        for headers in ({}, {"Authorization": "Bearer ingest"}):
            r = client.request(method, path, headers=headers)
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["reason"] == "models_http_off" and "fdedge model" in r.json()["message"]


def test_a_named_admin_token_turns_it_on(make_client, settings, capsys):
    client = make_client()
    assert client.get("/api/models").json()["reason"] == "models_http_off"
    assert token_cli(["--db", str(settings.db_path), "add", "--name", "lead", "--role", "admin"]) == 0
    secret = capsys.readouterr().out.strip()
    time.sleep(0.6)  # the token table is re-read every 0.5 s
    assert client.get("/api/models").status_code == 401
    r = client.get("/api/models", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200 and r.json()["active"] == r.json()["scoring"]


def test_only_the_admin_token_manages_models(make_client):
    client = make_client(token="ingest", read_token="read", admin_token="admin-secret")
    assert client.get("/api/models").status_code == 401
    for other in ("ingest", "read"):
        r = client.get("/api/models", headers={"Authorization": f"Bearer {other}"})
        assert r.status_code == 403 and r.json()["reason"] == "role"
    r = client.get("/api/models", headers=ADMIN)
    assert r.status_code == 200
    body = r.json()
    assert [v["version"] for v in body["versions"]] == [body["active"]] and body["scoring"] == body["active"]
    assert body["previous"] is None and body["shadow"] is None
    # the shared admin token is no ingest token
    assert client.post("/send", json=reading(0), headers=ADMIN).status_code == 403


def test_upload_activate_and_rollback_change_what_scores(make_client, linear_model, model_b):
    client = make_client(admin_token="admin-secret")
    first = client.get("/api/models", headers=ADMIN).json()["active"]
    assert np.allclose(faults_of(client, 1), linear_expected(linear_model[1], np.array([list(reading(1).values())])),
                       rtol=1e-5)
    r = client.post("/api/models", content=archive(model_b[0]), headers=ADMIN)
    assert r.status_code == 201, r.text
    version = r.json()["version"]
    assert r.json()["added"] and not r.json()["model"]["active"]
    again = client.post("/api/models", content=archive(model_b[0]), headers=ADMIN)
    assert again.status_code == 200 and again.json() == {**r.json(), "added": False}
    assert client.get("/api/models", headers=ADMIN).json()["scoring"] == first  # kept, not active

    r = client.post(f"/api/models/{version}/activate", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["active"] == version and r.json()["previous"] == first and r.json()["replay"]["samples"] == 8
    assert client.get("/api/model").json()["store_version"] == version
    x = np.array([list(reading(2).values())])
    assert np.allclose(faults_of(client, 2), linear_expected(model_b[1], x), rtol=1e-5)
    listing = client.get("/api/models", headers=ADMIN).json()
    assert (listing["active"], listing["previous"], listing["scoring"]) == (version, first, version)

    r = client.post("/api/models/rollback", headers=ADMIN)
    assert r.status_code == 200 and r.json()["active"] == first and r.json()["previous"] == version
    assert np.allclose(faults_of(client, 3), linear_expected(linear_model[1], np.array([list(reading(3).values())])),
                       rtol=1e-5)
    assert client.get("/api/model").json()["store_version"] == first


def test_an_activation_whose_parity_samples_fail_is_refused_and_the_old_model_keeps_scoring(
        make_client, settings, tmp_path, linear_model):
    client = make_client(admin_token="admin-secret")
    off = tmp_path / "off"
    with_replay(off, make_linear_model(off, seed=6), skew=0.5)  # samples the model does not reproduce
    # the store refuses it at upload too; put it in as an older FD-Edge would have (no replay then)
    manifest = json.loads((off / "manifest.json").read_text())
    replay = manifest["parity"].pop("replay")
    (off / "manifest.json").write_text(json.dumps(manifest))
    version = client.post("/api/models", content=archive(off), headers=ADMIN).json()["version"]
    stored = settings.data_dir / "models" / version / "manifest.json"
    manifest["parity"]["replay"] = replay
    stored.write_text(json.dumps(manifest))  # the samples now disagree with what the model computes
    before = client.get("/api/models", headers=ADMIN).json()
    r = client.post(f"/api/models/{version}/activate", headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["reason"] == "parity" and "parity check failed" in r.json()["message"]
    assert client.get("/api/models", headers=ADMIN).json() == before
    x = np.array([list(reading(4).values())])
    assert np.allclose(faults_of(client, 4), linear_expected(linear_model[1], x), rtol=1e-5)


def test_activating_an_unknown_version_is_a_404_and_rollback_without_previous_is_refused(make_client):
    client = make_client(admin_token="admin-secret")
    r = client.post("/api/models/00000000deadbeef/activate", headers=ADMIN)
    assert r.status_code == 404 and r.json()["reason"] == "unknown_version"
    r = client.post("/api/models/not-hex/activate", headers=ADMIN)
    assert r.status_code == 404 and r.json()["reason"] == "unknown_version"
    r = client.post("/api/models/rollback", headers=ADMIN)
    assert r.status_code == 422 and r.json()["reason"] == "no_previous"


CASES = {
    "symlink": ("not_regular_file", lambda d: archive(d, member("model/evil", tarfile.SYMTYPE, link="/etc/passwd"))),
    "hard link": ("not_regular_file", lambda d: archive(d, member("model/evil", tarfile.LNKTYPE,
                                                                   link="model/manifest.json"))),
    "device": ("not_regular_file", lambda d: archive(d, member("model/dev", tarfile.CHRTYPE))),
    "fifo": ("not_regular_file", lambda d: archive(d, member("model/fifo", tarfile.FIFOTYPE))),
    "dot-dot": ("escapes", lambda d: archive(d, member("model/../../evil"))),
    "absolute": ("escapes", lambda d: archive(d, member("/tmp/evil"))),
    "not an archive": ("not_archive", lambda d: b"\x1f\x8b not really gzip"),
    "empty body": ("not_archive", lambda d: b""),
}
BROKEN = {
    "corrupt onnx": ("bad_file", lambda d: (d / "model.onnx").write_bytes(b"not onnx at all")),
    "missing scalers": ("missing_file", lambda d: (d / "scalers.npz").unlink()),
    "missing manifest": ("missing_file", lambda d: (d / "manifest.json").unlink()),
    "wrong features": ("features", lambda d: _edit(d, lambda m: m["features"].__setitem__(0, "Something Else"))),
    "hash differs": ("hash_mismatch", lambda d: _edit(d, lambda m: m.__setitem__("onnx_sha256", "0" * 64))),
    "manifest not json": ("manifest", lambda d: (d / "manifest.json").write_text("{not json")),
    "parity samples fail": ("parity", lambda d: _edit(d, lambda m: m["parity"]["replay"]["y"][0].__setitem__(
        0, m["parity"]["replay"]["y"][0][0] + 1e3))),
}


def _edit(directory: Path, change) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    change(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("case", [*CASES, *BROKEN])
def test_a_bad_upload_is_refused_naming_what_was_wrong_and_the_store_is_unchanged(make_client, settings, model_b,
                                                                                    case):
    client = make_client(admin_token="admin-secret")
    root = settings.data_dir / "models"
    before, listing = snapshot(root), client.get("/api/models", headers=ADMIN).json()
    if case in CASES:
        reason, build = CASES[case]
        body = build(model_b[0])
    else:
        reason, breaks = BROKEN[case]
        breaks(model_b[0])
        body = archive(model_b[0])
    r = client.post("/api/models", content=body, headers=ADMIN)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"] == "model_rejected" and r.json()["reason"] == reason, r.text
    assert str(root) not in r.json()["message"], "the message names the archive's files, not the staging path"
    assert snapshot(root) == before
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "nothing left aside"
    assert client.get("/api/models", headers=ADMIN).json() == listing


def test_an_upload_over_the_size_bound_is_refused_before_it_is_read(make_client, settings, monkeypatch, model_b):
    from edge.http import model_routes
    monkeypatch.setattr(model_routes, "MAX_UPLOAD_BYTES", 1024)
    client = make_client(admin_token="admin-secret")
    before = snapshot(settings.data_dir / "models")
    r = client.post("/api/models", content=archive(model_b[0]) + b"\0" * 2048, headers=ADMIN)
    assert r.status_code == 413 and r.json()["limit"] == 1024
    assert snapshot(settings.data_dir / "models") == before
