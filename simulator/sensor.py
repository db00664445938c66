"""`fdedge simulate`: a virtual sensor streaming readings to an appliance's POST /send.

FD-REST's sender.py posted data.csv rows one by one and lost whatever the server did not
take. This one replays such a CSV or plays the virtual machine live, and delivers through an
on-disk outbox (simulator/outbox.py) with a sending loop (simulator/delivery.py) that
retries in order and uses idempotency keys, so the appliance may be down, restart or lose
answers, and the sensor may be killed, without readings being lost or stored twice.

The readings come from simulator/sources.py; this module holds the pacing and the CLI.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.fdrest import FAULTS, MAX_MACHINE_LEN, format_time
from simulator.conditions import PROFILES
from simulator.delivery import Connection, Sender, Stats
from simulator.machine import VirtualMachine
from simulator.outbox import BufferLocked, Outbox
from simulator.scenarios import SCENARIOS, Scenario
from simulator.sources import csv_readings, machine_readings

MAX_CHUNK = 1000  # readings generated and committed to the outbox in one transaction
UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}

DESCRIPTION = """\
A virtual sensor: streams readings to an FD-Edge (or FD-REST) appliance's POST /send.

The readings come from the live virtual machine (default: a developing fault, so the
dashboard shows a machine degrading) or from a CSV in FD-REST's data.csv format.
Every reading is first written to an on-disk buffer and leaves it only when the
appliance has stored it, so nothing is lost while the appliance is down or restarts,
or when this sensor is killed: start it again with the same --buffer and it sends
what it still holds first, in order.
"""

EPILOG = """\
examples:
  fdedge simulate                                   developing fault2 at 1 reading/s to 127.0.0.1:5000
  fdedge simulate --scenario multi --minutes 5 --rate 4 --machine pump-7
  fdedge simulate --scenario developing --fault 5 --rate 0.2      one reading every 5 s
  fdedge simulate --csv data.csv --rate 2                           FD-REST's sender.py, but reliable
  fdedge simulate --csv data.csv --loop --restamp --rate 10         endless replay with current times
  fdedge simulate --rate 0 --start "2024-01-01 00:00:00" --count 86400 --batch 500
                                                    backfill one day of history as fast as possible
  fdedge simulate --flush --buffer sensor.db        deliver what an earlier run left, then exit

times:
  The virtual machine's clock starts at --start (default: now, UTC) and advances 1/RATE
  seconds per reading (1 s with --rate 0), so live readings carry real times. CSV rows keep
  their Time unless --restamp gives them the time they are generated. Times are FD-REST's
  'YYYY-MM-DD HH:MM:SS' (UTC), with milliseconds when they are not whole seconds.

delivery:
  Readings are sent in order. A request that fails (no connection, timeout, 408, 429, 5xx)
  is repeated with exponential backoff and jitter (up to --max-backoff) while generation goes
  on into the buffer. Each request carries an Idempotency-Key '<sensor id>:<first>-<last>'
  from the buffer's row ids, so a request the appliance stored but could not answer is not
  stored twice when repeated. Other 4xx answers (401 wrong token, 422 invalid reading, ...)
  are final: the server's message is printed and the readings are moved to the buffer's
  dead_letter table (sqlite3 BUFFER 'SELECT * FROM dead_letter'), and the queue goes on; a 422
  sets aside only the reading it names, a 413 halves the batch first.
  With --count, --duration or a CSV without --loop, the sensor stops generating and exits
  when the buffer is empty. Ctrl-C (SIGINT) or SIGTERM lets the request in flight finish,
  then exits, keeping the buffer; a second Ctrl-C exits at once (the buffer is safe).
  FD-REST's own server takes only the default body: keep --batch 1 and leave out --machine.

progress (every --progress seconds, on stderr):
  generated  readings produced into the buffer
  sent       readings in requests that went out, repeats included
  acked      readings the appliance stored; (replayed N): answered from an earlier commit
  buffered   readings waiting in the buffer
  dead       readings refused for good (dead letter)
  dropped    oldest readings dropped because of --max-buffer
  retrying   failed attempts of the current request, and the last error
  max        the largest fault of the last stored reading, as the appliance scored it

