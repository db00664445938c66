"""schemathesis 4 against the app's own /openapi.json: every operation, positive and negative
data, no 5xx, and answers that conform to the schema (status codes, content types, bodies).

The schema is loaded from the ASGI app in a module fixture (schemathesis.openapi.from_asgi), so
nothing starts at import time; schemathesis runs the app's lifespan on its own event loop and
stops it when the module is done. Each operation's cases come from `APIOperation.as_strategy` in
both generation modes under plain hypothesis: schemathesis.pytest.from_fixture does not work with
pytest 9 (it sets the private `Function._nodeid`). The operations are listed from edge.http.openapi
itself, so a new route in the schema is fuzzed without touching this file. Examples per operation
and mode are bounded to keep `make test` fast.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from edge.http import openapi
from tests.harness import reading

REPORT_SECTION = "bad_input"

EXAMPLES = 30
STREAM_TIMEOUT = 1  # /events never ends: schemathesis keeps what arrived before this


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, linear_model):
    from schemathesis.python import asgi

    from edge.http.app import create_app
    from edge.settings import Settings
    settings = Settings(data_dir=tmp_path_factory.mktemp("schemathesis"), model_dir=linear_model[0],
                        retention_interval=3600)
    app = create_app(settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # some data, so exports and series have something to find
    client = asgi.get_client(app)
    rows = [reading(i, Time=f"2024-01-0{1 + i % 3} 12:00:{i:02d}", machine=f"m{i % 2}") for i in range(30)]
    assert client.post("http://testserver/send", json=rows).status_code == 200
    yield schema
    asgi.shutdown_lifespans()


OPERATIONS = [(method.upper(), path) for path, methods in openapi.build("x")["paths"].items() for method in methods]
# Whether the schema is precise enough that every schema-valid request succeeds and every
# schema-violating one is refused (empty query values count as absent, the last of repeated
# parameters wins, CSV/NDJSON bodies are "any string", end before start...) is a question about
# the schema, not about robustness: those two checks are left out.
EXCLUDED_CHECKS = [checks.positive_data_acceptance, checks.negative_data_rejection]
STREAMS = {"/events"}  # never end: few examples, each cut short by the timeout


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_conforms_and_never_answers_5xx(api_schema, report, method, path, mode):
    operation = api_schema[path][method]
    stream = path in STREAMS

    @settings(max_examples=3 if stream else EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        response = case.call(timeout=STREAM_TIMEOUT if stream else 30)
        report.add("bad_input", "schemathesis_cases")
        assert response.status_code < 500, f"{method} {case.formatted_path}: {response.text[:300]}"
        case.validate_response(response, excluded_checks=EXCLUDED_CHECKS)

    try:
        run()
    except Unsatisfiable:
        pytest.skip(f"{method} {path} takes no input to violate")
    report.note("bad_input", "schemathesis_ops", f"{method} {path}")
    report.put("bad_input", "schemathesis_operations", len(report.section("bad_input")["schemathesis_ops"]))
