"""`--sync full`: an answer waits for the WAL's fdatasync; a failed sync is a 503, not a 200.

Also the POST /send shortcut past Starlette's layers: same token check, same JSON errors.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest

from edge.store import walsync
from tests.harness import reading


def _count(settings) -> int:
    with sqlite3.connect(settings.db_path) as conn:
        return conn.execute("SELECT count(*) FROM sensor_data").fetchone()[0]


def _in_database(target: str, settings) -> bool:
    """The database's files (main, -wal); the model store under the data dir syncs its own at start."""
    return target.startswith(os.path.realpath(str(settings.db_path)))


def test_full_sync_answers_only_after_the_wal_is_synced(make_client, settings, monkeypatch):
    gate = threading.Event()
    synced: list[str] = []
    real = getattr(os, "fdatasync", os.fsync)

    def held_sync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")  # the file behind the descriptor (Linux)
        if not _in_database(target, settings):
            real(fd)  # the model store's own files, written once at start
            return
        synced.append(target)
        gate.wait(10)
        real(fd)

    monkeypatch.setattr(walsync.os, "fdatasync", held_sync, raising=False)
    monkeypatch.setattr(walsync.os, "fsync", held_sync)
    answers: list[int] = []
    with make_client(sync="full") as client:
        sender = threading.Thread(target=lambda: answers.append(client.post("/send", json=reading(1)).status_code))
        sender.start()
        deadline = time.monotonic() + 5
        while not synced and time.monotonic() < deadline:
            time.sleep(0.01)
        assert synced, "no fdatasync was started for a committed reading"
        assert synced[0] == os.path.realpath(f"{settings.db_path}-wal"), synced  # the database's WAL, nothing else
        time.sleep(0.3)
        assert answers == [], "the reading was answered before its commit was on disk"
        assert _count(settings) == 1  # committed (visible), only the answer waits
        gate.set()
        sender.join(10)
        assert answers == [200]


def test_a_failed_sync_is_503_and_the_next_reading_is_stored(make_client, settings, monkeypatch):
    failing = {"on": True}
    real = getattr(os, "fdatasync", os.fsync)

    def flaky(fd: int) -> None:
        if failing["on"] and _in_database(os.readlink(f"/proc/self/fd/{fd}"), settings):
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(walsync.os, "fdatasync", flaky, raising=False)
    monkeypatch.setattr(walsync.os, "fsync", flaky)
    with make_client(sync="full") as client:
        bad = client.post("/send", json=reading(2))
        assert bad.status_code == 503
        assert bad.json()["reason"] == "sync_failed"
        assert "power" in bad.json()["message"]
        failing["on"] = False
        good = client.post("/send", json=reading(3))
        assert good.status_code == 200, good.text
        assert client.get("/readyz").status_code == 200


def test_normal_sync_needs_no_syncer(make_client, monkeypatch):
    def forbidden(fd: int) -> None:
        raise AssertionError("sync=normal must not fdatasync per answer")

    monkeypatch.setattr(walsync.os, "fdatasync", forbidden, raising=False)
    with make_client(sync="normal") as client:
        assert client.post("/send", json=[reading(4), reading(5)]).status_code == 200


def test_the_send_shortcut_keeps_the_token_check(make_client, settings):
    with make_client(token="s3cret") as client:
        refused = client.post("/send", json=reading(6))
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert client.post("/send", json=reading(6), headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert _count(settings) == 1


def test_the_send_shortcut_maps_errors_to_json(client, monkeypatch, caplog):
    assert client.post("/send", content=b"{", headers={"Content-Type": "application/json"}).json()["error"] == "invalid_json"
    assert client.put("/send", json=reading(7)).status_code == 405  # other methods take the router

    async def broken(scope, receive, send):
        raise RuntimeError("a bug")

    monkeypatch.setattr("edge.http.ingest_routes.send_endpoint", broken)
    answer = client.post("/send", json=reading(7))
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal", "message": "internal error; the server logged the details"}
    assert "a bug" not in answer.text
    assert any("unexpected error on POST /send" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_batches_and_singles_interleave_under_both_modes(make_client, settings, sync):
    with make_client(sync=sync) as client:
        results: list[int] = []

        def post(i: int) -> None:
            body = reading(i) if i % 2 else [reading(i), reading(i + 100)]
            results.append(client.post("/send", json=body).status_code)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [200] * 20
    assert _count(settings) == 30
