"""The SSE wire: a reading's JSON in each event shape, and the frames around it.

The live stream (the hub, encoding each commit once per shape) and the database catch-up (the
subscriber, encoding stored rows) both build frames here, so a reconnecting page gets the same
bytes either way. Frames are byte-identical to sse_starlette's `ServerSentEvent.encode()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from edge.fdrest import FAULTS, FEATURES, iso
from edge.scoring.quality import as_json

# The shapes of a reading in GET /events (`?shape=`): "objects" is the reading object above,
# "arrays" names nothing per reading, `{"id", "time", "machine", "x": [35 features], "y": [8 faults]}`
# in FD-REST order (edge.fdrest.FEATURES, FAULTS), which the stream's hello event lists.
SHAPES: tuple[str, ...] = ("objects", "arrays")  # the first is the default


Quality = Sequence[Any]  # (status, score, reasons) as stored: edge.store.schema.QUALITY_COLUMNS
UNKNOWN_QUALITY: Quality = (None, None, None)


def reading_json(shape: str, id_: int, time: str | None, machine: str, x: Sequence[float | None],
                 y: Sequence[float | None], quality: Quality = UNKNOWN_QUALITY,
                 model_version: str | None = None) -> bytes:
    """A reading in `shape` as JSON bytes; `time` already ISO 8601 (see `iso`), x and y the stored
    values in FD-REST order (lists or tuples), `quality` its stored verdict (both shapes carry the
    same `quality` object: edge.scoring.quality.as_json), `model_version` the store version that scored it."""
    if shape == "arrays":
        return orjson.dumps({"id": id_, "time": time, "machine": machine, "x": x, "y": y,
                             "model_version": model_version, "quality": as_json(*quality)})
    return orjson.dumps({"id": id_, "time": time, "machine": machine,
                         "features": dict(zip(FEATURES, x, strict=True)),
                         "faults": dict(zip(FAULTS, y, strict=True)), "model_version": model_version,
                         "quality": as_json(*quality)})


def row_json(shape: str, row: Sequence) -> bytes:
    """A stored row in edge.store.schema.SELECT_LIST order as `reading_json`: the same bytes the live stream sends."""
    return reading_json(shape, row[0], iso(row[1]), row[2], row[3:38], row[38:46], row[47:50], row[46])



SEP = b"\r\n"  # sse_starlette's separator: frames built here are byte-identical to ServerSentEvent's


def frame(event: str, data: bytes | str, id_: int | None = None) -> bytes:
    """One SSE frame, as ServerSentEvent(data=..., event=..., id=...).encode() writes it.

    `data` with a line break is split into several `data:` lines as the SSE format requires;
    orjson's output never has one, so readings take `reading_frame`'s direct path."""
    if isinstance(data, str):
        data = data.encode()
    head = (b"id: %d\r\nevent: " % id_ if id_ is not None else b"event: ") + event.encode() + SEP
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return head + b"".join(b"data: " + line + SEP for line in lines) + SEP
    return head + b"data: " + data + SEP + SEP


def reading_wire(id_: int, data: bytes) -> bytes:
    """A reading event around its JSON (orjson's, which never has a line break, so it goes into
    one data line as it is). The live stream and the database catch-up both frame readings here."""
    return b"id: %d\r\nevent: reading\r\ndata: %b\r\n\r\n" % (id_, data)


def reading_frame(shape: str, id_: int, time: str | None, machine: str, x: Sequence[float | None],
                  y: Sequence[float | None], quality: Quality = UNKNOWN_QUALITY,
                  model_version: str | None = None) -> bytes:
    """A reading's frame in `shape` (`time` ISO 8601)."""
    return reading_wire(id_, reading_json(shape, id_, time, machine, x, y, quality, model_version))
