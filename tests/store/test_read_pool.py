"""Reads run in their own bounded pool (--read-threads), apart from the parsing of ingest bodies:
a read load can take at most that many threads, however many clients ask at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from tests.harness import reading


def test_concurrent_reads_use_at_most_the_read_threads(make_client, monkeypatch):
    client = make_client(read_threads=2)
    assert client.post("/send", json=[reading(i) for i in range(200)]).status_code == 200
    seen: set[str] = set()
    import edge.store.reading_queries as queries
    original = queries.machines

    def watched(conn, *args):
        seen.add(threading.current_thread().name)
        return original(conn, *args)

    monkeypatch.setattr(queries, "machines", watched)
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda _: client.get("/api/machines").status_code, range(96)))
    assert answers == [200] * 96
    assert seen and len(seen) <= 2 and all(name.startswith("fdedge-read") for name in seen), seen


def test_large_bodies_are_parsed_in_their_own_pool(make_client, monkeypatch):
    client = make_client()
    seen: set[str] = set()
    import edge.http.ingest_routes as ingest
    original = ingest._parse

    def watched(*args):
        seen.add(threading.current_thread().name)
        return original(*args)

    monkeypatch.setattr(ingest, "_parse", watched)
    assert client.post("/send", json=[reading(i) for i in range(500)]).status_code == 200
    assert len(seen) == 1 and next(iter(seen)).startswith("fdedge-parse"), seen
