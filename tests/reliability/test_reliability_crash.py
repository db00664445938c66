"""No acknowledged reading is lost: SIGKILL of the real server at random moments under concurrent
load, round after round on the same database.

Every reading carries a unique marker in its `Level` feature (batch number * 10,000 + index), so
the stored table can be compared with what was sent: after each restart every reading answered
200 is stored exactly once with the faults it was answered with, nothing is stored twice, and a
batch is either stored whole or not at all. Requests sent with an Idempotency-Key that the kill
left unanswered are re-sent after the restart, as a sensor would: they must then be stored exactly
once too, whether or not the first attempt had committed.

`make test` runs 5 rounds; `make soak` runs 30 (FDEDGE_CRASH_ROUNDS). FDEDGE_SEED replays a run.
"""

from __future__ import annotations

import csv
import http.client
import io
import itertools
import json
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.fdrest import FEATURES
from tests.harness import BUNDLED, reading
from tests.reliability_helpers import post, wait_for

REPORT_SECTION = "crash"

FORMATS = ("json-single", "json-array", "ndjson", "csv")
BATCH_SIZES = (2, 7, 50, 200, 1000)
WORKERS = 6
MARKER_SPAN = 10_000  # readings per batch stay below this
SEED = int(os.environ.get("FDEDGE_SEED") or random.SystemRandom().randrange(1 << 30))


# -- helpers ----------------------------------------------------------------------------------------

@dataclass
class Sent:
    """One request as sent: its readings' markers, and whether (and how) it was answered."""

    markers: list[float]
    body: bytes
    content_type: str
    key: str | None
    fmt: str
    acked: bool = False
    faults0: list[float] | None = None
    retried: bool = False


def model_dir(linear_model) -> Path:
    return BUNDLED if (BUNDLED / "manifest.json").exists() else linear_model[0]


def encode(fmt: str, readings: list[dict]) -> tuple[bytes, str]:
    if fmt == "json-single":
        return json.dumps(readings[0]).encode(), "application/json"
    if fmt == "json-array":
        return json.dumps(readings).encode(), "application/json"
    if fmt == "ndjson":
        return ("\n".join(json.dumps(r) for r in readings) + "\n").encode(), "application/x-ndjson"
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["Time", *FEATURES])
    for r in readings:
        writer.writerow([r.get("Time", ""), *(repr(r[k]) for k in FEATURES)])
    return out.getvalue().encode(), "text/csv"


class Load:
    """WORKERS threads posting until stopped; worker w uses format FORMATS[(w + round) % 4]."""

    batch_numbers = itertools.count(1)

    def __init__(self, port: int, round_no: int, rng: random.Random) -> None:
        self.port = port
        self.round_no = round_no
        self.rng = random.Random(rng.random())
        self.sent: list[Sent] = []
        self.unexpected: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.worker, args=(w,), daemon=True) for w in range(WORKERS)]

    def acked(self) -> int:
        with self.lock:
            return sum(1 for s in self.sent if s.acked)

    def build(self, w: int, rng: random.Random) -> Sent:
        fmt = FORMATS[(w + self.round_no) % len(FORMATS)]
        size = 1 if fmt == "json-single" else rng.choice(BATCH_SIZES)
        batch = next(self.batch_numbers)
        markers = [float(batch * MARKER_SPAN + k) for k in range(size)]
        stamp = f"2024-01-01 00:{self.round_no % 60:02d}:{rng.randrange(60):02d}"
        readings = [reading(k, Level=m, **({"Time": stamp} if k % 2 else {})) for k, m in enumerate(markers)]
        body, ctype = encode(fmt, readings)
        key = f"crash-{SEED}-{batch}" if rng.random() < 0.5 else None
        return Sent(markers, body, ctype, key, fmt)

    def worker(self, w: int) -> None:
        rng = random.Random(self.rng.random() + w)
        while not self.stop.is_set():
            sent = self.build(w, rng)
            with self.lock:
                self.sent.append(sent)
            try:
                r = post(self.port, sent.body, sent.content_type,
                         {"Idempotency-Key": sent.key} if sent.key else None, timeout=15)
            except (OSError, http.client.HTTPException):
                time.sleep(0.01)  # the kill cut this one off; it was never acknowledged
                continue
            if r.status == 200:
                sent.faults0 = [row["fault0"] for row in r.json()]
                sent.acked = True
            else:
                with self.lock:
                    self.unexpected.append(f"{r.status} {r.text[:200]}")

    def run_until_killed(self, server, rng: random.Random) -> None:
        for t in self.threads:
            t.start()
        # a random moment under load: after a random number of acknowledgements, plus a random pause
        wait_for(lambda: self.acked() >= rng.randint(1, 40) or self.unexpected, 30, "the first acknowledgements")
        time.sleep(rng.uniform(0, 0.6))
        server.kill()
        self.stop.set()
        for t in self.threads:
            t.join(20)


