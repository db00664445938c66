"""GET /api/explain: the features behind a stored reading's largest fault, with the bundled model
and real onnxruntime; a healthy reading is called healthy instead of being given causes."""

from __future__ import annotations

import json

import numpy as np

from edge.fdrest import FEATURES
from tests.harness import BUNDLED

STATS = json.loads((BUNDLED / "manifest.json").read_text())["training_stats"]["features"]
MEAN = {f: STATS[f]["mean"] for f in FEATURES}
STD = {f: STATS[f]["std"] for f in FEATURES}


def body(machine: str, **sigmas: float) -> dict:
    out = {f: MEAN[f] + sigmas.get(f.replace(" ", "_"), 0.0) * STD[f] for f in FEATURES}
    return {**out, "machine": machine, "Time": "2024-06-01 10:00:00"}


def test_a_faulty_reading_is_explained_by_the_feature_pushed_out_and_a_healthy_one_is_healthy(make_client):
    with make_client(model_dir=BUNDLED) as client:
        pushed = client.post("/send", json=body("pump-1", PEAK_Axial=8.0))
        assert pushed.status_code == 200
        (faults,) = pushed.json()  # FD-REST's answer: [{"fault0": .., ..., "fault7": ..}]
        assert max(faults.values()) >= 30, faults  # a warning at least: worth explaining
        why = client.get("/api/explain", params={"machine": "pump-1"}).json()
        assert why["healthy"] is False and why["machine"] == "pump-1" and why["id"] == 1
        assert why["features"][0]["feature"] == "PEAK_Axial" and why["features"][0]["sigma"] > 5
        assert why["text"].startswith(why["fault"]) and "PEAK_Axial +" in why["text"]
        assert why["baseline"] == "training data"
        assert client.post("/send", json=body("pump-2")).status_code == 200
        calm = client.get("/api/explain", params={"id": 2}).json()
        assert calm["healthy"] is True and calm["features"] == [] and calm["text"].startswith("healthy")
        assert client.get("/api/explain", params={"id": 1}).json()["features"] == why["features"]


def test_a_named_fault_is_explained_even_below_warning(make_client):
    """An alarm's own fault, which need not be the reading's largest."""
    with make_client(model_dir=BUNDLED) as client:
        client.post("/send", json=body("m"))
        got = client.get("/api/explain", params={"id": 1, "fault": "fault3"}).json()
        assert got["fault"] == "fault3" and got["healthy"] is False and "text" in got
        bad = client.get("/api/explain", params={"id": 1, "fault": "fault9"})
        assert bad.status_code == 400 and bad.json()["field"] == "fault"


def test_an_unknown_reading_or_machine_is_a_clear_404_and_bad_parameters_a_400(make_client):
    with make_client(model_dir=BUNDLED) as client:
        missing = client.get("/api/explain", params={"id": 99})
        assert missing.status_code == 404 and "99" in missing.json()["message"]
        assert client.get("/api/explain", params={"machine": "nope"}).status_code == 404
        for params in ({}, {"id": "x"}, {"id": 1, "machine": "m"}):
            bad = client.get("/api/explain", params=params)
            assert bad.status_code == 400 and bad.json()["field"] in ("id", "machine"), (params, bad.text)


def test_explanations_agree_with_the_building_block(make_client):
    """The route adds the reading lookup and the healthy rule, nothing else."""
    from edge.scoring.explain import Baseline, explain
    from edge.scoring.model import load
    from edge.scoring.training_stats import parse

    model = load(BUNDLED)
    stats = parse(json.loads((BUNDLED / "manifest.json").read_text()))
    baseline = Baseline.from_training(stats)
    reading = body("m", KURTOSIS_Horizontal=7.0)
    x = np.array([reading[f] for f in FEATURES])
    with make_client(model_dir=BUNDLED) as client:
        client.post("/send", json=reading)
        got = client.get("/api/explain", params={"id": 1}).json()
    want = explain(model, baseline, x)
    assert [f["feature"] for f in got["features"]] == [f["feature"] for f in want["features"]]
    assert got["value"] == want["value"] and got["fault"] == want["fault"]
