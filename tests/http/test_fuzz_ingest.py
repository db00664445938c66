"""Bad input is refused cleanly: hypothesis-generated bodies for POST /send.

Every example, whatever it holds, must be answered 2xx or 4xx (never 5xx); a 4xx carries a JSON
`error` and `message`; a 200 answers one fault object per reading; and the table grows by exactly
the readings answered 200 (counted before and after each example). Where the input is simple
enough to judge (numbers, names, known-good and known-bad times), a small reference of the API's
rules predicts the answer too, and the stored values are compared with what was sent.

Generated: missing, extra and mistyped fields; NaN, infinities, huge integers and floats; huge
strings; deep nesting; duplicate keys; non-UTF-8; random bytes; wrong and odd content types;
single readings, JSON arrays, NDJSON and CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.fdrest import COLUMNS, FAULTS, FEATURES
from tests.harness import Server, reading
from tests.reliability_helpers import Reply, request

REPORT_SECTION = "bad_input"

MAX_BODY = 64 * 1024
MAX_ROWS = 40
EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
UNKNOWN = object()  # the reference does not judge this input; only the invariants apply


# -- the app under test -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def app_client(tmp_path_factory, linear_model):
    """The app under real uvicorn in this process (real HTTP parsing; a hung request times out
    instead of hanging the suite), with small limits so the 413 paths are reached too."""
    from edge.settings import Settings
    data = tmp_path_factory.mktemp("fuzz")
    settings = Settings(data_dir=data, model_dir=linear_model[0], max_body_bytes=MAX_BODY, max_batch_rows=MAX_ROWS,
                        retention_interval=3600)
    with Server(settings=settings, uvicorn={"timeout_graceful_shutdown": 2}) as server:
        yield server, settings.db_path


def post_or_fail(server, body: bytes, headers: dict, timeout: float = 30) -> Reply:
    try:
        return request(server.port, "POST", "/send", body, headers, timeout)
    except TimeoutError:
        raise AssertionError(f"no answer within {timeout} s (writer thread alive: "
                             f"{server.appliance.writer.alive}) for {body[:200]!r}") from None


def rows_in(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM sensor_data").fetchone()[0]


def last_levels(db: Path, n: int) -> list[float]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [r[0] for r in conn.execute("SELECT level FROM sensor_data ORDER BY id DESC LIMIT ?", (n,))][::-1]


def send(app_client, report, kind: str, body: bytes, content_type: str | None, expect=UNKNOWN, n: int | None = None,
         levels: list[float] | None = None):
    """Post one example and check the invariants (and the reference's verdict when it has one)."""
    server, db = app_client
    headers = {} if content_type is None else {"Content-Type": content_type}
    before = rows_in(db)
    r = post_or_fail(server, body, headers)
    after = rows_in(db)
    report.add("bad_input", "examples")
    report.note("bad_input", "kinds", kind)
    summary = f"{kind}: {r.status} {r.text[:300]!r} for {body[:200]!r}"
    if r.status >= 500:
        report.add("bad_input", "server_errors")
    assert r.status < 500, summary
    if r.status == 200:
        answer = r.json()
        assert isinstance(answer, list) and all(list(a) == list(FAULTS) for a in answer), summary
        assert all(isinstance(v, float) and math.isfinite(v) for a in answer for v in a.values()), summary
        assert after - before == len(answer), f"{summary}: {after - before} rows stored for {len(answer)} answers"
        if n is not None:
            assert len(answer) == n, summary
        if levels is not None:
            assert last_levels(db, len(levels)) == levels, summary
        ignored = r.headers.get("x-fdedge-ignored-keys", "")
        assert all(32 <= ord(c) < 127 for c in ignored), summary
        report.add("bad_input", "accepted", len(answer))
    else:
        assert 400 <= r.status < 500, summary
        error = r.json()
        assert isinstance(error.get("error"), str) and isinstance(error.get("message"), str) and error["message"], summary
        assert after == before, f"{summary}: a refused request stored {after - before} rows"
        report.add("bad_input", "refused")
    if expect is not UNKNOWN:
        if expect == 200:
            assert r.status == 200, f"the reference expects 200: {summary}"
        else:
            assert r.status == expect or (expect == 4 and 400 <= r.status < 500), \
                f"the reference expects {expect}: {summary}"
    return r


# -- the reference: what the API promises about simple values ---------------------------------------

def feature_ok(value) -> bool | None:
    """True/False when the rule is clear, None when it depends on the model (huge magnitudes)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    if isinstance(value, str) and (not value.isascii() or "_" in value):
        return False  # ASCII decimal notation only: float() would read "١٢٣" and "1_000"
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return False
    if not math.isfinite(number):
        return False
    return True if abs(number) <= 1e6 else None


GOOD_TIMES = ["2024-01-02 03:04:05", "2024-01-02T03:04:05Z", "2024-01-02T03:04:05+02:00", "2024-01-02 03:04:05.5",
              "1970-01-01 00:00:00", "9999-12-31 23:59:59", " 2024-01-02T03:04:05z ", "2024-01-02"]
BAD_TIMES = ["", "   ", "yesterday", "2024-13-01 00:00:00", "2024-02-30 00:00:00", "1969-12-31 23:59:59",
             "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "12:00", "2024-01-02 25:00:00", "\x00"]


def time_ok(value) -> bool | None:
    if value is None:
        return True
    if value in GOOD_TIMES:
        return True
    if value in BAD_TIMES or not isinstance(value, str):
        return False
    return None


def machine_ok(value) -> bool:
    """Printable text, NFC-normalised and stripped of spaces, of 1-64 characters."""
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    name = unicodedata.normalize("NFC", value)
    if not name.isprintable():
        return False
    name = name.strip(" ")
    return 0 < len(name) <= 64


def reading_ok(obj) -> bool | None:
    if not isinstance(obj, dict):
        return False
    verdicts = [feature_ok(obj[k]) if k in obj else False for k in FEATURES]
    verdicts.append(time_ok(obj.get("Time")))
    verdicts.append(machine_ok(obj.get("machine")))
    if False in verdicts:
        return False
    return None if None in verdicts else True


def batch_verdict(objects: list, body_size: int):
    if body_size > MAX_BODY:
        return 413
    if not objects:
        return 400
    verdicts = [reading_ok(o) for o in objects]
    if False in verdicts:
        return 4
    if None in verdicts:
        return UNKNOWN
    return 413 if len(objects) > MAX_ROWS else 200


# -- strategies -------------------------------------------------------------------------------------

huge_ints = st.integers(min_value=-(10 ** 400), max_value=10 ** 400)
plain_numbers = st.one_of(st.integers(-10 ** 6, 10 ** 6), st.floats(-1e6, 1e6, allow_nan=False))
odd_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), huge_ints,
                        st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, -1e308, 1e30, 2 ** 63, -2 ** 63 - 1]))
numeric_text = st.one_of(plain_numbers.map(repr), st.sampled_from(
    ["1e999", "-1e999", "NaN", "nan", "inf", "-Infinity", "1_000", " 12.5 ", "0x10", "1,5", "", "١٢٣", "½", "1e-400"]))
junk = st.one_of(st.none(), st.booleans(), st.text(max_size=30), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
feature_values = st.one_of(plain_numbers, plain_numbers, odd_numbers, numeric_text, junk)
times = st.one_of(st.none(), st.sampled_from(GOOD_TIMES + BAD_TIMES), st.text(max_size=40),
                  st.integers(0, 2 ** 40), st.floats(allow_nan=False))
machines = st.one_of(st.none(), st.text(min_size=0, max_size=70), st.sampled_from(
    ["=HYPERLINK(\"http://x\")", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "a\nb", "a\x00b", "x" * 64, "x" * 65,
     "pump-7", "Ünïcødé 機械", "\u202etxt.exe", "'; DROP TABLE sensor_data; --"]), st.integers(), st.booleans())
extra_keys = st.dictionaries(st.text(max_size=30), st.one_of(st.integers(), st.text(max_size=10), st.none()), max_size=4)


@st.composite
def readings(draw, seed: int | None = None) -> dict:
    """A valid reading, then mutated: fields dropped, values swapped for odd ones, extras added."""
    obj = reading(draw(st.integers(0, 10 ** 6)) if seed is None else seed)
    for key in draw(st.lists(st.sampled_from(FEATURES), max_size=3, unique=True)):
        if draw(st.booleans()):
            del obj[key]
        else:
            obj[key] = draw(feature_values)
    if draw(st.booleans()):
        obj["Time"] = draw(times)
    if draw(st.booleans()):
        obj["machine"] = draw(machines)
    if draw(st.integers(0, 4)) == 0:
        obj.update({k: v for k, v in draw(extra_keys).items() if k not in obj})
    return obj


def dumps(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


# -- tests ------------------------------------------------------------------------------------------

@FUZZ
@given(obj=readings())
def test_single_readings_are_stored_or_refused_with_a_reason(app_client, report, obj):
    body = dumps(obj)
    verdict = batch_verdict([obj], len(body))
    levels = [float(obj["Level"])] if verdict == 200 else None
    send(app_client, report, "single JSON readings", body, "application/json", verdict, 1, levels)


def verdict_of(ok: bool | None):
    return 200 if ok else UNKNOWN if ok is None else 4


@FUZZ
@given(key=st.sampled_from(FEATURES), value=feature_values)
def test_each_feature_value_is_judged_by_the_rules(app_client, report, key, value):
    obj = reading(5, **{key: value})
    ok = feature_ok(value)
    send(app_client, report, "feature values", dumps(obj), "application/json", verdict_of(ok), 1,
         [float(obj["Level"])] if ok else None)


@FUZZ
@given(value=machines)
def test_machine_names_are_judged_by_the_rules(app_client, report, value):
    send(app_client, report, "machine names", dumps(reading(6, machine=value)), "application/json",
         verdict_of(machine_ok(value)), 1)


@FUZZ
@given(value=times)
def test_times_are_judged_by_the_rules(app_client, report, value):
    send(app_client, report, "times", dumps(reading(7, Time=value)), "application/json", verdict_of(time_ok(value)), 1)


@FUZZ
@given(objs=st.lists(st.one_of(readings(), readings(), junk), max_size=MAX_ROWS + 5),
       fmt=st.sampled_from(["json", "ndjson"]))
def test_batches_are_all_or_nothing(app_client, report, objs, fmt):
    if fmt == "json":
        body, ctype = dumps(objs), "application/json"
    else:
        body, ctype = b"\n".join(dumps(o) for o in objs) + b"\n", "application/x-ndjson"
    verdict = batch_verdict(objs, len(body))
    levels = [float(o["Level"]) for o in objs] if verdict == 200 else None
    send(app_client, report, f"{fmt} batches", body, ctype, verdict, len(objs), levels)


@FUZZ
@given(objs=st.lists(readings(), min_size=0, max_size=10), extra_columns=st.lists(st.text(max_size=12), max_size=2),
       shuffle=st.randoms(use_true_random=False), bom=st.booleans(), crlf=st.booleans(),
       cells=st.lists(st.text(max_size=12), max_size=3))
def test_csv_bodies(app_client, report, objs, extra_columns, shuffle, bom, crlf, cells):
    header = ["Time", *FEATURES, "machine", *FAULTS, *extra_columns]
    shuffle.shuffle(header)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(header)
    for i, obj in enumerate(objs):
        row = []
        for column in header:
            value = obj.get(column, "") if column in ("Time", "machine", *FEATURES) else (cells[i % len(cells)] if cells else "0.5")
            row.append("" if value is None else str(value))
        writer.writerow(row)
    body = ("\ufeff" if bom else "").encode() + out.getvalue().encode("utf-8", "surrogatepass")
    send(app_client, report, "CSV bodies", body, "text/csv")


@FUZZ
@given(body=st.one_of(st.binary(max_size=3000), st.text(max_size=2000).map(lambda t: t.encode("utf-8", "surrogatepass"))),
       ctype=st.one_of(st.none(), st.sampled_from(
           ["application/json", "application/x-ndjson", "text/csv", "text/plain", "application/xml", "",
            "multipart/form-data; boundary=x", "application/json; charset=latin-1", "APPLICATION/JSON", "text/csv;;",
            "application/x-www-form-urlencoded", "*/*"]),
           st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)))
def test_random_bytes_and_content_types(app_client, report, body, ctype):
    send(app_client, report, "random bytes and content types", body, ctype)


@FUZZ
@given(depth=st.integers(1, 200_000), where=st.sampled_from(["body", "array", "feature"]),
       opener=st.sampled_from(["[", "{\"a\":"]))
def test_deep_nesting(app_client, report, depth, where, opener):
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + "1" + closer * depth
    if where == "body":
        text = nested
    elif where == "array":
        text = "[" + nested + "]"
    else:
        text = json.dumps(reading(1)).replace('"Level": ', '"Level": ' + nested + ', "x": ', 1)
    body = text.encode()
    send(app_client, report, "deep nesting", body, "application/json",
         413 if len(body) > MAX_BODY else 4)


@FUZZ
@given(key=st.sampled_from([*FEATURES, "Time", "machine"]), first=feature_values, last=st.one_of(plain_numbers, junk))
def test_duplicate_keys_take_the_last_value(app_client, report, key, first, last):
    obj = reading(2)
    text = json.dumps(obj, allow_nan=True)
    text = "{" + json.dumps(key) + ": " + json.dumps(first, allow_nan=True) + ", " + text[1:]
    final = dict(obj)
    final[key] = obj.get(key, first)
    if key not in obj:  # Time/machine: append the last value too
        text = text[:-1] + ", " + json.dumps(key) + ": " + json.dumps(last, allow_nan=True) + "}"
        final[key] = last
    body = text.encode()
    verdict = batch_verdict([final], len(body))
    send(app_client, report, "duplicate keys", body, "application/json", verdict, 1,
         [float(final["Level"])] if verdict == 200 else None)


@FUZZ
@given(size=st.sampled_from([1_000, 30_000, 63_000, 70_000, 200_000]), where=st.sampled_from(["machine", "key", "value", "Time"]),
       char=st.sampled_from(["x", "é", "機", "\U0001F525", "\x00", "\ud800"]))
def test_huge_strings(app_client, report, size, where, char):
    obj = reading(3)
    big = char * (size // len(char.encode("utf-8", "surrogatepass")))
    if where == "machine":
        obj["machine"] = big
    elif where == "key":
        obj[big] = 1
    elif where == "value":
        obj["Level"] = big
    else:
        obj["Time"] = big
    body = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    expect = 413 if len(body) > MAX_BODY else (200 if where == "key" and char != "\ud800" else 4 if where != "key" else UNKNOWN)
    send(app_client, report, "huge strings", body, "application/json", expect)


@FUZZ
@given(obj=readings(), encoding=st.sampled_from(["latin-1", "utf-16", "utf-16-le", "utf-32", "cp1252"]),
       ctype=st.sampled_from(["application/json", "application/x-ndjson", "text/csv"]))
def test_non_utf8_bodies(app_client, report, obj, encoding, ctype):
    obj["machine"] = "Ölpumpe-Nr°7"
    text = json.dumps(obj, ensure_ascii=False, allow_nan=True)
    if ctype == "text/csv":
        out = io.StringIO()
        csv.writer(out).writerows([list(obj), [str(v) for v in obj.values()]])
        text = out.getvalue()
    body = text.encode(encoding, "replace")
    # UTF-16/32 JSON is read (Python's json detects it); anything else that is not UTF-8 is refused
    lenient = ctype != "text/csv" and encoding.startswith("utf")
    send(app_client, report, "non-UTF-8 bodies", body, ctype, UNKNOWN if lenient else 4)


def test_valid_readings_of_every_format_store_exactly_what_was_sent(app_client, report):
    """The positive side of the reference: plain valid batches are always accepted and stored as sent."""
    _, db = app_client
    batch = [reading(i, Time=f"2024-01-01 00:00:{i:02d}", machine=f"m{i % 3}") for i in range(MAX_ROWS)]
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["Time", "machine", *FEATURES])
    for r in batch:
        w.writerow([r["Time"], r["machine"], *(repr(r[k]) for k in FEATURES)])
    bodies = [(dumps(batch), "application/json"), (b"\n".join(dumps(r) for r in batch), "application/x-ndjson"),
              (out.getvalue().encode(), "text/csv")]
    for body, ctype in bodies:
        send(app_client, report, "valid batches", body, ctype, 200, len(batch))
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            got = conn.execute(f"SELECT time, machine, {', '.join(COLUMNS)} FROM sensor_data ORDER BY id DESC LIMIT ?",
                               (len(batch),)).fetchall()[::-1]
        assert got == [(r["Time"], r["machine"], *(r[k] for k in FEATURES)) for r in batch], ctype


@pytest.mark.parametrize("value", [2 ** 63, 2 ** 64, -(2 ** 63) - 1, 10 ** 300, 10 ** 400])
def test_integers_beyond_sqlite_range_never_stop_the_writer(app_client, report, value):
    """Found by the fuzzing above: 2**63 passed validation as a finite number, SQLite could not bind
    it, and the OverflowError killed the writer thread; every later request hung."""
    body = dumps(reading(8, Level=value))
    send(app_client, report, "integers beyond 64 bits", body, "application/json",
         200 if value < 10 ** 300 else 4, levels=[float(value)] if value < 10 ** 300 else None)
    server, _ = app_client
    assert server.appliance.writer.alive
    send(app_client, report, "integers beyond 64 bits", dumps(reading(9)), "application/json", 200, 1)