exit status: 0 done or stopped by a signal, 1 some readings were refused (dead letter),
2 usage, source or buffer error, 130 a second Ctrl-C.

environment: FDEDGE_URL, FDEDGE_TOKEN (defaults of --url and --token).
"""


# -- small parsers --------------------------------------------------------------------------

def parse_rate(text: str) -> float:
    """Readings per second: '2', '0.2', '1/5' (one every 5 s), '30/min', '120/h'; 0 = unpaced."""
    raw = text.strip().lower()
    number, unit = raw, "s"
    match = re.fullmatch(r"(.+?)\s*/\s*(s|sec|min|m|h)", raw)
    if match:
        number, unit = match.groups()
    try:
        if "/" in number:
            num, den = number.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(number)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (use e.g. 2, 0.2, 1/5, 30/min)") from None
    value /= UNITS[unit]
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"the rate must be a finite number >= 0, got {text!r}")
    return value


def parse_seconds(text: str) -> float:
    """A duration: '90', '90s', '5min', '5m', '2h'."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|min|m|h)?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90, 90s, 5min, 2h)")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def parse_start(text: str) -> datetime:
    """'YYYY-MM-DD HH:MM:SS' (UTC, FD-REST's form) or ISO 8601 with an offset."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use 'YYYY-MM-DD HH:MM:SS', UTC)") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def default_buffer(machine: str | None) -> Path:
    """One buffer per machine name, in the user's state directory (or the temp dir)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", machine or "default")
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    directory = Path(base) / "fdedge"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if os.access(directory, os.W_OK):
            return directory / f"sensor-{name}.db"
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"fdedge-sensor-{os.getuid() if hasattr(os, 'getuid') else 0}-{name}.db"


def make_machine(args: argparse.Namespace, start: datetime, dt: float) -> VirtualMachine:
    """The virtual machine the scenario flags describe; its reading k carries `start + k * dt`."""
    options: dict[str, object] = {}
    if args.minutes is not None and args.scenario != "healthy":
        options["minutes"] = args.minutes
    if args.fault is not None:
        faults = [f.strip() for f in args.fault.split(",") if f.strip()]
        if args.scenario == "developing" and len(faults) == 1:
            options["fault"] = faults[0]
        elif args.scenario == "multi":
            options["faults"] = faults
        else:
            raise ValueError(f"--fault applies to 'developing' (one fault) and 'multi' (a list), "
                             f"not to {args.scenario!r}")
    if args.scenario == "random":
        options["seed"] = args.seed
    scenario = Scenario.named(args.scenario, **options)
    # step() advances the clock before reading, so start one step early.
    return VirtualMachine(args.seed, args.machine or "default", args.profile, scenario=scenario,
                          start=start - timedelta(seconds=dt))


# -- pacing ---------------------------------------------------------------------------------

def generate(source: Iterator[dict], outbox: Outbox, sender: Sender, stats: Stats, *, rate: float,
             count: int | None, duration: float | None, restamp_from: datetime | None,
             tick: Callable[[], None]) -> None:
    """Put readings into the outbox at `rate` per second until count, duration or source end.

    Slots are scheduled from the start (reading k at t0 + k/rate), so the pace does not drift;
    readings that fell behind (slow disk) are caught up in one transaction. Unpaced (rate 0),
    generation waits while the outbox holds a few batches, so it cannot fill the disk.
    """
    period = 1.0 / rate if rate > 0 else 0.0
    high_water = max(MAX_CHUNK, 4 * sender.batch)  # unpaced: only as fast as the appliance takes them
    if outbox.max_rows:
        high_water = min(high_water, outbox.max_rows)
    t0 = time.monotonic()
    k = 0
    while not sender.stop.is_set():
        now = time.monotonic()
        if duration is not None and now - t0 >= duration:
            return
        due = int((now - t0) * rate) + 1 if rate > 0 else k + max(high_water - len(outbox), 0)
        if count is not None:
            if k >= count:
                return
            due = min(due, count)
        if due <= k:
            tick()
            wake = t0 + k * period if period else now + 0.05
            if duration is not None:
                wake = min(wake, t0 + duration)
            sender.stop.wait(max(0.0, min(wake - time.monotonic(), 0.5)))
            continue
        want = min(due - k, MAX_CHUNK)
        bodies: list[str] = []
        for i in range(want):
            body = next(source, None)
            if body is None:
                break
            if restamp_from is not None:
                at = restamp_from + timedelta(seconds=(k + i) * period) if period else datetime.now(UTC)
                body["Time"] = format_time(at, ms=True)
            bodies.append(json.dumps(body, separators=(",", ":")))
        stats.dropped += outbox.put(bodies)
        stats.generated += len(bodies)
        k += len(bodies)
        sender.wake.set()
        tick()
        if len(bodies) < want:
            return  # the source is exhausted


