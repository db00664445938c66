"""Every read the API offers uses the index it must (EXPLAIN QUERY PLAN of the statements it
really runs, captured with a trace callback), so its cost is what it returns, not what is stored.

Why a plan test: with `machine=` SQLite took the (machine, id) index for a time range and walked
all of that machine's rows (91 ms at 1M rows instead of 0.2 ms); nothing but the plan shows it."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from edge.store import export, labelled_export, machine_state, retention, shadow_table
from edge.store import reading_queries as queries
from edge.store.rollups import Rollups
from tests.harness import reading

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def db(tmp_path_factory, linear_model):
    from edge.http.app import create_app
    from edge.settings import Settings
    from tests.harness import AppClient
    settings = Settings(data_dir=tmp_path_factory.mktemp("plans"), model_dir=linear_model[0], retention_interval=3600)
    with AppClient(create_app(settings)) as client:
        for k in range(3):
            body = [reading(i, machine=f"m{i % 3}", Time=(NOW - timedelta(minutes=i + 500 * k)).strftime(
                "%Y-%m-%d %H:%M:%S")) for i in range(500)]
            assert client.post("/send", json=body).status_code == 200
    return settings.db_path


def _plans(db, fn: Callable[[sqlite3.Connection], object]) -> list[tuple[str, str]]:
    """(statement, its plan) for every statement on sensor_data or a rollup that `fn` runs."""
    conn = sqlite3.connect(db, isolation_level=None)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    fn(conn)
    conn.set_trace_callback(None)
    out = []
    for sql in statements:
        if not re.search(r"\b(sensor_data|fdedge_rollup_\w+|fdedge_machines)\b", sql) or not sql.lstrip().upper().startswith(
                ("SELECT", "DELETE", "UPDATE")):
            continue
        plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
        out.append((sql, plan))
    conn.close()
    return out


def _flt(**kw) -> export.ReportFilter:
    return export.ReportFilter.parse({"start": "2026-03-01", "end": "2026-03-02", **kw})


H = NOW - timedelta(hours=1)


def _labelled(conn: sqlite3.Connection, machine: str | None) -> list[str]:
    """The labelled export after one range label of m1 (the module's file keeps it; no other case reads labels)."""
    if not conn.execute("SELECT 1 FROM fdedge_labels").fetchall():
        conn.execute("INSERT INTO fdedge_labels (created, labelled_by, machine, fault, intensity, start_time, "
                     "end_time) VALUES ('2026-03-02 12:00:00', 'a', 'm1', 'fault1', 5, ?, ?)",
                     ((H - timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S"), H.strftime("%Y-%m-%d %H:%M:%S")))
    chunks = list(labelled_export.export_csv(conn, machine, None, None, chunk_rows=7))
    # m1 has a reading every 3 minutes (i % 3 == 1): 40 in minutes 60..180 before NOW, read in chunks of 7, and 1 header
    assert len("".join(chunks).splitlines()) == 1 + 40
    return chunks
# the newest readings, not in the stored rollups yet, are read by rowid after the id they cover
TAIL = r"|sensor_data USING INTEGER PRIMARY KEY \(rowid>\?\)"
CASES: dict[str, tuple[Callable[[sqlite3.Connection], object], str]] = {
    "latest": (lambda c: queries.latest(c, None, 20), r"SCAN sensor_data$"),  # newest ids, LIMIT stops it
    "latest, machine": (lambda c: queries.latest(c, "m1", 20), r"USING INDEX sensor_data_machine_id \(machine=\?\)"),
    "explain, by id": (lambda c: queries.reading_by_id(c, 5), r"USING INTEGER PRIMARY KEY \(rowid=\?\)"),
    "drift window": (lambda c: queries.recent_features(c, "m1", 300), r"USING INDEX sensor_data_machine_id \(machine=\?\)"),
    "drift's newest ids": (lambda c: queries.last_ids(c), r"SCAN fdedge_machines"),
    "history, machine": (lambda c: queries.history(c, "fault0", 100, "m1"), r"sensor_data_machine_id \(machine=\?\)"),
    "after id": (lambda c: queries.rows_after(c, 10, None, 100), r"USING INTEGER PRIMARY KEY \(rowid>\?\)"),
    "after id, machine": (lambda c: queries.rows_after(c, 10, "m2", 100),
                          r"sensor_data_machine_id \(machine=\? AND id>\?\)"),
    "series raw": (lambda c: queries.series(c, H, NOW, ["fault0"], None, 600),
                   r"USING INDEX sensor_data_time \(time>\? AND time<\?\)"),
    "series raw, machine": (lambda c: queries.series(c, H, NOW, ["fault0"], "m1", 600),
                            r"USING INDEX sensor_data_machine_time \(machine=\? AND time>\? AND time<\?\)"),
    "series minutes": (lambda c: queries.series(c, NOW - timedelta(days=1), NOW, ["fault0"], "m1", 600),
                       r"(SEARCH fdedge_rollup_minute USING PRIMARY KEY \(machine=\? AND bucket>\? AND bucket<\?\)" + TAIL + ")"),
    "series hours": (lambda c: queries.series(c, NOW - timedelta(days=90), NOW, ["fault0"], None, 600),
                     r"(SEARCH fdedge_rollup_hour USING PRIMARY KEY \(machine=\? AND bucket>\? AND bucket<\?\)" + TAIL + ")"),
    "machines": (machine_state.listing, r"SCAN fdedge_machines$"),
    "newest rows (fleet)": (queries.newest_rows, r"SEARCH sensor_data USING INTEGER PRIMARY KEY \(rowid=\?\)"),
    "count": (lambda c: export.count(c, _flt()), r"(fdedge_rollup_hour USING PRIMARY KEY" + TAIL + ")"),
    "count, threshold": (lambda c: export.count(c, _flt(threshold="0.0")),
                         r"(fdedge_rollup_\w+ USING PRIMARY KEY|sensor_data_time \(time>\? AND time<\?\)" + TAIL + ")"),
    "count, fault, machine": (lambda c: export.count(c, _flt(threshold="0.0", fault="fault2", machine="m1")),
                              r"(fdedge_rollup_\w+ USING PRIMARY KEY|sensor_data_machine_time "
                              r"\(machine=\? AND time>\? AND time<\?\)" + TAIL + ")"),
    "export": (lambda c: list(export.export_csv(c, _flt())), r"sensor_data_time \(time>\? AND time<\?\)"),
    "export, machine": (lambda c: list(export.export_csv(c, _flt(machine="m0"))),
                        r"sensor_data_machine_time \(machine=\? AND time>\? AND time<\?\)"),
    "export, threshold": (lambda c: list(export.export_csv(c, _flt(threshold="0.1"))),
                          r"sensor_data_time \(time>\? AND time<\?\)"),
    "export, fault, machine": (lambda c: list(export.export_csv(c, _flt(threshold="0.1", fault="fault1",
                                                                        machine="m2"))),
                               r"sensor_data_machine_time \(machine=\? AND time>\? AND time<\?\)"),
    "labelled export": (lambda c: _labelled(c, None),
                        r"(sensor_data_machine_time \(machine=\? AND time>\? AND time<\?\)|fdedge_machines USING "
                        r"(INTEGER )?PRIMARY KEY|^SCAN l \| SEARCH a USING INTEGER PRIMARY KEY)"),
    "labelled export, machine": (lambda c: _labelled(c, "m1"),
                                 r"(sensor_data_machine_time \(machine=\? AND time>\? AND time<\?\)|fdedge_machines "
                                 r"USING (INTEGER )?PRIMARY KEY|^SCAN l \| SEARCH a USING INTEGER PRIMARY KEY)"),
    "retention by days": (lambda c: retention.prune_chunk(c, Rollups(), days=0.5, keep_rows=0),
                          r"(sensor_data_time \(time<\?\)|USING INTEGER PRIMARY KEY|SCAN fdedge_machines|SCAN sensor_data$"
                          r"|fdedge_machines USING PRIMARY KEY|sensor_data_machine_time)"),
    "retention's exact buckets": (lambda c: retention.recompute(c, Rollups(), [("m1", int(H.timestamp()) // 60 * 60),
                                                                                   ("", int(H.timestamp()) // 60 * 60)]),
                                  r"(sensor_data_machine_time \(machine=\? AND time>\? AND time<\?\)"
                                  r"|sensor_data_time \(time>\? AND time<\?\)|fdedge_rollup_minute USING PRIMARY KEY)"),
    "retention by rows": (lambda c: retention.prune_chunk(c, Rollups(), days=0, keep_rows=1400),
                          r"(USING INTEGER PRIMARY KEY|SCAN fdedge_machines|fdedge_machines USING PRIMARY KEY"
                          r"|sensor_data_machine_\w+|sensor_data_time|fdedge_rollup_\w+ USING PRIMARY KEY"
                          r"|SCAN sensor_data$|SCAN json_each)"),
    "shadow compare": (lambda c: shadow_table.pairs(c, "ab12", None, None, None, 100),
                       r"(fdedge_shadow_version \(version=\?\)|USING INTEGER PRIMARY KEY \(rowid=\?\))"),
    "shadow compare, machine and range": (lambda c: shadow_table.pairs(c, "ab12", "2026-03-01", "2026-03-02", "m1", 100),
                                          r"(fdedge_shadow_version \(version=\?\)|USING INTEGER PRIMARY KEY \(rowid=\?\))"),
    "shadow catch-up": (lambda c: shadow_table.readings_between(c, 10, 2**62, 100),
                        r"USING INTEGER PRIMARY KEY \(rowid>\? AND rowid<\?\)"),
    "retention by rows, nothing due": (lambda c: retention.prune_chunk(c, Rollups(), days=0, keep_rows=10**9),
                                       r"SCAN fdedge_machines$"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_query_uses_its_index(db, case):
    fn, expected = CASES[case]
    plans = _plans(db, fn)
    assert plans, f"{case}: no statement ran"
    for sql, plan in plans:
        assert re.search(expected, plan) or "fdedge_meta" in sql, f"{case}: {plan}\n  for {sql[:300]}"
        # a scan of the readings table is only ever a walk by id (newest or oldest first) that a
        # LIMIT stops
        assert "SCAN sensor_data" not in plan or re.search(r"ORDER BY id (DESC )?LIMIT", sql), f"{case}: {plan}"
