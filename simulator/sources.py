"""Where the virtual sensor's readings come from: the live virtual machine or a data.csv file.

Each source is an iterator of reading bodies, dicts with FD-REST's keys exactly as POST /send
takes them, so the sensor can store them as JSON text and send them unchanged later.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from edge.fdrest import FEATURES, format_time
from simulator.machine import VirtualMachine


def machine_readings(vm: VirtualMachine, dt: float, with_machine: bool = False) -> Iterator[dict]:
    """Step `vm` by `dt` seconds per reading; `with_machine` adds FD-Edge's `machine` key."""
    while True:
        reading = vm.step(dt)
        body = reading.to_fdrest_json(machine=with_machine)
        body["Time"] = format_time(reading.time, ms=True)  # sub-second times at rates above 1/s
        yield body


def csv_readings(path: Path, loop: bool, machine: str | None) -> Iterator[dict]:
    """Rows of a data.csv-format file: Time and the 35 features (the fault labels stay behind)."""
    while True:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [k for k in FEATURES if k not in (reader.fieldnames or ())]
            if missing:
                raise ValueError(f"{path}: not in data.csv's format, missing column(s) {missing[:3]}")
            rows = 0
            for number, row in enumerate(reader, start=2):
                if not any((v or "").strip() for v in row.values()):
                    continue
                try:
                    body: dict[str, object] = {k: float(row[k]) for k in FEATURES}
                except (TypeError, ValueError):
                    raise ValueError(f"{path}, line {number}: a feature is not a number") from None
                if (row.get("Time") or "").strip():
                    body = {"Time": row["Time"].strip(), **body}
                if machine is not None:
                    body["machine"] = machine
                rows += 1
                yield body
        if not loop or rows == 0:
            return
