"""Drift per machine on the running appliance: each machine's recent window scored against the
active model's training statistics, off the ingest path, on /api/machines and /metrics."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import numpy as np

from edge.fdrest import FEATURES
from edge.scoring.drift import MIN_READINGS, THRESHOLD
from simulator.machine import VirtualMachine
from tests.harness import BUNDLED


def healthy(seed: int, n: int, machine: str, shift: dict[str, float] | None = None) -> list[dict]:
    out = []
    # started at the readings' own time: the simulated ambient follows the time of day
    start = datetime(2024, 6, 1, 10, tzinfo=UTC)
    for k, r in enumerate(VirtualMachine(seed, "default", scenario="healthy", start=start).run(n, 2.0)):
        body = {f: float(r.features[f]) for f in FEATURES}
        for name, by in (shift or {}).items():
            body[name] += by
        body.update(machine=machine, Time=f"2024-06-01 10:{k // 60:02d}:{k % 60:02d}")
        out.append(body)
    return out


def drift_of(client, machine: str, timeout: float = 10) -> dict | None:
    deadline = time.monotonic() + timeout
    while True:
        found = {m["machine"]: m for m in client.get("/api/machines").json()["machines"]}[machine]
        if found.get("drift") is not None or time.monotonic() > deadline:
            return found.get("drift")
        time.sleep(0.05)


def test_a_drifted_machine_is_named_with_its_feature_and_a_healthy_one_is_not(make_client, settings):
    std = {f: v for f, v in zip(FEATURES, _training_std(), strict=True)}
    with make_client(model_dir=BUNDLED, drift_interval=0.05, drift_window=120) as client:
        assert client.post("/send", json=healthy(1, 120, "pump-ok")).status_code == 200
        hot = healthy(2, 120, "pump-hot", shift={"Temperature": 6 * std["Temperature"]})
        assert client.post("/send", json=hot).status_code == 200
        ok, drifted = drift_of(client, "pump-ok"), drift_of(client, "pump-hot")
        assert ok is not None and not ok["drifted"] and ok["score"] < THRESHOLD / 2 and ok["readings"] == 120
        assert drifted is not None and drifted["drifted"] and drifted["score"] >= THRESHOLD
        assert drifted["top"][0]["feature"] == "Temperature"
        fleet = {m["machine"]: m for m in client.get("/api/fleet").json()["machines"]}
        assert fleet["pump-hot"]["drift"]["drifted"] and not fleet["pump-ok"]["drift"]["drifted"]
        metrics = client.get("/metrics").text
        scores = dict(re.findall(r'^fdedge_drift_score\{machine="([^"]+)"\} (\S+)$', metrics, re.MULTILINE))
        assert float(scores["pump-hot"]) >= THRESHOLD > float(scores["pump-ok"])


def test_drift_follows_new_readings_and_a_short_window_is_unknown(make_client, settings):
    with make_client(model_dir=BUNDLED, drift_interval=0.05, drift_window=60) as client:
        client.post("/send", json=healthy(3, MIN_READINGS - 1, "m"))
        time.sleep(0.5)
        assert drift_of(client, "m", timeout=0.3) is None  # too few readings to say
        client.post("/send", json=healthy(4, 60, "m", shift={"Temperature": 1e3}))
        assert drift_of(client, "m")["drifted"]
        client.post("/send", json=healthy(5, 60, "m"))  # the window is the newest 60: healthy again
        deadline = time.monotonic() + 10
        while drift_of(client, "m")["drifted"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not drift_of(client, "m")["drifted"]


def test_without_training_statistics_drift_is_unknown_not_zero(make_client, settings):
    with make_client(drift_interval=0.05) as client:  # the linear test model has no training_stats
        client.post("/send", json=healthy(6, 60, "m"))
        time.sleep(0.5)
        assert drift_of(client, "m", timeout=0.3) is None
        assert "fdedge_drift_score{" not in client.get("/metrics").text


def _training_std() -> np.ndarray:
    import json
    stats = json.loads((BUNDLED / "manifest.json").read_text())["training_stats"]
    return np.array([stats["features"][f]["std"] for f in FEATURES])
