"""Which model scored from when: every switch of the scoring model recorded with the first reading
it scored (GET /api/model/changes), so the charts can mark the moment history changed models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import make_linear_model, reading
from tests.harness import model_archive as archive
from tests.http.test_model_routes import ADMIN, with_replay


@pytest.fixture
def model_b(tmp_path) -> Path:
    directory = tmp_path / "model-b"
    with_replay(directory, make_linear_model(directory, seed=5))
    return directory


def test_the_start_and_every_switch_are_recorded_with_the_first_reading_they_scored(make_client, model_b):
    client = make_client(admin_token="admin-secret")
    first = client.get("/api/models", headers=ADMIN).json()["active"]
    for k in range(3):
        assert client.post("/send", json=reading(k)).status_code == 200
    version = client.post("/api/models", content=archive(model_b), headers=ADMIN).json()["version"]
    assert client.post(f"/api/models/{version}/activate", headers=ADMIN).status_code == 200
    for k in range(2):
        assert client.post("/send", json=reading(10 + k)).status_code == 200
    assert client.post("/api/models/rollback", headers=ADMIN).status_code == 200
    changes = client.get("/api/model/changes").json()["changes"]
    assert [(c["version"], c["first_id"]) for c in changes] == [(first, 1), (version, 4), (first, 6)]
    assert all(c["at"].endswith("Z") for c in changes) and changes[0]["at"] <= changes[1]["at"] <= changes[2]["at"]
    latest = client.get("/api/latest", params={"limit": 10}).json()["readings"]
    stored = {r["id"]: r["model_version"] for r in latest}
    times = {r["id"]: r["time"] for r in latest}
    assert [c["time"] for c in changes] == [times[1], times[4], None]  # the first reading each scored
    assert stored == {1: first, 2: first, 3: first, 4: version, 5: version}  # the column agrees

    # a range: the change in effect at its start, then those inside it
    since = client.get("/api/model/changes", params={"start": changes[1]["at"]}).json()["changes"]
    assert [c["version"] for c in since] == [version, first]
    assert client.get("/api/model/changes", params={"start": "nonsense"}).status_code == 400


def test_a_restart_with_the_same_model_records_nothing_new(make_client, settings):
    with make_client() as client:
        client.post("/send", json=reading(1))
        before = client.get("/api/model/changes").json()["changes"]
    with make_client() as client:
        assert client.get("/api/model/changes").json()["changes"] == before
        assert len(before) == 1
