"""The report's zone (issue 19 item 2): `/generate_csv` and `/api/count` read their days in `tz`
(an IANA zone; UTC by default, as FD-REST did), and `offset=1` writes each time as ISO 8601 with
its offset in that zone. FD-REST's `YYYY-MM-DD HH:MM:SS` UTC stays the default format."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.harness import reading

# New York is UTC-05:00 in December: its 4 December runs from 05:00 UTC on the 4th to 05:00 on the 5th.
TIMES = ["2026-12-04 04:59:59", "2026-12-04 05:00:00", "2026-12-04 21:05:00", "2026-12-05 04:59:59",
         "2026-12-05 05:00:00"]


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def stored(client):
    for i, t in enumerate(TIMES):
        assert client.post("/send", json=reading(i, Time=t)).status_code == 200
    return client


def test_default_is_fdrest_days_and_times_in_utc(stored):
    got = _rows(stored.get("/generate_csv?start=2026-12-04&end=2026-12-04").text)
    assert [r["time"] for r in got] == TIMES[:3]
    assert stored.get("/api/count?start=2026-12-04&end=2026-12-04").json() == {"count": 3}


def test_days_are_read_in_the_zone_given(stored):
    query = "start=2026-12-04&end=2026-12-04&tz=America/New_York"
    got = _rows(stored.get(f"/generate_csv?{query}").text)
    assert [r["time"] for r in got] == TIMES[1:4]  # still FD-REST's UTC text: tz alone moves the days only
    assert stored.get(f"/api/count?{query}").json() == {"count": 3}


def test_offset_writes_iso_times_with_the_zones_offset(stored):
    got = _rows(stored.get("/generate_csv?start=2026-12-04&end=2026-12-04&tz=America/New_York&offset=1").text)
    assert [r["time"] for r in got] == ["2026-12-04T00:00:00-05:00", "2026-12-04T16:05:00-05:00",
                                        "2026-12-04T23:59:59-05:00"]
    berlin = _rows(stored.get("/generate_csv?start=2026-12-04&end=2026-12-04&tz=Europe/Berlin&offset=1").text)
    assert berlin[-1]["time"] == "2026-12-04T22:05:00+01:00"
    utc = _rows(stored.get("/generate_csv?start=2026-12-04&end=2026-12-04&offset=1").text)
    assert [r["time"] for r in utc][:2] == ["2026-12-04T04:59:59+00:00", "2026-12-04T05:00:00+00:00"]


def test_a_zone_off_the_hour_is_counted_exactly(stored):
    """Kolkata is UTC+05:30: its days do not start on an hour of the rollups."""
    query = "start=2026-12-04&end=2026-12-04&tz=Asia/Kolkata"  # 2026-12-03 18:30 to 12-04 18:30 UTC
    assert stored.get(f"/api/count?{query}").json() == {"count": 2}
    assert [r["time"] for r in _rows(stored.get(f"/generate_csv?{query}").text)] == TIMES[:2]


@pytest.mark.parametrize("query,field", [
    ("tz=Mars/Olympus", "tz"),
    ("tz=../../etc/passwd", "tz"),
    ("tz=" + "x" * 300, "tz"),
    ("offset=yes", "offset"),
])
@pytest.mark.parametrize("path", ["/generate_csv", "/api/count"])
def test_a_bad_zone_or_offset_is_a_400_naming_the_parameter(stored, path, query, field):
    r = stored.get(f"{path}?start=2026-12-04&end=2026-12-04&{query}")
    assert r.status_code == 400
    body = r.json()
    assert body["field"] == field and field in body["message"]


def test_zones_do_not_depend_on_the_hosts_zone_files(tmp_path):
    """A Pi or a slim image may have no /usr/share/zoneinfo: the tzdata package (a dependency)
    still gives every zone. PYTHONTZPATH pointed at an empty directory hides the host's files."""
    import subprocess
    import sys

    empty = tmp_path / "no-zoneinfo"
    empty.mkdir()
    code = ("from edge.store.export import _zone; z = _zone('America/New_York'); "
            "import datetime; print(datetime.datetime(2026, 1, 15, 12, tzinfo=z).utcoffset())")
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONTZPATH": str(empty), "PATH": "/usr/bin:/bin",
                                                            "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "-1 day, 19:00:00", out.stderr[-800:]
