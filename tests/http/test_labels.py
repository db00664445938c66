"""Labels from the floor: /api/labels on alarms and time ranges, stored in SQLite, with clear
errors naming the field and nothing half-stored; the author is a named token's name."""

from __future__ import annotations

import sqlite3

import pytest

from edge.fdrest import format_time
from tests.harness import reading
from tests.http.test_roles import add


def _alarming(make_client, **overrides):
    # every fault of every reading is far above these thresholds: each reading raises alarms
    return make_client(warning_threshold=-1e9, alarm_threshold=-1e9 + 1, **overrides)


def _labels(settings) -> int:
    with sqlite3.connect(settings.db_path) as conn:
        return conn.execute("SELECT count(*) FROM fdedge_labels").fetchone()[0]


def _send(client, machine: str, n: int, t0: str = "2024-03-01 10:00:"):
    batch = [reading(k, Time=f"{t0}{k:02d}", machine=machine) for k in range(n)]
    assert client.post("/send", json=batch).status_code == 200


def test_a_range_label_is_stored_listed_filtered_and_deleted(make_client, settings):
    client = make_client()
    _send(client, "pump-7", 5)
    body = {"machine": "pump-7", "start": "2024-03-01T10:00:01Z", "end": "2024-03-01T10:00:03Z",
            "fault": "fault3", "intensity": 40, "note": "bearing noise", "by": "ana"}
    r = client.post("/api/labels", json=body)
    assert r.status_code == 201, r.text
    label = r.json()["label"]
    assert {k: label[k] for k in ("kind", "machine", "fault", "intensity", "start", "end", "by", "note")} == {
        "kind": "range", "machine": "pump-7", "fault": "fault3", "intensity": 40.0,
        "start": "2024-03-01T10:00:01Z", "end": "2024-03-01T10:00:03Z", "by": "ana", "note": "bearing noise"}
    healthy = client.post("/api/labels", json={"machine": "fan-1", "start": "2024-03-02T00:00:00Z",
                                               "end": "2024-03-02T01:00:00Z", "fault": "healthy", "by": "bo"})
    assert healthy.status_code == 201 and healthy.json()["label"]["intensity"] == 0.0
    assert [x["id"] for x in client.get("/api/labels").json()["labels"]] == [2, 1]  # newest first
    assert [x["id"] for x in client.get("/api/labels?machine=pump-7").json()["labels"]] == [1]
    overlapping = client.get("/api/labels", params={"start": "2024-03-01T10:00:02Z", "end": "2024-03-01T11:00:00Z"})
    assert [x["id"] for x in overlapping.json()["labels"]] == [1]
    assert client.get("/api/labels", params={"start": "2024-03-01T10:00:04Z", "end": "2024-03-01T11:00:00Z"}
                      ).json()["labels"] == []
    assert client.delete("/api/labels/1").json()["label"]["id"] == 1
    assert client.delete("/api/labels/1").status_code == 404
    assert [x["id"] for x in client.get("/api/labels").json()["labels"]] == [2]


