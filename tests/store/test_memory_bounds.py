"""What SQLite may keep in memory is bounded, whatever the load: the appliance's RSS budget
(100 MB after 100,000 readings with every feature on, `make bench`) holds by construction.

The writer's INSERT statements come from a small fixed set, whatever the group sizes. A statement of k rows holds k x 44 parameters, about 4 KB of compiled program per row, and
sqlite3 caches every distinct text it runs (up to `cached_statements`, 512). With one text per
group size, a day of single readings at varying load (groups of 1 to 256) left 135 MB of
statements cached in the writer's connection.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from edge.fdrest import COLUMNS
from tests.harness import reading
from edge.store.schema import INSERT_CHUNK, TABLE, insert_rows, open_database


class Recording:
    """The connection, with the text of every statement it is given."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn, self.texts = conn, set()

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self.texts.add(sql)
        return self.conn.execute(sql, params)


def test_every_group_size_uses_a_few_statements_and_stores_every_row_in_order(tmp_path):
    conn = open_database(tmp_path / "sensor_data.db")
    recording = Recording(conn)
    sent = 0
    for n in range(1, 2 * INSERT_CHUNK + 2):
        x = [[float(sent + i)] + [0.0] * 34 for i in range(n)]
        last = insert_rows(recording, [f"2024-01-01 00:00:{n % 60:02d}"] * n, x, [[0.0] * 8] * n,
                           [f"m{n}"] * n)
        sent += n
        assert last == sent  # the id of the group's last row
    assert len(recording.texts) <= INSERT_CHUNK.bit_length()  # 64, 32, ..., 1: seven texts
    stored = [row[0] for row in conn.execute(f"SELECT {COLUMNS[0]} FROM {TABLE} ORDER BY id")]
    assert stored == [float(i) for i in range(sent)]


def test_every_connection_the_appliance_opens_keeps_a_small_page_cache(make_client, monkeypatch):
    """SQLite's default is 2 MiB per connection, and the appliance holds several (the writer,
    the checkpointer, the readers, the notifier, the uplink's): together 10 MB of the budget."""
    opened: list[sqlite3.Connection] = []
    real = sqlite3.connect

    def recording(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", recording)
    with make_client() as client:
        assert client.post("/send", json=[reading(k) for k in range(50)]).status_code == 200
        assert client.get("/api/latest").status_code == 200
        caches = []
        for conn in opened:
            try:
                caches.append(conn.execute("PRAGMA cache_size").fetchone()[0])
            except sqlite3.ProgrammingError:  # closed meanwhile (start-up checks)
                continue
    assert len(caches) >= 3  # the writer, the checkpointer, a reader at least
    assert all(-1024 <= c < 0 for c in caches), caches  # KiB (negative): at most 1 MiB each


def test_a_batch_is_not_kept_in_memory_once_it_is_answered(make_client):
    """The writer and the WAL syncer each held their last group (its rows, floats and answers) in
    loop variables while waiting for the next: 1.3 MB after a 1,000-reading batch, 13 MB after a
    10,000-reading one, for as long as the appliance stayed idle."""
    import gc
    import json
    import time

    from edge.ingest.bodies import Batch

    client = make_client()
    body = "\n".join(json.dumps(reading(i)) for i in range(500))
    assert client.post("/send", content=body, headers={"Content-Type": "application/x-ndjson"}).status_code == 200
    deadline = time.monotonic() + 5
    while True:
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, Batch) and len(o) == 500]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert alive == [], "the answered batch is still referenced"


def test_a_loaded_model_does_not_keep_its_onnx_file_in_memory():
    """onnxruntime's session keeps the bytes it is built from: built from the file's bytes, every
    loaded model (the active one, a shadow, one being checked) held its ONNX file again (0.8 MB
    for the bundled model) for its whole life."""
    import gc
    import tracemalloc

    from edge.scoring.model import load
    from tests.harness import BUNDLED

    load(BUNDLED)  # the imports a first load makes are not the model's
    gc.collect()
    tracemalloc.start()
    try:
        model = load(BUNDLED)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    size = (BUNDLED / "model.onnx").stat().st_size
    assert model.session is not None and kept < size / 2, (kept, size)
