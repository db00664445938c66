"""Rollups: /api/series and /api/count from minute and hour buckets agree with the raw rows, for
new readings, for a database that had none (backfilled), and after retention cut through them."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import numpy as np
import pytest

from edge.fdrest import COLUMNS, FAULTS, FEATURES, format_time
from edge.store import counts, retention
from simulator import dataset
from tests.harness import BUNDLED, reading

START = datetime(2026, 3, 1, 0, 0, 0, tzinfo=UTC)
CHECKED = ["temperature", "kurtosis_axial", "fault0", "fault3"]


def _readings(n: int, machines: tuple[str, ...], every_s: float, seed: int = 0, start: datetime = START
              ) -> list[dict]:
    """`n` readings per machine, one every `every_s` seconds, in shuffled order (late readings too)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        for j, m in enumerate(machines):
            t = start + timedelta(seconds=k * every_s + j * 0.37 + float(rng.uniform(0, every_s / 2)))
            out.append(reading(seed * 100_000 + k * len(machines) + j, machine=m, Time=format_time(t, ms=True)))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def _post(client, readings: list[dict]) -> None:
    for start in range(0, len(readings), 2000):
        r = client.post("/send", json=readings[start:start + 2000])
        assert r.status_code == 200, r.text


def _raw(db, machine: str | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with sqlite3.connect(db) as conn:
        where = "WHERE machine = ?" if machine else ""
        rows = conn.execute(f"SELECT time, {', '.join(COLUMNS + FAULTS)} FROM sensor_data {where}",
                            (machine,) if machine else ()).fetchall()
    t = np.array([datetime.fromisoformat(r[0]).replace(tzinfo=UTC).timestamp() for r in rows])
    values = np.array([r[1:] for r in rows], dtype=np.float64)
    return t, {c: values[:, i] for i, c in enumerate(COLUMNS + FAULTS)}


def _expected(t: np.ndarray, values: dict[str, np.ndarray], t0: float, t1: float, bucket: float, width: int,
              column: str) -> dict[int, tuple[float, float, float]]:
    """Per output bucket: (shown, min, max), with each reading placed by its rollup bucket."""
    placed = np.floor(t / width) * width if width else t
    inside = (placed <= t1) & (t >= t0 if not width else placed >= np.floor(t0 / width) * width)
    keys = np.maximum(np.floor((placed - t0) / bucket), 0).astype(int)
    out = {}
    for k in np.unique(keys[inside]):
        v = values[column][inside & (keys == k)]
        out[int(k)] = (v.max() if column in FAULTS else v.mean(), v.min(), v.max())
    return out


def _check_series(client, db, machine: str | None, days: float, resolution: str, width: int) -> None:
    end = START + timedelta(days=days)
    r = client.get("/api/series", params={"start": START.isoformat(), "end": end.isoformat(),
                                          "metrics": ",".join(CHECKED), "points": 200,
                                          **({"machine": machine} if machine else {})})
    assert r.status_code == 200, r.text
    ans = r.json()
    assert ans["resolution"] == resolution
    t, values = _raw(db, machine)
    t0, bucket = START.timestamp(), ans["bucket_seconds"]
    assert len(ans["time"]) <= 200
    for column in CHECKED:
        want = _expected(t, values, t0, end.timestamp(), bucket, width, column)
        got_keys = [round((x - t0) / bucket - 0.5) for x in ans["time"]]
        assert got_keys == sorted(want), column
        for i, k in enumerate(got_keys):
            shown, low, high = want[k]
            assert ans["series"][column][i] == pytest.approx(shown, rel=1e-5, abs=1e-5), (column, k)
            assert ans["min"][column][i] == pytest.approx(low, rel=1e-5, abs=1e-5), (column, k)
            assert ans["max"][column][i] == pytest.approx(high, rel=1e-5, abs=1e-5), (column, k)


def _check_counts(client, db) -> None:
    with sqlite3.connect(db) as conn:
        for machine in (None, "press"):
            for threshold, fault in ((None, None), (0.0, None), (0.4, None), (-0.2, "fault3"), (0.1, "fault0")):
                params = {"start": "2026-03-01", "end": "2026-03-02"}
                where, args = "time >= '2026-03-01' AND time < '2026-03-03'", []
                if machine:
                    params["machine"] = machine
                    where += " AND machine = ?"
                    args.append(machine)
                if threshold is not None:
                    params["threshold"] = str(threshold)
                    where += f" AND {fault or 'max(' + ', '.join(FAULTS) + ')'} >= ?"
                    args.append(threshold)
                if fault:
                    params["fault"] = fault
                want = conn.execute(f"SELECT count(*) FROM sensor_data WHERE {where}", args).fetchone()[0]
                got = client.get("/api/count", params=params).json()["count"]
                assert got == want, (machine, threshold, fault)


MACHINES = ("press", "pump", "fan")


def test_series_and_counts_from_rollups_match_the_raw_rows(make_client, settings):
    with make_client() as client:
        _post(client, _readings(1200, MACHINES, 30.0))  # 10 hours, 3 machines, out of order
        for machine in (None, "pump"):
            _check_series(client, settings.db_path, machine, 0.1, "raw", 0)
            _check_series(client, settings.db_path, machine, 1, "minute", 60)
            _check_series(client, settings.db_path, machine, 30, "hour", 3600)
        _check_counts(client, settings.db_path)


def test_an_older_database_is_rolled_up_in_the_background(make_client, settings):
    with make_client() as client:
        _post(client, _readings(600, MACHINES, 30.0, seed=1))
    with sqlite3.connect(settings.db_path) as conn:  # as an FD-REST or earlier FD-Edge file: no rollups
        conn.execute("DROP TABLE fdedge_rollup_minute")
        conn.execute("DROP TABLE fdedge_rollup_hour")
        conn.execute("DELETE FROM fdedge_meta WHERE key LIKE 'rollup_%'")
    with make_client() as client:
        _post(client, _readings(300, MACHINES, 30.0, seed=2))  # new ones meanwhile
        app = client.app.state.appliance
        from tests.reliability_helpers import wait_for
        wait_for(lambda: app.writer.rollups.ready, 20, "the backfill")
        _check_series(client, settings.db_path, None, 1, "minute", 60)
        _check_series(client, settings.db_path, "fan", 30, "hour", 3600)
        _check_counts(client, settings.db_path)


def test_retention_cuts_the_rollups_with_the_rows(make_client, settings):
    with make_client(retention_rows=1000) as client:
        _post(client, _readings(1200, MACHINES, 30.0, seed=3))
        app = client.app.state.appliance
        client.portal.call(retention.prune_once, app.writer, app.settings, app.metrics)
        with sqlite3.connect(settings.db_path) as conn:
            assert conn.execute("SELECT count(*) FROM sensor_data").fetchone()[0] == 1000
            for table in ("fdedge_rollup_minute", "fdedge_rollup_hour"):
                for machine in (*MACHINES, ""):
                    n = conn.execute(f"SELECT coalesce(sum(n), 0) FROM {table} WHERE machine = ?",
                                     (machine,)).fetchone()[0]
                    raw = conn.execute("SELECT count(*) FROM sensor_data WHERE machine = ? OR ? = ''",
                                       (machine, machine)).fetchone()[0]
                    assert n == raw, (table, machine)
        _check_series(client, settings.db_path, None, 1, "minute", 60)
        _check_series(client, settings.db_path, "press", 30, "hour", 3600)
        _check_counts(client, settings.db_path)


def _backfill_committed(db) -> bool:
    from edge.store.rollups import ready
    with sqlite3.connect(db) as conn:
        return ready(conn)


def test_an_fdrest_file_is_rolled_up_nulls_and_all(tmp_path, make_client):
    db = tmp_path / "sensor_data.db"
    names = COLUMNS + FAULTS
    rng = np.random.default_rng(4)
    with sqlite3.connect(db) as conn:  # FD-REST's own DDL: no machine column, nothing of FD-Edge's
        conn.execute("CREATE TABLE sensor_data (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT, "
                     + ", ".join(f"{c} REAL" for c in names) + ")")
        rows = []
        for k in range(3000):
            values = [round(float(v), 4) for v in rng.normal(size=43)]
            if k % 97 == 0:
                values[1] = None  # FD-REST stored whatever the sensor sent, NULL included
            rows.append((format_time(START + timedelta(seconds=20 * k)), *values))
        conn.executemany(f"INSERT INTO sensor_data (time, {', '.join(names)}) VALUES ({', '.join('?' * 44)})", rows)
    with make_client(db=db) as client:
        app = client.app.state.appliance
        from tests.reliability_helpers import wait_for
        wait_for(lambda: app.writer.rollups.ready, 20, "the backfill")
        # committed, not only done in memory (the writer sets `ready` just before its COMMIT)
        wait_for(lambda: _backfill_committed(db), 20,
                 "the backfill's commit")
        ans = client.get("/api/series", params={"start": START.isoformat(), "end": (START + timedelta(days=2)).isoformat(),
                                                "metrics": "temperature,fault1", "points": 100}).json()
        assert ans["resolution"] == "minute"
        with sqlite3.connect(db) as conn:
            low, high, mean = conn.execute("SELECT min(temperature), max(temperature), avg(temperature) "
                                           "FROM sensor_data").fetchone()
        assert min(v for v in ans["min"]["temperature"] if v is not None) == pytest.approx(low, abs=1e-4)
        assert max(v for v in ans["max"]["temperature"] if v is not None) == pytest.approx(high, abs=1e-4)
        assert client.get("/api/count", params={"start": "2026-03-01", "end": "2026-03-02"}).json()["count"] == 3000
        assert [m["readings"] for m in client.get("/api/machines").json()["machines"]] == [3000]


def test_buckets_in_memory_at_a_kill_are_rolled_up_again_at_start(server_factory, linear_model):
    from tests.reliability_helpers import get, post
    server = server_factory(linear_model[0]).start()
    body = _readings(400, MACHINES, 30.0, seed=5)
    for start in range(0, len(body), 400):
        assert post(server.port, json.dumps(body[start:start + 400]).encode()).status == 200
    server.kill()  # SIGKILL: the buckets changed since the last flush were in memory only
    db = server.data_dir / "sensor_data.db"
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT coalesce(sum(n), 0) FROM fdedge_rollup_hour WHERE machine = ''").fetchone()[0]
    assert stored < len(body)  # the kill came before a flush (10 s), as a crash would
    server.start()
    with sqlite3.connect(db) as conn:
        for table in ("fdedge_rollup_minute", "fdedge_rollup_hour"):
            n = conn.execute(f"SELECT coalesce(sum(n), 0) FROM {table} WHERE machine = ''").fetchone()[0]
            assert n == len(body), table  # redone at start-up, and stored
    end = START + timedelta(days=30)
    ans = json.loads(get(server.port, "/api/series?" + urlencode(
        {"start": START.isoformat(), "end": end.isoformat(), "metrics": "fault0", "points": 100})).body)
    assert ans["resolution"] == "hour"
    t, values = _raw(db, None)
    want = _expected(t, values, START.timestamp(), end.timestamp(), ans["bucket_seconds"], 3600, "fault0")
    assert [pytest.approx(v[0], rel=1e-5) for v in want.values()] == ans["series"]["fault0"]


@pytest.mark.parametrize("text, want", [
    ("2023-11-06 10:07", datetime(2023, 11, 6, 10, 7, tzinfo=UTC)),
    ("2023-11-06T10:07", datetime(2023, 11, 6, 10, 7, tzinfo=UTC)),
    ("2023-11-06 10", datetime(2023, 11, 6, 10, tzinfo=UTC)),
    ("0001-01-01 00:00", datetime(1, 1, 1, tzinfo=UTC)),
    ("9999-12-31 23:59", datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
    ("2023-02-30 10:00", None), ("2023-11-06 24:00", None), ("2023-11-06 10:60", None),
    ("06/11/2023 10:0", None), ("", None), ("2023-11-06 1x:00", None),
])
def test_a_stored_time_is_placed_in_its_minute(text, want):
    from edge.store.rollups import minute_of
    assert minute_of(text) == (None if want is None else int(want.timestamp()))


def test_a_half_step_threshold_is_counted_from_the_hours_alone(make_client, settings):
    """The sample data's largest fault crosses a threshold in nearly every minute, so bucket bounds
    alone sent every row of a 30-day count to SQL (1.3 s at 10M readings): the hours' peak
    histograms answer any multiple of 0.5 exactly; any other threshold still comes out exact."""
    x, _ = dataset.generate(3600, seed=3)  # the simulator's readings, healthy and faulty
    readings = [{**dict(zip(FEATURES, map(float, row), strict=True)), "machine": MACHINES[k % 3],
                 "Time": format_time(START + timedelta(seconds=10 * (k // 3)))} for k, row in enumerate(x)]
    with make_client(model_dir=BUNDLED) as client:  # the real model: intensities on its 0-100 scale
        _post(client, readings)
    with sqlite3.connect(settings.db_path) as conn:
        peaks = [r[0] for r in conn.execute(f"SELECT max({', '.join(FAULTS)}) FROM sensor_data")]
        median = round(float(np.median(peaks)) * 2) / 2  # straddled by most minutes
        assert 0 < median < 100
        t0, t1 = int(START.timestamp()), int(START.timestamp()) + 86400
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        for machine in (None, "pump"):
            for threshold in (median, 0.0, -0.5, 30.0, 100.0, median + 0.001):
                statements.clear()
                got = counts.count(conn, "sensor_data", t0, t1, machine, threshold, None)
                conn.set_trace_callback(None)
                where, args = "time >= ? AND time < ? AND max(" + ", ".join(FAULTS) + ") >= ?", [
                    "2026-03-01", "2026-03-02", threshold]
                if machine:
                    where += " AND machine = ?"
                    args.append(machine)
                want = conn.execute(f"SELECT count(*) FROM sensor_data WHERE {where}", args).fetchone()[0]
                conn.set_trace_callback(statements.append)
                assert got == want, (machine, threshold)
                raw = [s for s in statements if "FROM sensor_data WHERE" in s]  # not the NOT INDEXED tail
                if threshold == median + 0.001:
                    assert raw, "a threshold between edges must look at the straddled minutes' rows"
                else:
                    assert raw == [], (machine, threshold, raw)


def test_hours_of_the_first_rollup_version_gain_the_peak_column(make_client, settings):
    """A file whose hour buckets were stored before the peak histogram existed: the column is added
    at start, those hours count from their bounds and raw rows, and still agree with SQL."""
    with make_client() as client:
        _post(client, _readings(600, MACHINES, 30.0))
    with sqlite3.connect(settings.db_path) as conn:
        conn.execute("ALTER TABLE fdedge_rollup_hour DROP COLUMN peaks")
    with make_client() as client:
        _post(client, _readings(600, MACHINES, 30.0, seed=1, start=START + timedelta(hours=4)))
        _check_counts(client, settings.db_path)
    with sqlite3.connect(settings.db_path) as conn:
        known = conn.execute("SELECT count(*), count(peaks) FROM fdedge_rollup_hour").fetchone()
    assert known[0] > known[1] > 0  # the old hours unknown, hours merged since then too; new ones kept
