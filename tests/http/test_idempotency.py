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
        first, second = (parse("application/json", _json(reading(i))) for i in (1, 2))
        one = app.writer.ingest(first, "k", first.digest())
        two = app.writer.ingest(second, "k", second.digest())
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


def test_the_same_readings_in_another_encoding_are_a_replay(client, settings):
    """A sensor that resumes its buffer with a larger --batch re-sends a claimed single reading as a
    one-element array; the readings are the same, so the key must replay, not conflict."""
    one = reading(5)
    first = client.post("/send", json=one, headers={"Idempotency-Key": "s1:5"})
    as_array = client.post("/send", content=_json([one]).replace(b",", b", "),
                           headers={"Idempotency-Key": "s1:5", "Content-Type": "application/json"})
    assert first.status_code == as_array.status_code == 200, as_array.text
    assert as_array.headers["x-fdedge-replayed"] == "true" and as_array.json() == first.json()
    with sqlite3.connect(settings.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM sensor_data").fetchone()[0] == 1


def test_an_untimed_reading_retried_is_a_replay(client, settings):
    """Its time of receipt differs on each attempt; the key binds the readings as sent."""
    untimed = {k: v for k, v in reading(6).items() if k != "Time"}
    first = client.post("/send", json=untimed, headers={"Idempotency-Key": "s1:6"})
    again = client.post("/send", json=[untimed], headers={"Idempotency-Key": "s1:6"})
    assert first.status_code == again.status_code == 200, again.text
    assert again.headers["x-fdedge-replayed"] == "true"


def test_a_key_stored_by_the_raw_body_version_replays_by_size(client, settings):
    """Digests of raw bytes (the version before) cannot be compared with reading digests."""
    assert client.post("/send", json=reading(7), headers={"Idempotency-Key": "s1:7"}).status_code == 200
    with sqlite3.connect(settings.db_path) as conn:
        conn.execute("UPDATE fdedge_ingest_keys SET body_sha256 = ? WHERE key = 's1:7'", ("ab" * 32,))
    r = client.post("/send", json=[reading(7)], headers={"Idempotency-Key": "s1:7"})
    assert r.status_code == 200 and r.headers["x-fdedge-replayed"] == "true"
