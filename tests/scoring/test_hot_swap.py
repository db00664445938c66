"""A model swapped in under continuous ingest (issue 18 item 6), against `fdedge serve` under real
uvicorn on loopback: no request fails, every reading is stamped with the version whose answer it
got (and stored), answers after the activation are the new model's, rollback brings the old one
back, a bad upload leaves the store as it was, and a kill -9 during an activation leaves exactly
one active model. With FD-REST's artifacts (and the build extra) the new model is FD-REST's own,
converted here, and its answers on the appliance are FD-REST's reference predictions."""

from __future__ import annotations

import csv
import http.client
import json
import shutil
import sqlite3
import tarfile
import threading
import time
from itertools import groupby
from pathlib import Path

import numpy as np
import pytest

from edge.fdrest import COLUMNS, FAULTS, FEATURES
from tests.harness import BUNDLED, FDREST, linear_expected, make_linear_model, model_archive, reading

ADMIN_TOKEN = "admin-Secr3t-5d2e"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def with_replay(directory: Path, params: dict) -> None:
    """Parity samples as the build step keeps them, the linear model's exact answers."""
    x = np.random.default_rng(11).normal(size=(8, 35))
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["parity"] = {"tolerance": 1e-4, "replay": {"x": x.tolist(), "y": linear_expected(params, x).tolist()}}
    (directory / "manifest.json").write_text(json.dumps(manifest))