@pytest.mark.parametrize("body,field", [
    ({"machine": "m", "start": "2024-03-01T10:00:00Z", "end": "2024-03-01T11:00:00Z", "fault": "fault9",
      "intensity": 5, "by": "a"}, "fault"),
    ({"machine": "m", "start": "2024-03-01T10:00:00Z", "end": "2024-03-01T11:00:00Z", "fault": "fault1",
      "intensity": 101, "by": "a"}, "intensity"),
    ({"machine": "m", "start": "2024-03-01T10:00:00Z", "end": "2024-03-01T11:00:00Z", "fault": "fault1",
      "by": "a"}, "intensity"),
    ({"machine": "m", "start": "yesterday", "end": "2024-03-01T11:00:00Z", "fault": "fault1",
      "intensity": 5, "by": "a"}, "start"),
    ({"machine": "m", "start": "2024-03-01T12:00:00Z", "end": "2024-03-01T11:00:00Z", "fault": "fault1",
      "intensity": 5, "by": "a"}, "end"),
    ({"machine": "", "start": "2024-03-01T10:00:00Z", "end": "2024-03-01T11:00:00Z", "fault": "fault1",
      "intensity": 5, "by": "a"}, "machine"),
    ({"machine": "m", "start": "2024-03-01T10:00:00Z", "end": "2024-03-01T11:00:00Z", "fault": "fault1",
      "intensity": 5}, "by"),
    ({"machine": "m", "start": "2024-03-01T10:00:00Z", "end": "2024-03-01T11:00:00Z", "fault": "healthy",
      "intensity": 5, "by": "a"}, "intensity"),
    ({"machine": "m", "start": "2024-03-01T10:00:00Z", "end": "2024-03-01T11:00:00Z", "fault": "fault1",
      "intensity": 5, "by": "a", "verdict": "confirmed"}, "verdict"),
    ({"alarm": 1, "verdict": "maybe", "by": "a"}, "verdict"),
    ({"alarm": "1", "verdict": "confirmed", "by": "a"}, "alarm"),
    ({"alarm": 1, "verdict": "false_alarm", "intensity": 3, "by": "a"}, "intensity"),
    ({"alarm": 1, "verdict": "confirmed", "by": "a", "fault": "fault1"}, "fault"),
    ({"alarm": 1, "verdict": "confirmed", "by": "a", "note": 7}, "note"),
])
def test_a_bad_label_is_refused_naming_the_field_and_nothing_is_stored(make_client, settings, body, field):
    client = make_client()
    r = client.post("/api/labels", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field, r.json()
    assert _labels(settings) == 0


def test_labels_on_alarms_take_the_alarms_machine_fault_and_span(make_client, settings):
    client = _alarming(make_client)
    _send(client, "m1", 3)
    alarms = client.get("/api/alarms?state=active").json()["alarms"]
    assert len(alarms) == 8
    first = alarms[-1]
    r = client.post("/api/labels", json={"alarm": first["id"], "verdict": "false_alarm", "note": "sensor knocked",
                                         "by": "ana"})
    assert r.status_code == 201, r.text
    label = r.json()["label"]
    assert (label["kind"], label["alarm"], label["verdict"], label["machine"], label["fault"]) == (
        "alarm", first["id"], "false_alarm", "m1", first["fault"])
    assert label["start"] == first["since"] and label["end"] == "2024-03-01T10:00:02Z"  # active: to the newest
    _send(client, "m1", 3, t0="2024-03-01 10:01:")
    assert client.get("/api/labels", params={"alarm": first["id"]}).json()["labels"][0]["end"] == \
        "2024-03-01T10:01:02Z"  # the span grows with the active alarm
    again = client.post("/api/labels", json={"alarm": first["id"], "verdict": "confirmed", "by": "bo"})
    assert again.status_code == 409 and again.json()["label"] == label["id"]
    assert client.post("/api/labels", json={"alarm": 999, "verdict": "confirmed", "by": "bo"}).status_code == 404
    confirmed = client.post("/api/labels", json={"alarm": alarms[0]["id"], "verdict": "confirmed",
                                                 "intensity": 80, "by": "bo"})
    assert confirmed.status_code == 201 and confirmed.json()["label"]["intensity"] == 80.0
    assert _labels(settings) == 2


def test_a_named_token_is_the_author_and_label_needs_its_permission(make_client, settings, capsys):
    client = make_client(token="shared-in")
    operator = add(capsys, settings.db_path, "shift A", "operator")
    viewer = add(capsys, settings.db_path, "wall", "viewer")
    body = {"machine": "m", "start": "2024-03-01T10:00:00Z", "end": "2024-03-01T11:00:00Z", "fault": "fault1",
            "intensity": 5, "by": "someone else"}
    assert client.post("/api/labels", json=body).status_code == 401
    refused = client.post("/api/labels", json=body, headers={"Authorization": f"Bearer {viewer}"})
    assert refused.status_code == 403 and refused.json()["needs"] == "label"
    r = client.post("/api/labels", json=body, headers={"Authorization": f"Bearer {operator}"})
    assert r.status_code == 201 and r.json()["label"]["by"] == "shift A"
    no_by = {k: v for k, v in body.items() if k != "by"}
    assert client.post("/api/labels", json=no_by, headers={"Authorization": f"Bearer {operator}"}).status_code == 201
    shared = client.post("/api/labels", json=body, headers={"Authorization": "Bearer shared-in"})
    assert shared.status_code == 201 and shared.json()["label"]["by"] == "someone else"
    client.cookies.set("fdedge_token", operator)  # the page's login cookie, from this site
    host = {"Origin": "http://testserver"}
    assert client.delete("/api/labels/1", headers=host).status_code == 200
    assert client.delete("/api/labels/2").status_code == 401  # no Origin: no cookie write


def test_an_older_file_gets_the_labels_table_in_place(make_client, settings):
    client = make_client()
    _send(client, "m", 2)
    client.close()
    with sqlite3.connect(settings.db_path) as conn:
        conn.execute("DROP TABLE fdedge_labels")
    client = make_client()
    assert client.get("/api/labels").json() == {"labels": []}
    assert client.post("/api/labels", json={"machine": "m", "start": format_time_iso(), "end": format_time_iso(),
                                            "fault": "healthy", "by": "a"}).status_code == 201


def format_time_iso() -> str:
    from datetime import UTC, datetime
    return format_time(datetime(2024, 3, 1, tzinfo=UTC)).replace(" ", "T") + "Z"


def test_a_label_is_json_and_bounded(make_client, settings):
    client = make_client()
    r = client.post("/api/labels", content=b"machine=m", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "a label is JSON" in r.json()["message"]
    assert client.post("/api/labels", content=b"{", headers={"Content-Type": "application/json"}).status_code == 400
    big = {"machine": "m", "start": "2024-03-01T10:00:00Z", "end": "2024-03-01T11:00:00Z", "fault": "healthy",
           "by": "a", "note": "x" * 20000}
    assert client.post("/api/labels", json=big).status_code == 413
    assert client.post("/api/labels", json=[1, 2]).status_code == 400
    assert _labels(settings) == 0
