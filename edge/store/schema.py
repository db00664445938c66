"""SQLite layout: FD-REST's `sensor_data` table, migrated in place, opened for a single writer.

The table and column names are FD-REST's so that an existing `sensor_data.db` keeps working;
FD-Edge only adds columns and tables next to them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from pathlib import Path

from edge.errors import StartupError
from edge.fdrest import COLUMNS, DEFAULT_MACHINE, FAULTS
from edge.store import labels, machine_state, rollups
from edge.store.database import connect, transaction

SCHEMA_VERSION = "1"
TABLE = "sensor_data"
DATA_COLUMNS: tuple[str, ...] = COLUMNS + FAULTS
# model_version: the store version (edge/scoring/model_store.py) that scored the row; NULL for rows
# stored before FD-Edge kept it
# The data-quality verdict (edge.scoring.quality): status 0 ok, 1 suspect, 2 invalid, NULL unknown
# (and every row stored before the columns existed); score REAL; reasons `feature:kind,...`, NULL when ok.
QUALITY_COLUMNS: tuple[str, ...] = ("quality_status", "quality_score", "quality_reasons")
_QUALITY_TYPES = {"quality_status": "INTEGER", "quality_score": "REAL", "quality_reasons": "TEXT"}
INSERT_COLUMNS: tuple[str, ...] = ("time", *DATA_COLUMNS, "machine", "model_version", *QUALITY_COLUMNS)
# Rows per multi-row INSERT: one sqlite3_step per chunk instead of one per row, which matters
# because Python's sqlite3 releases and re-takes the GIL around every step. Not more: a compiled
# statement holds about 7 KB per row, and the connection caches each size it ran (1 to 256 rows:
# 3.7 MB of RSS; 1 to 64: 0.9 MB), while 64 rows already make the step's cost small.
INSERT_CHUNK = 64
_ROW_MARKS = "(" + ", ".join("?" * len(INSERT_COLUMNS)) + ")"


def insert_sql(rows: int) -> str:
    return f"INSERT INTO {TABLE} ({', '.join(INSERT_COLUMNS)}) VALUES " + ", ".join([_ROW_MARKS] * rows)


def chunk_sizes(n: int) -> list[int]:
    """Full chunks, then the remainder in powers of two: at most INSERT_CHUNK.bit_length()
    distinct statement texts. sqlite3 caches each text it runs, and a statement costs about 4 KB
    per row: one text per group size (1 to 256 rows) cached 135 MB in the writer's connection."""
    sizes = [INSERT_CHUNK] * (n // INSERT_CHUNK)
    rest = n % INSERT_CHUNK
    step = INSERT_CHUNK // 2
    while rest:
        if rest >= step:
            sizes.append(step)
            rest -= step
        step //= 2
    return sizes


def insert_rows(conn: sqlite3.Connection, times: list[str], x_rows: list[list], y_rows: list[list],
                machines: list[str], model_version: str | None = None,
                quality: tuple[list, list, list] | None = None) -> int:
    """Insert readings in order, all scored by `model_version`; returns the id of the last one
    (ids are consecutive: one writer). `quality`: the QUALITY_COLUMNS' values, one list each
    (None: unknown for every row)."""
    last = 0
    start = 0
    n = len(times)
    status, score, reasons = quality if quality is not None else ([None] * n, [None] * n, [None] * n)
    for size in chunk_sizes(n):
        end = start + size
        params: list = []
        for i in range(start, end):  # flat parameter list, built in one pass
            params.append(times[i])
            params.extend(x_rows[i])
            params.extend(y_rows[i])
            params.append(machines[i])
            params.append(model_version)
            params.append(status[i])
            params.append(score[i])
            params.append(reasons[i])
        last = conn.execute(insert_sql(size), params).lastrowid or 0
        start = end
    return last


SELECT_COLUMNS: tuple[str, ...] = ("id", "time", "machine", *DATA_COLUMNS, "model_version", *QUALITY_COLUMNS)
QUALITY_AT = SELECT_COLUMNS.index(QUALITY_COLUMNS[0])  # a SELECT_LIST row's quality: row[QUALITY_AT:QUALITY_AT + 3]
SELECT_LIST = ", ".join(SELECT_COLUMNS)

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT,
    {', '.join(f'{c} REAL' for c in DATA_COLUMNS)},
    machine TEXT NOT NULL DEFAULT '{DEFAULT_MACHINE}',
    model_version TEXT,
    {', '.join(f'{c} {_QUALITY_TYPES[c]}' for c in QUALITY_COLUMNS)}
)"""

EXTRA_DDL = (
    f"CREATE INDEX IF NOT EXISTS {TABLE}_time ON {TABLE}(time)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_machine_id ON {TABLE}(machine, id)",
    # A time range of one machine: without it SQLite walks all of that machine's rows by id.
    f"CREATE INDEX IF NOT EXISTS {TABLE}_machine_time ON {TABLE}(machine, time)",
    # Idempotency keys let a sensor re-send a batch after a timeout without storing it twice.
    # body_sha256 tells a re-sent request from a different one that reuses its key.
    """CREATE TABLE IF NOT EXISTS fdedge_ingest_keys (
        key TEXT PRIMARY KEY, first_id INTEGER, last_id INTEGER, created TEXT NOT NULL, body_sha256 TEXT)""",
    "CREATE TABLE IF NOT EXISTS fdedge_meta (key TEXT PRIMARY KEY, value TEXT)",
)
MARKER_SUFFIX = ".fdedge"
STARTUP_CHECK_BYTES = 64 * 1024 * 1024


def _marker(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def _create_private(path: Path) -> None:
    """A new data directory is 0700 and a new database 0600: readings and alarm notes are the
    plant's data, and SQLite gives the WAL and SHM files the database file's mode. Existing files
    keep theirs (a backup job may rely on them)."""
    if not path.parent.exists():
        path.parent.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process created it meanwhile
            path.parent.mkdir(mode=0o700)
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def open_database(path: Path, *, sync: str = "full", init: bool = False, max_mb: float = 0.0,
                  check_below_bytes: int | None = None) -> sqlite3.Connection:
    """Open (or create) and migrate the database; refuse to silently replace a lost one.

    A file up to `check_below_bytes` is integrity-checked here (well under a second); a larger
    one is checked in the background after start-up (edge.store.integrity), since reading 4 GB
    from an SD card took 72 s.

    A marker file beside the database records that it existed: if the database later vanishes
    (deleted, wrong mount), starting again would quietly begin an empty history, so that needs
    `--init-db`.
    """
    path = Path(path)
    marker = _marker(path)
    if marker.exists() and not init:
        # An empty file is as lost as a missing one (truncated by a failed copy or a bad card):
        # SQLite would quietly take it for a new database. FD-Edge's own file is never empty, since
        # switching it to WAL writes its first page.
        lost = "missing" if not path.exists() else "empty (0 bytes)" if path.stat().st_size == 0 else None
        if lost:
            raise StartupError(
                f"database {path} is {lost}, but this data directory held one before ({marker} exists). "
                "Restore the file, or start with --init-db (FDEDGE_INIT_DB=1) to begin a new empty database."
            )
    try:
        _create_private(path)
    except OSError as exc:
        raise StartupError(f"cannot create data directory {path.parent}: {exc}") from None
    try:
        new = path.stat().st_size == 0
        conn = connect(path, sync=sync, busy_ms=5000)
        if new:  # freed pages can then go back to the filesystem (retention's incremental vacuum)
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if path.stat().st_size <= (STARTUP_CHECK_BYTES if check_below_bytes is None else check_below_bytes):
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StartupError(f"database {path} is corrupt (quick_check: {check}); "
                                   "restore a backup or move it away")
        if str(mode).lower() != "wal":
            raise StartupError(f"database {path} could not switch to WAL mode (got {mode})")
        migrate(conn)
        if max_mb > 0:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(int(max_mb * 1024 * 1024 // page), 1)}")
    except sqlite3.DatabaseError as exc:
        raise StartupError(f"database {path} cannot be opened: {exc} "
                           "(is it an SQLite file? is the disk full or read-only?)") from None
    try:
        with os.fdopen(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            handle.write(f"FD-Edge database marker; the database {path.name} was created here.\n")
    except OSError:
        pass  # a read-only data directory is reported by /readyz, not fatal here
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Create FD-REST's table, or add FD-Edge's columns and indexes to an existing one."""
    with transaction(conn):
        conn.execute(CREATE_TABLE)
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})")}
        missing = [c for c in ("id", "time", *DATA_COLUMNS) if c not in have]
        if missing:
            raise StartupError(f"table {TABLE} lacks FD-REST columns {missing}; "
                               "this is not an FD-REST/FD-Edge database")
        if "machine" not in have:
            conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN machine TEXT NOT NULL DEFAULT '{DEFAULT_MACHINE}'")
        if "model_version" not in have:  # a NULL default: no rewrite of the rows, instant on any size
            conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN model_version TEXT")
        for column in QUALITY_COLUMNS:  # no default: a row stored before has NULLs, its quality unknown
            if column not in have:
                conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {column} {_QUALITY_TYPES[column]}")
        for ddl in EXTRA_DDL:
            conn.execute(ddl)
        machine_state.migrate(conn, TABLE)
        rollups.migrate(conn, TABLE)
        labels.migrate(conn)
        from edge.store import shadow_table  # it names this module's table: imported once both exist
        shadow_table.migrate(conn)
        if "body_sha256" not in {row[1] for row in conn.execute("PRAGMA table_info(fdedge_ingest_keys)")}:
            conn.execute("ALTER TABLE fdedge_ingest_keys ADD COLUMN body_sha256 TEXT")  # keys of older versions
        conn.execute("INSERT OR REPLACE INTO fdedge_meta(key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        # Lets a page tell a replaced database from the one it was showing, whatever the row ids.
        conn.execute("INSERT OR IGNORE INTO fdedge_meta(key, value) VALUES ('database_id', ?)", (secrets.token_hex(8),))


def database_id(conn: sqlite3.Connection) -> str:
    rows = conn.execute("SELECT value FROM fdedge_meta WHERE key = 'database_id'").fetchall()
    return rows[0][0] if rows else ""
