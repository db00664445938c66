"""The export's fast row formatting writes exactly what the csv module writes after safe_cell,
for any row an FD-Edge or FD-REST file can hold: floats of every magnitude, NULLs, text in
numeric columns, and text cells that need quoting or neutralising."""

from __future__ import annotations

import csv
import io

from hypothesis import example, given, settings
from hypothesis import strategies as st

from edge.store.export import EXPORT_HEADER, format_rows, safe_cell

NUMBERS = len(EXPORT_HEADER) - 8  # id, time ... machine, alarms, model_version, quality, quality_score, quality_reasons

EDGES = [0.0, -0.0, 1e-4, 9.999e-5, 1e-5, -1e-7, 1.5e-9, 1e-10, 1e16, 9999999999999998.0, 5e-324, 1e300]
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e-3, max_value=1e-3),
    st.sampled_from(EDGES),
)
cells = st.one_of(floats, st.none(), st.integers(-2**53, 2**53), st.text(max_size=6))
texts = st.one_of(st.text(max_size=12), st.sampled_from(["", "machine-01", "a,b", 'say "hi"', "=cmd", "-1", "\tx",
                                                      "line\r\nbreak", "fault2:alarm;fault5:warning"]))
quality = st.tuples(st.sampled_from(["ok", "suspect", "invalid", "unknown"]), st.one_of(st.none(), floats),
                    st.one_of(st.none(), texts, st.just("Temperature:stuck,1.8-2 kHz:jump")))
rows = st.tuples(st.integers(1, 2**62), texts, st.lists(cells, min_size=NUMBERS, max_size=NUMBERS), texts, texts,
                 texts, quality)


def reference(rows: list[tuple]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
    return buffer.getvalue()


@settings(max_examples=400, deadline=None)
@given(st.lists(rows, max_size=5))
@example([(1, "2026-11-25 00:03:31", [9.189571082302006e-05] + [0.5] * (NUMBERS - 1), "machine-01", "",
           "3f9c2a1b7d4e5f60", ("ok", 0.4123, None))])
def test_fast_rows_are_what_the_csv_module_writes(generated):
    table = [(i, when, *numbers, machine, alarms, version, *q) for i, when, numbers, machine, alarms, version, q
             in generated]
    buffer = io.StringIO()
    assert format_rows(table, csv.writer(buffer, lineterminator="\n"), buffer) == reference(table)


def test_every_magnitude_at_the_edges():
    table = [(i, "2026-11-25 00:03:31", *([value] * NUMBERS), "machine-01", "", "3f9c2a1b7d4e5f60", "ok", value, None)
             for i, value in enumerate(EDGES)]
    buffer = io.StringIO()
    assert format_rows(table, csv.writer(buffer, lineterminator="\n"), buffer) == reference(table)
