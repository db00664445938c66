"""Years of history: the machine list kept by the writer, an integrity check that does not hold up
start-up, space handed back after retention, and the bytes written that wear the card."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.store import retention, schema
from tests.harness import reading
from tests.reliability_helpers import wait_for


def _fill(client, n: int, machines: tuple[str, ...] = ("press", "pump")) -> None:
    for start in range(0, n, 1000):
        body = [reading(i, machine=machines[i % len(machines)]) for i in range(start, min(start + 1000, n))]
        assert client.post("/send", json=body).status_code == 200


def test_the_machine_list_is_kept_by_the_writer_and_by_retention(make_client, settings):
    with make_client(retention_rows=30) as client:
        _fill(client, 10, ("press", "pump"))
        client.post("/send", json=[reading(1, machine="fan", Time="2026-01-01 00:00:00")])
        listed = {m["machine"]: m for m in client.get("/api/machines").json()["machines"]}
        assert {k: v["readings"] for k, v in listed.items()} == {"fan": 1, "press": 5, "pump": 5}
        assert listed["fan"]["first_time"] == listed["fan"]["last_time"] == "2026-01-01T00:00:00Z"
        assert listed["pump"]["last_id"] == 10 and listed["fan"]["last_id"] == 11
        _fill(client, 30, ("press",))
        app = client.app.state.appliance
        client.portal.call(retention.prune_once, app.writer, app.settings, app.metrics)  # keeps the newest 30
        listed = {m["machine"]: m["readings"] for m in client.get("/api/machines").json()["machines"]}
        assert listed == {"press": 30}  # fan and pump lost their last readings to retention
    with sqlite3.connect(settings.db_path) as conn:  # as FD-Edge before this version kept it
        conn.execute("ALTER TABLE fdedge_machines RENAME TO old")
        conn.execute("CREATE TABLE fdedge_machines (name TEXT PRIMARY KEY, first_time TEXT, last_time TEXT, "
                     "last_peak REAL) WITHOUT ROWID")
        conn.execute("INSERT INTO fdedge_machines SELECT name, first_time, last_time, last_peak FROM old")
        conn.execute("DROP TABLE old")
    with make_client() as client:  # counted once by the migration
        assert [(m["machine"], m["readings"]) for m in client.get("/api/machines").json()["machines"]] == [
            ("press", 30)]


def _corrupt_readings(db: Path) -> None:
    """Overwrite 8 leaf pages of the readings table: what a bad card sector does to old history,
    which nothing at start-up reads."""
    with sqlite3.connect(db) as conn:
        try:
            leaves = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = 'sensor_data' "
                                                 "AND pagetype = 'leaf' ORDER BY pageno")]
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat table to find the readings' pages")
    data = bytearray(db.read_bytes())
    rng = np.random.default_rng(7)
    for p in leaves[len(leaves) // 3:len(leaves) // 3 + 8]:
        data[(p - 1) * 4096:p * 4096] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))


def test_a_large_file_is_checked_after_start_up_and_damage_stops_ingest(make_client, settings, monkeypatch):
    with make_client() as client:
        _fill(client, 6000)
    _corrupt_readings(settings.db_path)
    monkeypatch.setattr(schema, "STARTUP_CHECK_BYTES", 0)  # every file counts as large
    with make_client() as client:  # starts at once; the check runs beside it
        app = client.app.state.appliance
        wait_for(lambda: app.integrity.state in ("ok", "corrupt"), 20, "the integrity check")
        assert app.integrity.state == "corrupt"
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "integrity" in " ".join(ready.json()["problems"])
        assert "fdedge_integrity 0.0" in client.get("/metrics").text
        refused = client.post("/send", json=reading(1))
        assert refused.status_code == 503 and refused.json()["reason"] == "database_corrupt"
        assert client.get("/api/storage").json()["integrity"]["state"] == "corrupt"


def test_a_sound_large_file_is_reported_ok(make_client, settings, monkeypatch):
    with make_client() as client:
        _fill(client, 2000)
    monkeypatch.setattr(schema, "STARTUP_CHECK_BYTES", 0)
    with make_client() as client:
        app = client.app.state.appliance
        wait_for(lambda: app.integrity.state == "ok", 20, "the integrity check")
        assert client.get("/readyz").json()["integrity"] == "ok"
        assert client.post("/send", json=reading(1)).status_code == 200


def test_retention_hands_the_space_back_to_the_filesystem(make_client, settings):
    with make_client(retention_rows=1000) as client:
        _fill(client, 30_000)
        app = client.app.state.appliance
        client.portal.call(lambda: app.writer.call(lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                                                   .fetchall()))
        before = settings.db_path.stat().st_size
        client.portal.call(retention.prune_once, app.writer, app.settings, app.metrics)
        # the checkpointer's thread copies the vacuum into the file, just after the pass
        wait_for(lambda: settings.db_path.stat().st_size < before * 0.4, 10,
                 f"the file shrinks below 40 % of {before} bytes")
        storage = client.get("/api/storage").json()
    assert storage["auto_vacuum"] == "incremental"
    assert storage["free_pages"] <= retention.VACUUM_SLACK


def _on_tmpfs(path: Path) -> bool:
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount, kind = line.split()[:3]
        if kind == "tmpfs" and str(path).startswith(mount.rstrip("/") + "/"):
            return True
    return False


def test_bytes_written_per_reading_are_counted(make_client, settings):
    if not Path("/proc/self/io").exists() or _on_tmpfs(settings.db_path.parent.parent):
        pytest.skip("the kernel keeps no write_bytes for this process or filesystem")
    with make_client(card_size_gb=32, card_pe_cycles=3000) as client:
        _fill(client, 3000)
        wear = client.get("/api/storage").json()["wear"]
        metrics = client.get("/metrics").text
    assert wear["bytes_written"] > 3000 * 100, wear  # the readings are on disk (sync full)
    assert wear["readings"] == 3000 and wear["bytes_per_reading"] > 100
    assert wear["card_bytes"] == 32_000_000_000 and wear["card_pe_cycles"] == 3000
    assert "fdedge_disk_bytes_written_total" in metrics and "fdedge_disk_card_life_days" in metrics


def test_the_wal_stays_short_on_a_busy_machine(make_client, settings):
    """Three processes spinning on two cores (load average 6 on the CI machine, as when this was
    found): the checkpointer's thread ends each checkpoint with the writer's newest frames still
    uncopied, so the WAL never started over (26-66 MB after 3,000 readings); the writer copies
    the rest itself once the log in use passes 8 MB."""
    wal = Path(str(settings.db_path) + "-wal")
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    try:
        with make_client() as client:
            for k in range(3000):
                assert client.post("/send", json=reading(k, machine=f"m{k % 7}")).status_code == 200
            assert wal.stat().st_size < 16 * 1024 * 1024
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def test_checkpoints_run_off_the_writers_thread_and_keep_the_wal_short(make_client, settings):
    """SQLite's own checkpoint ran inside the writer's COMMIT (240 ms once on a 1M-row file while
    a retention chunk took 3 ms, every queued reading waiting): the writer's connection does none,
    the checkpointer's thread copies the frames as changes pile up, and the WAL stays short."""
    wal = Path(str(settings.db_path) + "-wal")
    with make_client() as client:
        app = client.app.state.appliance
        autocheckpoint = client.portal.call(
            lambda: app.writer.call(lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchall()[0][0]))
        assert autocheckpoint == 0
        for k in range(3000):  # single readings, about 5 frames (20 KB) each: 60 MB of WAL unchecked
            assert client.post("/send", json=reading(k, machine=f"m{k % 7}")).status_code == 200
        assert app.writer.checkpointer.checkpoints >= 5
        assert wal.stat().st_size < 16 * 1024 * 1024
        with sqlite3.connect(settings.db_path) as conn:
            assert conn.execute("SELECT count(*) FROM sensor_data").fetchone()[0] == 3000
