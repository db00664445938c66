"""Every query parameter of every read route, given what a careless or hostile client sends: the
answer is the data or a 4xx naming what was wrong, never a 500 (and so never a logged traceback)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.harness import reading

REPORT_SECTION = "hostile"
HOSTILE = [",", ",,", " ", "", "%00", "-1", "0", "1e999", "9" * 40, "nan", "inf", "'", '"', "%25", "a" * 5000,
           "\u0662", "2023-11-06 15+01:00", "temperature,", ",temperature", "fault9", "true", "[]", "{}"]
STREAMS = {"/events"}  # an accepted /events request streams for ever; its parameters have their own tests


@pytest.fixture
def lenient(make_client):
    client = make_client(raise_server_exceptions=False)
    assert client.post("/send", json=[reading(i) for i in range(3)]).status_code == 200
    return client


def _parameters(client) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return [(path, p["name"]) for path, ops in spec["paths"].items() if path not in STREAMS and "{" not in path
            for method, op in ops.items() if method == "get" for p in op.get("parameters", [])
            if p.get("in") == "query"]


def test_no_query_value_makes_a_read_route_fail(lenient, report):
    pairs = _parameters(lenient)
    assert len(pairs) >= 20, pairs
    failures, refused = [], 0
    for path, name in pairs:
        for value in HOSTILE:
            r = lenient.get(f"{path}?{name}={quote(value, safe='%')}")
            if r.status_code >= 500:
                failures.append((path, name, value, r.status_code, r.text[:120]))
            elif r.status_code == 400:
                refused += 1
                assert r.json()["message"], (path, name, value)
    assert not failures, failures
    report.put("hostile", "query_params", f"{len(pairs)} query parameters x {len(HOSTILE)} hostile values "
                                          f"({len(pairs) * len(HOSTILE)} requests, e.g. `metrics=,`): 0 answered 5xx, "
                                          f"{refused} refused 400 naming the value")


@pytest.mark.parametrize("value", [",", " , ", ",,,"])
def test_a_series_of_no_metrics_is_refused_naming_the_parameter(lenient, value):
    r = lenient.get(f"/api/series?metrics={quote(value)}")
    assert r.status_code == 400 and r.json()["field"] == "metrics", r.text