# -- reporting ------------------------------------------------------------------------------

class Reporter:
    """Progress lines every `interval` seconds and log messages, on stderr."""

    def __init__(self, stats: Stats, outbox: Outbox, interval: float, quiet: bool) -> None:
        self.stats, self.outbox, self.interval, self.quiet = stats, outbox, interval, quiet
        self.next_at = time.monotonic() + interval
        self._dropped_told, self._dropped_at = 0, 0.0

    def log(self, message: str, error: bool = False) -> None:
        if error or not self.quiet:
            print(f"{time.strftime('%H:%M:%S')} fdedge simulate: {message}", file=sys.stderr, flush=True)

    def line(self) -> str:
        s = self.stats
        text = (f"generated {s.generated}  sent {s.sent}  acked {s.acked}"
                + (f" (replayed {s.replayed})" if s.replayed else "")
                + f"  buffered {len(self.outbox)}  dead {s.dead}  dropped {s.dropped}")
        if s.attempt:
            text += f"  retrying {s.attempt}x, next in {max(s.retry_at - time.monotonic(), 0):.1f} s ({s.last_error})"
        else:
            text += "  retrying no"
        faults = {k: v for k, v in s.last_faults.items() if k in FAULTS and isinstance(v, (int, float))}
        if faults:
            worst = max(faults, key=lambda k: faults[k])
            text += f"  max {worst} {faults[worst]:.1f}"
        return text

    def tick(self) -> None:
        dropped = self.stats.dropped
        if dropped > self._dropped_told and time.monotonic() - self._dropped_at > 5:
            self.log(f"buffer full (--max-buffer {self.outbox.max_rows}): dropped the oldest reading(s), "
                     f"{dropped} so far", error=True)
            self._dropped_told, self._dropped_at = dropped, time.monotonic()
        if self.interval > 0 and time.monotonic() >= self.next_at:
            self.next_at = time.monotonic() + self.interval
            self.log(self.line())


