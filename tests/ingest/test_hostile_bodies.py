"""Bodies just under --max-body-bytes built to explode when parsed (`[{},{},...]`, NDJSON of `{}`,
CSV of short rows): refused before they are materialised, and the memory handed back."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from edge.errors import PayloadTooLarge
from edge.fdrest import FEATURES
from edge.ingest.bodies import parse
from tests.harness import reading
from tests.reliability_helpers import post, rss_mb, wait_for

REPORT_SECTION = "hostile"
MAX_BODY = 8 * 1024 * 1024


def hostile(kind: str, size: int = MAX_BODY - 16) -> tuple[bytes, str]:
    if kind == "json-objects":
        return b"[" + b"{}," * ((size - 2) // 3) + b"{}]", "application/json"
    if kind == "json-arrays":
        return b"[" + b"[]," * ((size - 2) // 3) + b"[]]", "application/json"
    if kind == "ndjson":
        return b"{}\n" * (size // 3), "application/x-ndjson"
    header = ",".join(FEATURES).encode() + b"\n"
    row = b"1" + b",1" * 34 + b"\n"
    return header + row * ((size - len(header)) // len(row)), "text/csv"


KINDS = ["json-objects", "json-arrays", "ndjson", "csv"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_body_with_more_elements_than_the_row_limit_is_refused_before_parsing(kind):
    data, ctype = hostile(kind, 2 * 1024 * 1024)
    with pytest.raises(PayloadTooLarge) as caught:
        parse(ctype, data, max_rows=10_000)
    assert "readings exceed the limit of 10000 per request (counted as" in caught.value.message


def test_braces_inside_strings_do_not_count():
    import json
    batch = [reading(i, machine="{[pump]}" * 5) for i in range(30)]
    assert len(parse("application/json", json.dumps(batch).encode(), max_rows=30)) == 30
    with pytest.raises(PayloadTooLarge):
        parse("application/json", json.dumps(batch).encode(), max_rows=29)


def test_sixteen_concurrent_hostile_bodies_leave_memory_where_it_was(server_factory, linear_model, report):
    server = server_factory(linear_model[0]).start()
    for i in range(5):  # warm-up: model, thread pool, a large parse
        assert post(server.port, [reading(k) for k in range(1000)]).status == 200
    before = rss_mb(server.proc.pid)
    bodies = [hostile(KINDS[i % len(KINDS)]) for i in range(16)]
    peak = [before]
    done = False

    def sample() -> None:
        while not done:
            peak[0] = max(peak[0], rss_mb(server.proc.pid))
            time.sleep(0.02)

    with ThreadPoolExecutor(17) as pool:
        sampler = pool.submit(sample)
        answers = list(pool.map(lambda b: post(server.port, b[0], content_type=b[1], timeout=120), bodies))
        done = True
        sampler.result()
    assert all(a.status == 413 for a in answers), [(a.status, a.text[:100]) for a in answers]
    grew = peak[0] - before
    assert grew < 256, f"RSS grew by {grew:.0f} MB for 16 hostile bodies"
    wait_for(lambda: rss_mb(server.proc.pid) < before + 30, 30, "RSS to come back within 30 MB")
    after = rss_mb(server.proc.pid)
    assert post(server.port, reading(1)).status == 200
    report.put("hostile", "hostile_bodies", f"16 concurrent 8 MiB bodies built to explode (`[{{}},...]`, `[[],...]`, "
                                            f"NDJSON `{{}}`, CSV of short rows): all 413 before parsing; RSS "
                                            f"{before:.0f} MB -> peak {peak[0]:.0f} MB -> {after:.0f} MB")