def stored_markers(db: Path) -> dict[float, list[float]]:
    """marker -> fault0 of each stored copy."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        out: dict[float, list[float]] = {}
        for level, fault0 in conn.execute("SELECT level, fault0 FROM sensor_data"):
            out.setdefault(level, []).append(fault0)
    return out


def check_database(db: Path, everything: list[Sent]) -> dict[str, int]:
    """Every acknowledged reading stored exactly once with the answered faults; no duplicate;
    no half batch; nothing that was not sent."""
    stored = stored_markers(db)
    sent_markers = {m for s in everything for m in s.markers}
    unknown = [m for m in stored if m not in sent_markers]
    assert not unknown, f"seed {SEED}: {len(unknown)} stored readings were never sent"
    duplicated = {m: len(v) for m, v in stored.items() if len(v) > 1}
    assert not duplicated, f"seed {SEED}: readings stored more than once: {list(duplicated.items())[:5]}"
    lost = [m for s in everything if s.acked for m in s.markers if m not in stored]
    assert not lost, f"seed {SEED}: {len(lost)} acknowledged readings are not stored, e.g. {lost[:5]}"
    half = [(s.fmt, len(s.markers), sum(m in stored for m in s.markers))
            for s in everything if 0 < sum(m in stored for m in s.markers) < len(s.markers)]
    assert not half, f"seed {SEED}: batches stored in part (format, size, stored): {half[:5]}"
    wrong = [m for s in everything if s.acked and s.faults0 for m, f in zip(s.markers, s.faults0)
             if abs(stored[m][0] - f) > 1e-6 * max(1.0, abs(f))]
    assert not wrong, f"seed {SEED}: stored faults differ from the answered ones for {wrong[:5]}"
    committed_unacked = sum(len(s.markers) for s in everything if not s.acked and s.markers[0] in stored)
    return {"stored": sum(len(v) for v in stored.values()), "committed_unacked": committed_unacked}


def resend_unanswered_keyed(port: int, everything: list[Sent]) -> tuple[int, int]:
    """What a sensor does after an outage: the same request with the same key."""
    retried = replayed = 0
    for s in everything:
        if s.acked or not s.key or s.retried:
            continue
        r = post(port, s.body, s.content_type, {"Idempotency-Key": s.key}, timeout=30)
        assert r.status == 200, f"seed {SEED}: re-sent keyed request answered {r.status}: {r.text[:200]}"
        s.faults0 = [row["fault0"] for row in r.json()]
        s.acked = s.retried = True
        retried += 1
        replayed += r.headers.get("x-fdedge-replayed") == "true"
    return retried, replayed


def crash_rounds(rounds: int, server_factory, linear_model, report, section: str) -> None:
    rng = random.Random(SEED)
    model = model_dir(linear_model)
    server = server_factory(model, args=["--sync", "full"]).start()
    port, db = server.port, server.data_dir / "sensor_data.db"
    everything: list[Sent] = []
    syncs: list[str] = []
    for round_no in range(rounds):
        load = Load(port, round_no, rng)
        load.run_until_killed(server, rng)
        assert not load.unexpected, f"seed {SEED}: answers other than 200 under load: {load.unexpected[:5]}"
        everything += load.sent
        sync = ("full", "normal")[round_no % 2]
        syncs.append(sync)
        server = server_factory(model, port=port, args=["--sync", sync]).start()  # same database, after a crash
        retried, replayed = resend_unanswered_keyed(port, everything)
        figures = check_database(db, everything)
        report.add(section, "rounds")
        report.add(section, "keyed_retries", retried)
        report.add(section, "keyed_retries_replayed", replayed)
        report.put(section, "readings_committed_unacked", figures["committed_unacked"])
    assert post(port, reading(0)).status == 200

    acked = [s for s in everything if s.acked and not s.retried]
    report.put(section, "seed", SEED)
    report.put(section, "workers", WORKERS)
    report.put(section, "sync_modes", sorted(set(syncs)))
    report.put(section, "formats", sorted({s.fmt for s in everything}))
    report.put(section, "batch_sizes", sorted({len(s.markers) for s in everything}))
    report.put(section, "requests_acked", len(acked))
    report.put(section, "readings_acked", sum(len(s.markers) for s in acked))
    report.put(section, "readings_stored", figures["stored"])
    for key in ("readings_lost", "readings_duplicated", "batches_half_stored"):
        report.put(section, key, 0)  # check_database asserted each of these


# -- tests ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_acknowledged_readings_survive_repeated_sigkill_in_every_format(server_factory, linear_model, report):
    crash_rounds(5, server_factory, linear_model, report, "crash")


@pytest.mark.soak
def test_acknowledged_readings_survive_thirty_sigkills(server_factory, linear_model, report):
    crash_rounds(int(os.environ.get("FDEDGE_CRASH_ROUNDS") or 30), server_factory, linear_model, report, "crash_soak")
