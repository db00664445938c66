"""Regenerate the example request bodies in examples/ from the virtual machine in simulator/.

    .venv/bin/python examples/make_examples.py           # or: make examples
    .venv/bin/python examples/make_examples.py --check   # exit 1 if a file (or the README's inline
                                                         # copy of reading.json) is out of date

Fixed seeds and start times, so every run writes the same bytes. Needs only the runtime
install (numpy); nothing is read from outside the repository.

  reading.json      one reading, the body FD-REST's sender posted (Time + the 35 features)
  readings.ndjson   60 readings of machine "pump-7" (a 3000 rpm pump), one per 10 s, with a
                    developing fault 5; one JSON object per line, each with the "machine" key
  data.csv          120 readings of FD-REST's sample machine, one per 30 s, with fault 2
                    developing over the hour, in FD-REST's data.csv format: Time, the 35
                    features, then fault0..fault7 (the simulator's ground truth; the appliance
                    ignores these columns)
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from edge.fdrest import FAULTS, FEATURES  # noqa: E402
from simulator import Reading, Scenario, VirtualMachine  # noqa: E402
from simulator.dataset import HEADER  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 0
# FD-REST's own sample data starts on 2023-11-06, so the README's export and history
# examples (start=2023-11-06&end=2023-11-08) find these readings.
START = datetime(2023, 11, 6, 15, 0, 0, tzinfo=UTC)


def readings(count: int, dt_s: float, start: datetime, scenario: Scenario,
             machine: str = "default", profile: str | None = None) -> list[Reading]:
    """`count` readings, the first stamped `start`, then one every `dt_s` seconds."""
    # step() advances the clock before it reads, so the machine starts one step early.
    vm = VirtualMachine(SEED, machine, profile, scenario=scenario, start=start - timedelta(seconds=dt_s))
    return vm.run(count, dt_s)


def reading_json() -> str:
    (reading,) = readings(1, 60.0, START - timedelta(hours=1), Scenario.healthy())
    return json.dumps(reading.to_fdrest_json(), indent=2) + "\n"


def readings_ndjson() -> str:
    rows = readings(60, 10.0, START + timedelta(hours=1), Scenario.developing(fault=5, minutes=10),
                    machine="pump-7", profile="pump-3000")
    return "".join(json.dumps(r.to_fdrest_json(machine=True)) + "\n" for r in rows)


def data_csv() -> str:
    rows = readings(120, 30.0, START, Scenario.developing(fault=2, minutes=60))
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(HEADER)  # the same header and number formatting as `fdedge dataset`
    for r in rows:
        body = r.to_fdrest_json()
        out.writerow([body["Time"], *(repr(r.features[k]) for k in FEATURES), *(repr(r.faults[k]) for k in FAULTS)])
    return buf.getvalue()


FILES = {"reading.json": reading_json, "readings.ndjson": readings_ndjson, "data.csv": data_csv}


def readme_inline_matches(reading: str) -> bool:
    """The README's inline curl example repeats reading.json (plus a "machine" key)."""
    readme = (ROOT / "README.md").read_text()
    marker = "-d '{"
    start = readme.find(marker)
    if start < 0:
        return True  # no inline example any more: nothing to keep in step
    end = readme.index("}'", start)
    inline = json.loads(readme[start + len(marker) - 1:end + 1])
    inline.pop("machine", None)
    return inline == json.loads(reading)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate examples/ from the simulator (deterministic).")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is missing or differs")
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: examples/)")
    args = parser.parse_args(argv)
    stale = []
    for name, make in FILES.items():
        path = args.out / name
        text = make()
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
            continue
        path.write_text(text)
        print(f"wrote {path} ({text.count(chr(10))} lines)", file=sys.stderr)
    failed = bool(stale)
    if stale:
        print(f"out of date: {', '.join(stale)} (run: make examples)", file=sys.stderr)
    if args.check and not readme_inline_matches(reading_json()):
        print("README.md's inline curl reading differs from examples/reading.json: copy its values", file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
