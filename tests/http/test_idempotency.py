"""An Idempotency-Key names one request body: the same body again is answered from what it stored,
a different body under the key is refused, and a replay whose rows retention removed says so."""

from __future__ import annotations

import sqlite3

from tests.harness import reading


def test_the_same_body_again_is_a_replay(client, settings):
    batch = [reading(i) for i in range(3)]
    first = client.post("/send", json=batch, headers={"Idempotency-Key": "s1:1"})
    again = client.post("/send", json=batch, headers={"Idempotency-Key": "s1:1"})
    assert first.status_code == again.status_code == 200
    assert again.headers["x-fdedge-replayed"] == "true" and again.json() == first.json()
    with sqlite3.connect(settings.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM sensor_data").fetchone()[0] == 3


def test_a_different_body_under_a_used_key_is_refused_naming_the_key(client, settings):
    assert client.post("/send", json=[reading(1), reading(2)], headers={"Idempotency-Key": "s1:2"}).status_code == 200
    for other in ([reading(3), reading(4)], [reading(1)], reading(9)):  # same size, smaller, a single reading
        r = client.post("/send", json=other, headers={"Idempotency-Key": "s1:2"})
        assert r.status_code == 409, r.text
        body = r.json()
        assert body["reason"] == "idempotency_key_reused" and body["key"] == "s1:2"
        assert "different body" in body["message"]
    with sqlite3.connect(settings.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM sensor_data").fetchone()[0] == 2


def test_a_different_body_in_the_same_commit_group_is_refused_too(make_client, settings):
    import asyncio

    from edge.appliance import Appliance
    from edge.ingest.bodies import parse

    async def both(app: Appliance) -> list:
        one = app.writer.ingest(parse("application/json", _json(reading(1))), "k", "a")
        two = app.writer.ingest(parse("application/json", _json(reading(2))), "k", "b")
        return await asyncio.gather(one, two, return_exceptions=True)

    client = make_client()
    app = client.app.state.appliance
    first, second = client.portal.call(both, app)
    assert not isinstance(first, Exception) and not first.replayed
    assert getattr(second, "status", None) == 409 and second.details["reason"] == "idempotency_key_reused"


def test_a_replay_whose_readings_retention_removed_says_so(client, settings):
    batch = [reading(i) for i in range(2)]
    assert client.post("/send", json=batch, headers={"Idempotency-Key": "s1:3"}).status_code == 200
    with sqlite3.connect(settings.db_path) as conn:  # as a retention pass would
        conn.execute("DELETE FROM sensor_data")
    r = client.post("/send", json=batch, headers={"Idempotency-Key": "s1:3"})
    assert r.status_code == 410, r.text
    assert r.json()["reason"] == "replay_gone" and "removed by retention" in r.json()["message"]


def test_keys_from_an_older_database_without_digests_still_replay(client, settings):
    batch = [reading(5)]
    first = client.post("/send", json=batch, headers={"Idempotency-Key": "old"})
    with sqlite3.connect(settings.db_path) as conn:
        conn.execute("UPDATE fdedge_ingest_keys SET body_sha256 = NULL")
    again = client.post("/send", json=batch, headers={"Idempotency-Key": "old"})
    assert again.status_code == 200 and again.headers["x-fdedge-replayed"] == "true"
    assert again.json() == first.json()


def _json(obj: object) -> bytes:
    import json
    return json.dumps(obj).encode()