class Ingest:
    """Sensors posting one reading per request on keep-alive connections until stopped; every
    answer kept with when its request was sent and answered."""

    def __init__(self, port: int, senders: int = 3) -> None:
        self.port, self.stop_flag = port, threading.Event()
        self.answers: list[tuple[float, float, int, np.ndarray, np.ndarray | None]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(k,), daemon=True) for k in range(senders)]

    def __enter__(self) -> Ingest:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)

    def run(self, k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        i = 0
        while not self.stop_flag.is_set():
            body = reading(k * 1_000_000 + i, machine=f"sensor-{k}")
            x = np.array([body[name] for name in FEATURES])
            sent = time.monotonic()
            conn.request("POST", "/send", json.dumps(body), {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            faults = np.array(list(json.loads(data)[0].values())) if response.status == 200 else None
            with self.lock:
                self.answers.append((sent, time.monotonic(), response.status, x, faults))
            i += 1
        conn.close()

    def count(self) -> int:
        with self.lock:
            return len(self.answers)

    def wait_for(self, more: int, timeout: float = 30) -> None:
        target, deadline = self.count() + more, time.monotonic() + timeout
        while self.count() < target:
            assert time.monotonic() < deadline, "ingest stalled"
            time.sleep(0.01)


def timed(server, method: str, path: str, body: bytes | None = None) -> tuple[float, float, int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    sent = time.monotonic()
    conn.request(method, path, body, ADMIN)
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    return sent, time.monotonic(), response.status, answer


def stored_rows(db: Path) -> list[tuple[int, str, np.ndarray, np.ndarray]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(f"SELECT id, model_version, {', '.join(COLUMNS)}, {', '.join(FAULTS)} "
                            "FROM sensor_data ORDER BY id").fetchall()
    return [(r[0], r[1], np.array(r[2:37]), np.array(r[37:45])) for r in rows]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def models(tmp_path) -> dict[str, tuple[Path, dict]]:
    out = {}
    for name, seed in (("a", 21), ("b", 22)):
        directory = tmp_path / f"model-{name}"
        params = make_linear_model(directory, seed=seed)
        with_replay(directory, params)
        out[name] = (directory, params)
    return out


def test_a_hot_swap_and_a_rollback_under_continuous_ingest_fail_no_request(server_factory, models, tmp_path):
    server = server_factory(models["a"][0], env={"FDEDGE_ADMIN_TOKEN": ADMIN_TOKEN})
    server.start()
    store = Path(server.data_dir) / "models"
    a = server.request("GET", "/api/models", headers=ADMIN)[1]["active"]
    predicts = {"a": models["a"][1], "b": models["b"][1]}

    with Ingest(server.port) as ingest:
        ingest.wait_for(100)
        _, _, status, added = timed(server, "POST", "/api/models", model_archive(models["b"][0]))
        assert status == 201, added
        b = added["version"]
        ingest.wait_for(50)  # an upload and its check do not hold ingest up either
        damaged = tmp_path / "damaged"
        shutil.copytree(models["b"][0], damaged)
        (damaged / "model.onnx").write_bytes((damaged / "model.onnx").read_bytes()[:-40])  # cut short in transit
        escaping = tarfile.TarInfo("model/../../../outside")
        escaping.size = 2
        before = snapshot(store)
        for bad, reason in ((model_archive(damaged), "bad_file"),
                            (model_archive(models["b"][0], (escaping, b"hi")), "escapes")):
            status, refused = timed(server, "POST", "/api/models", bad)[2:]
            assert status == 422 and refused["reason"] == reason, refused
        assert snapshot(store) == before and not (tmp_path / "outside").exists()

        activate_sent, activated, status, answer = timed(server, "POST", f"/api/models/{b}/activate")
        assert status == 200 and answer["active"] == b and answer["replay"]["samples"] == 8, answer
        ingest.wait_for(150)
        rollback_sent, rolled, status, answer = timed(server, "POST", "/api/models/rollback")
        assert status == 200 and answer["active"] == a, answer
        ingest.wait_for(150)

    answers = ingest.answers
    assert len(answers) >= 450 and {s for _, _, s, _, _ in answers} == {200}, "every request answered 200"
    version_of = {a: "a", b: "b"}

    def model_that_answered(x: np.ndarray, faults: np.ndarray) -> str:
        fits = [k for k, p in predicts.items()
                if np.allclose(faults, linear_expected(p, x[None])[0], rtol=1e-4, atol=1e-3)]
        assert len(fits) == 1, "each answer is exactly one model's"
        return fits[0]

    for sent, done, _, x, faults in answers:
        assert faults is not None
        got = model_that_answered(x, faults)
        if done < activate_sent or sent > rolled:
            assert got == "a"
        elif activated < sent and done < rollback_sent:
            assert got == "b", "after the activation answered, the new model scores"

    rows = stored_rows(Path(server.data_dir) / "sensor_data.db")
    assert len(rows) == len(answers)
    for _, version, x, faults in rows:  # the stamp names the model whose faults were stored
        assert np.allclose(faults, linear_expected(predicts[version_of[version]], x[None])[0], rtol=1e-4, atol=1e-3)
    assert [v for v, _ in groupby(version_of[r[1]] for r in rows)] == ["a", "b", "a"], \
        "one switch to b and one back: no group scored half by each"
    server.stop()
    assert json.loads((store / "state.json").read_text())["active"] == a


ACTIVATE_IN_A_LOOP = """
import json, sys, urllib.request
port, token, a, b = sys.argv[1:5]
print("ready", flush=True)
while True:
    for version in (a, b):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/models/{version}/activate", data=b"",
                                     method="POST", headers={"Authorization": "Bearer " + token})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
"""


def test_a_kill_9_during_activations_over_http_leaves_exactly_one_active_model(server_factory, models):
    """The server itself killed at different points of back-to-back activations: on restart the
    record names one active model (the one it then scores with) and one previous. The bundled
    model as --model-dir: a restart keeps the store's active model (another --model-dir would be
    added and activated at start)."""
    import subprocess
    import sys
    server = server_factory(BUNDLED, env={"FDEDGE_ADMIN_TOKEN": ADMIN_TOKEN})
    server.start()
    a, b = (timed(server, "POST", "/api/models", model_archive(models[k][0]))[3]["version"] for k in "ab")
    assert timed(server, "POST", f"/api/models/{a}/activate")[2] == 200
    seen = set()
    for i in range(8):
        client = subprocess.Popen([sys.executable, "-c", ACTIVATE_IN_A_LOOP, str(server.port), ADMIN_TOKEN, a, b],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert client.stdout is not None and client.stdout.readline().strip() == "ready"
        time.sleep(0.3 + 0.11 * i)
        server.kill()
        client.kill()
        client.wait()
        state = json.loads((Path(server.data_dir) / "models" / "state.json").read_text())
        assert {state["active"], state["previous"]} == {a, b}
        seen.add(state["active"])
        server.start()
        assert server.get("/api/model")["store_version"] == state["active"]
        expected = linear_expected(models["a" if state["active"] == a else "b"][1],
                                   np.array([list(reading(i).values())]))[0]
        assert np.allclose(list(server.send(reading(i)).values()), expected, rtol=1e-5)
    assert seen == {a, b}, "the kills should land on both sides of a switch"


def _reference_rows() -> tuple[list[dict], np.ndarray]:
    with open(FDREST / "reference_predictions.csv", newline="") as fh:
        rows = [{k: float(v) for k, v in row.items() if k != "Time"} for row in csv.DictReader(fh)]
    expected = np.array([[row[f] for f in FAULTS] for row in rows])
    return [{name: row[name] for name in FEATURES} for row in rows], expected


@pytest.mark.build
@pytest.mark.skipif(not (FDREST / "dnn_model.keras").is_file(), reason=f"FD-REST's artifacts are not in {FDREST}")
def test_fdrest_converted_and_swapped_in_under_ingest_answers_its_reference_predictions(server_factory, models,
                                                                                          tmp_path):
    pytest.importorskip("tensorflow")
    from convert.cli import main as convert
    out = tmp_path / "fdrest"
    assert convert(["--keras", str(FDREST / "dnn_model.keras"), "--feature-scaler", str(FDREST / "feature_scaler.pkl"),
                    "--target-scaler", str(FDREST / "target_scaler.pkl"), "--out", str(out), "--name", "fdrest"]) == 0
    shutil.rmtree(out / ".convert-cache", ignore_errors=True)
    server = server_factory(models["a"][0], args=["--admin-token", ADMIN_TOKEN])
    server.start()
    with Ingest(server.port, senders=2) as ingest:
        ingest.wait_for(50)
        status, added = timed(server, "POST", "/api/models", model_archive(out))[2:]
        assert status == 201, added
        status, answer = timed(server, "POST", f"/api/models/{added['version']}/activate")[2:]
        assert status == 200 and answer["replay"]["samples"] == 16, answer
        ingest.wait_for(50)
        rows, expected = _reference_rows()
        got = np.array([list(server.send(row).values()) for row in rows])
    assert {s for _, _, s, _, _ in ingest.answers} == {200}
    tolerance = json.loads((out / "manifest.json").read_text())["parity"]["tolerance"]
    assert len(rows) == 208 and np.abs(got - expected).max() <= tolerance * np.ptp(expected)