# -- command line ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fdedge simulate", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_argument_group("source (the virtual machine unless --csv or --flush)")
    src.add_argument("--scenario", choices=SCENARIOS, default="developing",
                     help="what the virtual machine does: healthy; developing (one fault grows from 0 to 100); "
                          "multi (a bearing's failure cascade, faults 0-3, staggered); random (a reproducible "
                          "surprise from --seed). Default: developing")
    src.add_argument("--fault", metavar="N",
                     help="developing: the fault that grows (0-7 or fault0-fault7, default 2); "
                          "multi: a comma list, e.g. 5,6,7")
    src.add_argument("--minutes", type=float, metavar="M",
                     help="minutes of machine time until the fault(s) peak (default 10, multi/random 30)")
    src.add_argument("--seed", type=int, default=0,
                     help="random seed of the machine's noise and of 'random' (default 0)")
    src.add_argument("--profile", choices=sorted(PROFILES),
                     help="machine type; default: the profile named like --machine, else 'default' "
                          "(FD-REST's 3770 rpm sample machine)")
    src.add_argument("--start", type=parse_start, metavar="TIME",
                     help="time of the first reading, 'YYYY-MM-DD HH:MM:SS' UTC (default: now); "
                          "also the first time given by --restamp")
    src.add_argument("--csv", type=Path, metavar="PATH",
                     help="replay this file in FD-REST's data.csv format instead (Time, the 35 features; "
                          "fault columns are not sent)")
    src.add_argument("--loop", action="store_true", help="with --csv: start over at the end of the file")
    src.add_argument("--restamp", action="store_true",
                     help="with --csv: replace each row's Time by the time it is generated")
    src.add_argument("--flush", action="store_true",
                     help="generate nothing: deliver what the buffer holds, then exit")

    pace = parser.add_argument_group("pace")
    pace.add_argument("--rate", type=parse_rate, default=1.0, metavar="R",
                      help="readings per second: 2, 0.2, 1/5, 30/min; 0 = as fast as the appliance takes "
                           "them (default 1)")
    pace.add_argument("--count", type=int, metavar="N", help="stop generating after N readings")
    pace.add_argument("--duration", type=parse_seconds, metavar="T",
                      help="stop generating after T: 90, 90s, 5min, 2h")

    out = parser.add_argument_group("delivery")
    out.add_argument("--url", default=os.environ.get("FDEDGE_URL", "http://127.0.0.1:5000"),
                     help="the appliance, POST URL/send (default $FDEDGE_URL or http://127.0.0.1:5000)")
    out.add_argument("--token", default=os.environ.get("FDEDGE_TOKEN") or None,
                     help="ingest token, sent as 'Authorization: Bearer TOKEN' (default $FDEDGE_TOKEN)")
    out.add_argument("--machine", metavar="NAME",
                     help="machine name sent with each reading (the 'machine' key); without it the body "
                          "is exactly FD-REST's and the appliance files it under 'default'")
    out.add_argument("--batch", type=positive_int, default=1, metavar="N",
                     help="readings per request: 1 sends FD-REST's single JSON object; N > 1 a JSON array "
                          "of up to N (FD-Edge only; default 1). A backlog always drains in batches of N")
    out.add_argument("--linger", type=float, default=1.0, metavar="S",
                     help="with --batch > 1: longest a reading waits for its batch to fill (default 1 s)")
    out.add_argument("--buffer", type=Path, metavar="PATH",
                     help="the on-disk buffer (SQLite); default: ~/.local/state/fdedge/sensor-<machine>.db. "
                          "One sensor process per buffer")
    out.add_argument("--max-buffer", type=int, default=0, metavar="N",
                     help="keep at most N readings buffered; beyond, the oldest are dropped with a warning "
                          "(default 0 = unbounded)")
    out.add_argument("--timeout", type=float, default=10.0, metavar="S",
                     help="seconds to wait for the appliance's answer before retrying (default 10)")
    out.add_argument("--max-backoff", type=float, default=30.0, metavar="S",
                     help="longest pause between retries (default 30)")

    rep = parser.add_argument_group("output")
    rep.add_argument("--progress", type=float, default=5.0, metavar="S",
                     help="seconds between progress lines (default 5; 0 = none)")
    rep.add_argument("--quiet", "-q", action="store_true", help="print only errors (refused readings, failures)")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.csv is not None and not args.csv.is_file():
        parser.error(f"--csv {args.csv}: not a readable file")
    if args.csv is None and (args.loop or args.restamp):
        parser.error("--loop and --restamp apply to --csv")
    if args.flush and args.csv is not None:
        parser.error("--flush sends the buffer only; drop --csv")
    if args.count is not None and args.count < 0:
        parser.error("--count must be >= 0")
    if args.max_buffer < 0 or (args.max_buffer and args.max_buffer < args.batch):
        parser.error("--max-buffer must be 0 (unbounded) or at least --batch")
    if args.machine is not None and not (0 < len(args.machine) <= MAX_MACHINE_LEN and args.machine.isprintable()):
        parser.error(f"--machine must be 1-{MAX_MACHINE_LEN} printable characters")
    for name in ("linger", "timeout", "max_backoff", "progress"):
        if not getattr(args, name) >= 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")


def open_source(args: argparse.Namespace, start: datetime) -> Iterator[dict] | None:
    """The readings to generate (None with --flush); reads the first one now, so that a bad
    --fault or CSV is reported before anything is buffered or sent."""
    if args.flush:
        return None
    if args.csv is not None:
        source = csv_readings(args.csv, args.loop, args.machine)
    else:
        dt = 1.0 / args.rate if args.rate > 0 else 1.0
        source = machine_readings(make_machine(args, start, dt), dt, with_machine=args.machine is not None)
    try:
        first = next(source)
    except StopIteration:
        raise ValueError(f"{args.csv} holds no readings") from None

    def chained() -> Iterator[dict]:
        yield first
        yield from source

    return chained()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        conn = Connection(args.url, args.token, timeout=args.timeout or None)
    except ValueError as exc:
        parser.error(str(exc))
    start = args.start or datetime.now(UTC).replace(microsecond=0)
    buffer = args.buffer or default_buffer(args.machine)
    try:
        source = open_source(args, start)
        outbox = Outbox(buffer, max_rows=args.max_buffer)
    except (ValueError, OSError) as exc:
        print(f"fdedge simulate: {exc}", file=sys.stderr)
        return 2
    except (BufferLocked, sqlite3.Error) as exc:
        print(f"fdedge simulate: cannot open the buffer {buffer}: {exc}", file=sys.stderr)
        return 2
    return run(args, source, outbox, conn, start)


