"""Parse and validate ingest bodies (JSON object or array, NDJSON, CSV) into one scoring batch.

Validation is all-or-nothing: the first bad value raises InvalidReading naming its row and
field, before anything reaches the model or the database.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import operator
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from edge.errors import BadRequest, InvalidJSON, InvalidReading, PayloadTooLarge, UnsupportedMediaType
from edge.fdrest import DEFAULT_MACHINE, FAULTS, FEATURES, MAX_MACHINE_LEN, format_time, now_text

TIME_KEY = "Time"
MACHINE_KEY = "machine"
KNOWN_KEYS = frozenset(FEATURES) | {TIME_KEY, MACHINE_KEY}

# FD-REST's `YYYY-MM-DD HH:MM:SS`, stored as sent once its ranges check out. Anything else that
# Python reads as a time ("2023-11-06 15+01:00", an ISO week date) is converted to it first.
_STORED_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", re.ASCII)

# Prefix of Batch.digest(); a stored digest without it hashed raw bytes (an earlier version) and
# is not compared.
DIGEST_VERSION = "r1:"

JSON_TYPES = {"application/json", "text/json"}
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/jsonlines"}
CSV_TYPES = {"text/csv", "application/csv"}
ACCEPTED_TYPES = JSON_TYPES | NDJSON_TYPES | CSV_TYPES


@dataclass
class Batch:
    times: list[str]
    machines: list[str]
    rows: list[list]  # 35 finite numbers per reading, FD-REST feature order
    ignored: set[str] = field(default_factory=set)
    untimed: list[int] = field(default_factory=list)  # rows stamped with the time of receipt

    def __len__(self) -> int:
        return len(self.times)

    def digest(self) -> str:
        """What an Idempotency-Key is bound to: the readings, not the bytes that carried them.

        A sensor may re-send a claimed reading as a one-element array, with other spacing or as
        CSV; that is the same request. A reading without a time is bound to "no time", since
        its time of receipt differs on every retry."""
        times: list[str | None] = list(self.times)
        for index in self.untimed:
            times[index] = None
        return DIGEST_VERSION + hashlib.sha256(orjson.dumps([times, self.machines, self.rows])).hexdigest()


def parse_time(value: object, row: int = 0, key: str = TIME_KEY) -> str:
    """Naive times (FD-REST's format) are taken as UTC; ISO 8601 with an offset is converted."""
    if type(value) is str and len(value) == 19 and "1970" <= value[:4] and _STORED_TIME.match(value):
        try:  # FD-REST's own format is already the stored form: validate the ranges, keep as is
            datetime.fromisoformat(value)
            return value
        except ValueError:
            pass
    if not isinstance(value, str) or not value.strip():
        raise InvalidReading(f"row {row}: field {key!r} must be a time like '2023-11-06 15:00:00' "
                             f"or ISO 8601 with offset", row=row, field=key)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is not None:
            dt = dt.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise InvalidReading(f"row {row}: field {key!r} is not a valid time: {value[:64]!r}",
                             row=row, field=key) from None
    if dt.year < 1970:
        raise InvalidReading(f"row {row}: field {key!r} is before 1970: {value[:64]!r}", row=row, field=key)
    return format_time(dt)


def parse_machine(value: object, row: int = 0) -> str:
    """A machine's name as stored: NFC-normalised and stripped, so names that only look alike are
    one machine."""
    if value is None:
        return DEFAULT_MACHINE
    if isinstance(value, str):
        if not value.isascii():  # ASCII is NFC already
            value = unicodedata.normalize("NFC", value)
        if value.isprintable():  # control characters are refused, not stripped away
            value = value.strip(" ")
    if not isinstance(value, str) or not 0 < len(value) <= MAX_MACHINE_LEN or not value.isprintable():
        raise InvalidReading(f"row {row}: field 'machine' must be printable text of 1-{MAX_MACHINE_LEN} characters",
                             row=row, field=MACHINE_KEY)
    return value


def _number(value: object, row: int, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidReading(f"row {row}: feature {key!r} must be a number, got {type(value).__name__}",
                             row=row, field=key)
    try:
        if isinstance(value, str) and (not value.isascii() or "_" in value):
            raise ValueError(value)  # float() also reads "٣٣" and "1_000"; a sensor sends ASCII decimals
        number = float(value)
    except (ValueError, OverflowError):
        raise InvalidReading(f"row {row}: feature {key!r} is not a number: {str(value)[:64]!r}",
                             row=row, field=key) from None
    if not math.isfinite(number):
        raise InvalidReading(f"row {row}: feature {key!r} must be finite, got {str(value)[:64]!r}",
                             row=row, field=key)
    return number


_pick = operator.itemgetter(*FEATURES)
# Only floats stay as they are: an int can be beyond SQLite's 64-bit INTEGER (2**63 and up is still a
# finite float), which made the insert raise OverflowError and killed the writer thread. Ints take
# the per-field path and become floats, as the REAL columns would store them anyway.
_PLAIN_NUMBERS = frozenset({float})


def _values(obj: dict, row: int) -> list:
    """The 35 values in FD-REST order. The common case (all plain numbers) stays in C: one
    itemgetter call and one set of types; anything else takes the per-field path."""
    try:
        values = list(_pick(obj))
    except KeyError:
        missing = [key for key in FEATURES if key not in obj]
        raise InvalidReading(f"row {row}: missing feature {missing[0]!r}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                             row=row, field=missing[0], missing=missing) from None
    if not _PLAIN_NUMBERS.issuperset(map(type, values)):
        return [_number(v, row, k) for k, v in zip(FEATURES, values, strict=True)]
    return values


def from_objects(objects: list, received: str | None, ignore: frozenset[str] = frozenset(),
                 machine: str | None = None) -> Batch:
    """`machine`: the name for readings that carry none (an MQTT topic level names it); else the default."""
    if not objects:
        raise BadRequest("the body holds no readings")
    times: list[str] = []
    machines: list[str] = []
    rows: list[list] = []
    ignored: set[str] = set()
    untimed: list[int] = []
    for index, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise InvalidReading(f"row {index}: a reading must be a JSON object, got {type(obj).__name__}",
                                 row=index, field=None)
        rows.append(_values(obj, index))
        stamp = obj.get(TIME_KEY)
        if stamp is None:
            received = received or now_text()  # only computed when a reading has no time
            times.append(received)
            untimed.append(index)
        else:
            times.append(parse_time(stamp, index))
        name = obj.get(MACHINE_KEY)
        machines.append(parse_machine(machine if name is None else name, index))
        if len(obj) != 35 + (TIME_KEY in obj) + (MACHINE_KEY in obj):
            ignored.update(k for k in obj if k not in KNOWN_KEYS and k not in ignore)
    for index, values in enumerate(rows):
        # One float sum per reading instead of numpy on the event loop: NaN or infinity anywhere
        # makes the sum non-finite; then each value is checked to name the field.
        try:
            total = float(sum(values))
        except OverflowError:  # an int too large for a float
            total = math.inf
        if total - total != 0.0:
            rows[index] = [_number(v, index, k) for k, v in zip(FEATURES, values, strict=True)]
    return Batch(times=times, machines=machines, rows=rows, ignored=ignored, untimed=untimed)


def _json(data: bytes) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    # The standard parser gives the precise message, and reads the NaN/Infinity literals that
    # Python senders emit, so those are refused as non-finite values naming their field.
    try:
        return json.loads(data)
    except RecursionError:
        raise InvalidJSON("the JSON body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidJSON(f"the body is not valid JSON: {exc}") from None


def parse_json(data: bytes, received: str | None, machine: str | None = None) -> Batch:
    body = _json(data)
    if isinstance(body, dict):
        return from_objects([body], received=received, machine=machine)
    if isinstance(body, list):
        return from_objects(body, received=received, machine=machine)
    raise InvalidReading("the body must be a JSON object (one reading) or an array of objects", row=None, field=None)


def parse_ndjson(data: bytes, received: str | None) -> Batch:
    objects = []
    for number, line in enumerate(data.splitlines()):
        if not line.strip():
            continue
        try:
            objects.append(_json(line))
        except InvalidJSON as exc:
            raise InvalidJSON(f"row {len(objects)} (line {number + 1}): {exc.message}", row=len(objects)) from None
    return from_objects(objects, received=received)


def parse_csv(data: bytes, received: str | None) -> Batch:
    """data.csv's format; its fault columns are the measured labels, so they are skipped silently."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the CSV body is not UTF-8: {exc}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise BadRequest("the CSV body is empty") from None
    except csv.Error as exc:
        raise BadRequest(f"the CSV body is malformed: {exc}") from None
    header = [h.strip() for h in header]
    missing = [key for key in FEATURES if key not in header]
    if missing:
        raise InvalidReading(f"CSV header lacks column {missing[0]!r}", row=None, field=missing[0], missing=missing)
    objects: list[dict[str, str]] = []
    try:
        for line in reader:
            if not line or all(not cell.strip() for cell in line):
                continue
            if len(line) != len(header):
                raise InvalidReading(f"row {len(objects)}: {len(line)} cells for {len(header)} columns",
                                     row=len(objects), field=None)
            obj: dict = dict(zip(header, line, strict=False))
            if obj.get(TIME_KEY, "").strip() == "":
                obj.pop(TIME_KEY, None)
            objects.append(obj)
    except csv.Error as exc:
        raise BadRequest(f"the CSV body is malformed at row {len(objects)}: {exc}") from None
    return from_objects(objects, received=received, ignore=frozenset(FAULTS))


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def count_elements(media: str, data: bytes) -> int:
    """An upper bound on the readings in `data`, without parsing it.

    Why: a parser materialises everything first, and `[{},{},...]` in 8 MiB is 2.8 million dicts
    (16 such bodies at once took 4.5 GB). JSON and NDJSON: every reading is an object, so the
    number of objects and arrays bounds it; braces inside strings are only counted out when the
    quick count is over (two C-speed byte counts on the common path). CSV: the lines."""
    if media in CSV_TYPES:
        return data.count(b"\n") + 1
    return data.count(b"{") + data.count(b"[")


def _over(media: str, data: bytes, limit: int) -> int | None:
    """The element count if it is over `limit` once strings are ignored, else None."""
    n = count_elements(media, data)
    if n <= limit + 1:  # + 1: the array around a JSON batch
        return None
    if media in CSV_TYPES:
        try:
            n = sum(1 for line in csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
                    if line and any(cell.strip() for cell in line)) - 1  # the header
        except (UnicodeDecodeError, csv.Error):
            return None  # parse_csv names the problem
        return n if n > limit else None
    stripped = _STRING.sub(b'""', data) if b'"' in data else data
    n = stripped.count(b"{") + stripped.count(b"[") - (stripped.lstrip()[:1] == b"[")
    return n if n > limit else None


def parse(content_type: str | None, data: bytes, received: str | None = None,
          max_rows: int | None = None, machine: str | None = None) -> Batch:
    """Dispatch on the media type; a missing type is read as JSON (HTTP requires one, see ingest_routes).
    With `max_rows`, a body holding more is refused before it is parsed. `machine` (JSON only):
    the name for readings without one."""
    media = (content_type or "application/json").split(";")[0].strip().lower()
    if max_rows is not None and media in ACCEPTED_TYPES:
        n = _over(media, data, max_rows)
        if n is not None:
            what = "CSV rows" if media in CSV_TYPES else "JSON objects and arrays"
            raise PayloadTooLarge(f"{n} readings exceed the limit of {max_rows} per request (counted as {what} "
                                  "before parsing; nothing was stored)", limit=max_rows)
    if media in JSON_TYPES:
        return parse_json(data, received, machine)
    if media in NDJSON_TYPES:
        return parse_ndjson(data, received)
    if media in CSV_TYPES:
        return parse_csv(data, received)
    raise UnsupportedMediaType(
        f"content type {media!r} is not accepted; send application/json, application/x-ndjson or text/csv "
        "(with curl: -H 'Content-Type: application/json')",
        accepted=sorted(ACCEPTED_TYPES),
    )
