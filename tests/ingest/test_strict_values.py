"""What a reading's text may say, and the one form it is stored in (issue: hostile and careless
clients). Everything accepted is stored as FD-REST's `YYYY-MM-DD HH:MM:SS` in UTC, so every
read that compares or buckets times (series, count, export) works on it."""

from __future__ import annotations

import csv
import io
import sqlite3

import pytest

from tests.harness import reading

# Accepted spellings of 2023-11-06 14:00:00 UTC, and the text each is stored as.
TIMES = [
    ("2023-11-06 14:00:00", "2023-11-06 14:00:00"),
    ("2023-11-06T14:00:00Z", "2023-11-06 14:00:00"),
    ("2023-11-06T15:00:00+01:00", "2023-11-06 14:00:00"),
    ("2023-11-06 15+01:00", "2023-11-06 14:00:00"),  # 19 characters, hour only, with an offset
    ("2023-11-06 15:00+01", "2023-11-06 14:00:00"),  # 19 characters, offset in hours
    ("2023-W45-1 14:00:00", "2023-11-06 14:00:00"),  # 19 characters, an ISO week date
    ("2023-11-06 14:00:00.250", "2023-11-06 14:00:00.25"),
]


@pytest.mark.parametrize("sent, stored", TIMES)
def test_every_accepted_time_is_stored_in_one_form_and_read_back(client, settings, sent, stored):
    r = client.post("/send", json=reading(1, Time=sent, machine="m1"))
    assert r.status_code == 200, r.text
    with sqlite3.connect(settings.db_path) as conn:
        assert conn.execute("SELECT time FROM sensor_data").fetchall() == [(stored,)]
    series = client.get("/api/series", params={"start": "2023-11-06T13:00:00Z", "end": "2023-11-06T15:00:00Z",
                                               "metrics": "temperature", "machine": "m1"})
    assert series.status_code == 200, series.text
    assert len(series.json()["time"]) == 1 and series.json()["series"]["temperature"][0] is not None
    count = client.get("/api/count", params={"start": "2023-11-06", "end": "2023-11-06"})
    assert count.status_code == 200 and count.json()["count"] == 1
    export = client.get("/generate_csv", params={"start": "2023-11-06", "end": "2023-11-06"})
    assert export.status_code == 200
    assert [row["time"] for row in csv.DictReader(io.StringIO(export.text))] == [stored]


@pytest.mark.parametrize("value", ["٣٣", "1_000", "３３", "33\u00a0"])
def test_numbers_are_ascii_decimals(client, value):
    r = client.post("/send", json=reading(1, Temperature=value))
    assert r.status_code == 422
    assert r.json()["field"] == "Temperature" and "not a number" in r.json()["message"]


def test_numbers_as_text_in_ascii_still_count(client):
    assert client.post("/send", json=reading(1, Temperature="33.5")).status_code == 200
    assert client.post("/send", content="Time,Temperature\n", headers={"Content-Type": "text/csv"}).status_code == 422


def test_machine_names_that_only_look_different_are_one_machine(client):
    composed, decomposed = "pump-\u00e9", "pump-e\u0301"  # é as one code point, and as e + accent
    for name in (composed, decomposed, " pump-\u00e9", "pump-\u00e9  "):
        assert client.post("/send", json=reading(1, machine=name)).status_code == 200
    machines = client.get("/api/machines").json()["machines"]
    assert [(m["machine"], m["readings"]) for m in machines] == [(composed, 4)]
    assert client.post("/send", json=reading(1, machine="   ")).json()["field"] == "machine"