def run(args: argparse.Namespace, source: Iterator[dict] | None, outbox: Outbox, conn: Connection,
        start: datetime) -> int:
    """Generate in this (the main) thread, send in another; stop cleanly on a signal.

    Closes the outbox unless the sender is still inside a request after a second Ctrl-C (the
    process is about to exit, and every reading is on disk already)."""
    stats = Stats()
    reporter = Reporter(stats, outbox, args.progress, args.quiet)
    sender = Sender(outbox, conn, stats, batch=args.batch, linger=args.linger,
                    max_delay=args.max_backoff, log=reporter.log)
    failure: list[BaseException] = []

    def send_loop() -> None:
        try:
            sender.run()
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)
            sender.stop.set()

    if len(outbox):
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(outbox.oldest_created()))
        reporter.log(f"resuming: {len(outbox)} reading(s) buffered in {outbox.path} since {since} are sent first")
    what = "the buffer" if source is None else (str(args.csv) if args.csv else f"scenario {args.scenario}")
    reporter.log(f"sending {what} to {conn.scheme}://{conn.host}:{conn.port}{conn.path}, buffer {outbox.path}")
    thread = threading.Thread(target=send_loop, name="fdedge-sender", daemon=True)
    restore = _install_signals(sender, reporter)
    try:
        thread.start()
        if source is not None:
            generate(source, outbox, sender, stats, rate=args.rate, count=args.count, duration=args.duration,
                     restamp_from=start if args.restamp else None, tick=reporter.tick)
        sender.flushing.set()
        sender.wake.set()
        while thread.is_alive():
            thread.join(0.25)
            reporter.tick()
    except KeyboardInterrupt:  # a second Ctrl-C: leave now; every reading is already on disk
        sender.stop.set()
        reporter.log(f"interrupted; {len(outbox)} reading(s) stay in {outbox.path}", error=True)
        return 130
    except (ValueError, sqlite3.Error) as exc:  # a bad CSV line further down, a full disk
        sender.stop.set()
        thread.join(args.timeout + 1.0)
        print(f"fdedge simulate: {exc}", file=sys.stderr)
        return 2
    finally:
        restore()
        if not thread.is_alive():
            outbox.close()
    left = len(outbox)
    reporter.log("stopped: " + reporter.line()
                 + (f"; {left} reading(s) stay in {outbox.path} for the next run" if left else ""))
    if failure:
        print(f"fdedge simulate: sending failed: {failure[0]!r}", file=sys.stderr)
        return 2
    if stats.dead:
        print(f"fdedge simulate: {stats.dead} reading(s) were refused and moved to the dead_letter table "
              f"of {outbox.path}", file=sys.stderr)
        return 1
    return 0


def _install_signals(sender: Sender, reporter: Reporter) -> Callable[[], None]:
    """First SIGINT/SIGTERM: stop after the request in flight. A second one: KeyboardInterrupt.

    A repeat within half a second counts as the same request to stop: Ctrl-C in a terminal
    reaches the whole process group, and `fdedge demo` forwards it as well.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    calls = itertools.count()  # next() is atomic, even when a handler interrupts a handler
    first_at = [math.inf]

    def handler(signum: int, frame: object) -> None:
        if next(calls) == 0:
            first_at[0] = time.monotonic()
            sender.stop.set()
            reporter.log(f"{signal.Signals(signum).name}: finishing the request in flight, keeping the buffer")
        elif time.monotonic() - first_at[0] > 0.5:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


if __name__ == "__main__":
    sys.exit(main())
