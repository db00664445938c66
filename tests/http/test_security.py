"""No one gets in where they do not belong.

- every route of the app (enumerated from `app.routes`, so a new route is covered the day it is
  added) refuses requests without the right token: no token, a wrong one, a malformed header, the
  read token for a write, a cookie for a write; the open paths are the ones docs/API.md lists;
- tokens are compared with hmac.compare_digest and never appear in a debug + access log;
- no SQL text is built from input: injection payloads on every query parameter of every route,
  with every statement the app runs traced; plus a static scan of every `execute(` in edge/;
- exported CSV cells cannot run as spreadsheet formulas;
- request size limits hold on the real server, a request head over 64 KiB included (431, before
  it is buffered); no CORS header; pages carry a CSP; static files cannot be used to climb out of
  web/static.
"""

from __future__ import annotations

import ast
import csv
import http.client
import io
import json
import sqlite3
from pathlib import Path

import pytest
from starlette.routing import Mount, Route

from edge.http.head_limit import MAX_HEAD_BYTES
from tests.harness import BUNDLED, REPO, SSE, Server, first_event, reading
from tests.reliability_helpers import count_rows, get, open_socket, post, read_response, request, rss_mb

REPORT_SECTION = "security"

INGEST = "ingest-Secr3t-4f9c2a"
READ = "read-Secr3t-7b1d0e"
WRONG = "wrong-Secr3t-000000"
ADMIN = "admin-Secr3t-9e3a51"
# docs/API.md: "HTML pages and static files are always served; they hold no data", plus health,
# readiness, the schema and the model manifest. Anything else needs a token.
OPEN_PATHS = {"/", "/report", "/dashboard", "/machines", "/alarms", "/models", "/login", "/healthz", "/readyz", "/openapi.json", "/api/model"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


# -- helpers ----------------------------------------------------------------------------------------

def model_dir(linear_model) -> Path:
    return BUNDLED if (BUNDLED / "manifest.json").exists() else linear_model[0]


@pytest.fixture
def guarded(make_client):
    """An app with the three shared tokens set, through Starlette's test client."""
    return make_client(token=INGEST, read_token=READ, admin_token=ADMIN, raise_server_exceptions=False)


def concrete_paths(app) -> list[tuple[str, set[str]]]:
    """(path, methods) for every route, path parameters filled in; a mount is probed with a real file."""
    out = []
    for route in app.routes:
        if isinstance(route, Mount):
            directory = Path(route.app.directory)
            some_file = next(p for p in sorted(directory.rglob("*")) if p.is_file())
            out.append((f"{route.path}/{some_file.relative_to(directory).as_posix()}", {"GET", "HEAD"}))
        elif isinstance(route, Route):
            path = route.path
            for name in route.param_convertors:
                path = path.replace("{" + name + ":int}", "1").replace("{" + name + "}", "1")
            out.append((path, set(route.methods or {"GET", "HEAD"})))
        else:
            raise AssertionError(f"{route!r} is neither an HTTP route nor a mount: decide its access and cover it here")
    return out


def needs(method: str, path: str) -> str:
    if path in ("/login", "/logout"):
        return "open"  # the token in the body is the credential (docs/API.md, Logging in)
    if path == "/api/models" or path.startswith("/api/models/"):
        return "admin"  # model management (docs/API.md): the admin token only, any method
    if method not in SAFE_METHODS:
        return "ingest"
    if path in OPEN_PATHS or path.startswith("/static/"):
        return "open"
    return "read"


def call(client, method: str, path: str, headers: dict | None = None, cookies: dict | None = None):
    client.cookies.clear()
    for k, v in (cookies or {}).items():
        client.cookies.set(k, v)
    kwargs = {"headers": headers or {}}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = reading(0)
    if path.startswith("/events") and method == "GET":
        method = "HEAD"  # the stream would never end; HEAD goes through the same access check
    r = client.request(method, path, **kwargs)
    client.cookies.clear()
    return r


# -- access -----------------------------------------------------------------------------------------

def test_every_route_and_method_refuses_requests_without_the_right_token(guarded, report):
    routes = concrete_paths(guarded.app)
    assert any(p == "/send" for p, _ in routes) and any(p == "/events" for p, _ in routes)
    refused = 0
    bad_credentials = [
        ({}, None, "no token"),
        ({"Authorization": f"Bearer {WRONG}"}, None, "wrong token"),
        ({"Authorization": f"Bearer {INGEST[:-1]}"}, None, "prefix of the token"),
        ({"Authorization": f"Bearer {INGEST}x"}, None, "token plus a character"),
        ({"Authorization": f"Basic {INGEST}"}, None, "wrong scheme"),
        ({"Authorization": "Bearer"}, None, "empty bearer"),
        ({"Authorization": INGEST}, None, "token without scheme"),
        ({}, {"fdedge_token": WRONG}, "wrong cookie"),
        ({}, {"other": INGEST}, "token in another cookie"),
    ]
    for path, methods in routes:
        for method in ALL_METHODS:
            need = needs(method, path)
            if need == "open":
                r = call(guarded, method, path)
                assert r.status_code != 401, f"{method} {path} is documented open, got 401"
                continue
            for headers, cookies, what in bad_credentials:
                r = call(guarded, method, path, headers, cookies)
                assert r.status_code == 401, f"{method} {path} with {what}: {r.status_code}"
                assert r.headers["www-authenticate"].startswith("Bearer")
                if r.request.method != "HEAD":
                    assert r.json()["error"] == "unauthorized"
                    assert INGEST not in r.text and READ not in r.text
                refused += 1
            if need == "admin":
                for headers, cookies, what in [({"Authorization": f"Bearer {READ}"}, None, "the read token"),
                                               ({"Authorization": f"Bearer {INGEST}"}, None, "the ingest token"),
                                               ({}, {"fdedge_token": ADMIN}, "the admin token as a cookie")]:
                    r = call(guarded, method, path, headers, cookies)
                    want = 401 if cookies else 403
                    assert r.status_code == want, f"{method} {path} with {what}: {r.status_code}"
                    refused += 1
                r = call(guarded, method, path, {"Authorization": f"Bearer {ADMIN}"})
                assert r.status_code not in (401, 403), f"{method} {path} refused the admin token"
            elif need == "ingest":
                for headers, cookies, what in [({"Authorization": f"Bearer {READ}"}, None, "the read token"),
                                               ({}, {"fdedge_token": READ}, "the read cookie"),
                                               ({}, {"fdedge_token": INGEST}, "the ingest token as a cookie")]:
                    r = call(guarded, method, path, headers, cookies)
                    # a valid token of a role without the permission: 403 (edge.http.roles); cookies: 401
                    want = 403 if what == "the read token" else 401
                    assert r.status_code == want, f"{method} {path} with {what}: {r.status_code}"
                    refused += 1
                r = call(guarded, method, path, {"Authorization": f"Bearer {INGEST}"})
                assert r.status_code != 401, f"{method} {path} refused the ingest token"
            else:
                for headers, cookies, what in [({"Authorization": f"Bearer {READ}"}, None, "the read token"),
                                               ({"Authorization": f"bearer  {READ} "}, None, "the read token, lax"),
                                               ({"Authorization": f"Bearer {INGEST}"}, None, "the ingest token"),
                                               ({}, {"fdedge_token": READ}, "the read cookie")]:
                    r = call(guarded, method, path, headers, cookies)
                    assert r.status_code != 401, f"{method} {path} refused {what}"
                    if method == "GET" and path.startswith("/events"):  # call() sent HEAD: open the stream too
                        cookie = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}
                        stream = SSE(guarded, path, {**headers, **cookie}, want=first_event, timeout=5)
                        stream.result()
                        assert stream.status == 200 and stream.events[0]["event"] == "hello", \
                            f"GET {path} with {what}: {stream.status} {stream.body[:200]!r}"
    report.put("security", "routes", len(routes))
    report.put("security", "refusals", refused)
    report.put("security", "open_paths", sorted(OPEN_PATHS | {"/static/*"}))


def test_with_only_the_ingest_token_reads_are_open_and_writes_are_not(make_client):
    with make_client(token=INGEST) as client:
        assert client.post("/send", json=reading(0)).status_code == 401
        assert client.post("/send", json=reading(0), headers={"Authorization": f"Bearer {INGEST}"}).status_code == 200
        assert client.get("/api/latest").status_code == 200


def test_tokens_are_compared_in_constant_time(guarded, monkeypatch, report):
    import hmac

    from edge.http import auth
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for token in (WRONG, INGEST[:-1], INGEST[:1], "x" * 500, READ):
        before = len(calls)
        r = guarded.post("/send", json=reading(0), headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == (403 if token == READ else 401)  # the read token is valid, its role may not ingest
        assert len(calls) > before, "the ingest token was checked without hmac.compare_digest"
    assert guarded.get("/api/latest", headers={"Authorization": f"Bearer {READ}"}).status_code == 200
    assert any(b == READ.encode() for _, b in calls)
    # and no plain comparison of a token anywhere in edge/http/auth.py
    tree = ast.parse((REPO / "edge" / "http" / "auth.py").read_text())
    plain = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Compare)
             and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in n.ops) and "token" in ast.unparse(n).lower()
             and "None" not in ast.unparse(n)]
    assert not plain, f"tokens compared with == in edge/http/auth.py: {plain}"
    report.put("security", "compare_digest_calls", len(calls))


def test_tokens_never_appear_in_the_log_even_at_debug_level(server_factory, linear_model, tmp_path, report):
    server = server_factory(model_dir(linear_model), env={"FDEDGE_TOKEN": INGEST, "FDEDGE_READ_TOKEN": READ},
                            args=["--access-log", "--log-level", "debug"]).start()
    sent = 0

    def send(method, path, headers=None, body=None, content_type=None):
        nonlocal sent
        sent += 1
        return request(server.port, method, path, body, headers, 10, content_type)

    assert send("POST", "/send", {"Authorization": f"Bearer {INGEST}"}, reading(1)).status == 200
    assert send("POST", "/send", {"Authorization": f"Bearer {WRONG}"}, reading(1)).status == 401
    assert send("POST", "/send", {"Authorization": f"Bearer {READ}"}, reading(1)).status == 403  # a viewer may not ingest
    assert send("POST", "/send", {"Authorization": f"Bearer {INGEST}"}, b"{not json", "application/json").status == 400
    assert send("POST", "/send", {"Authorization": f"Bearer {INGEST}"}, {"Level": "x"}).status == 422
    assert send("GET", "/api/latest", {"Authorization": f"Bearer {READ}"}).status == 200
    assert send("GET", "/api/latest", {"Cookie": f"fdedge_token={READ}"}).status == 200
    assert send("GET", "/api/latest", {"Cookie": f"fdedge_token={WRONG}"}).status == 401
    assert send("HEAD", "/events", {"Authorization": f"Bearer {READ}"}).status == 200
    assert send("GET", "/nope", {"Authorization": f"Bearer {READ}"}).status == 404
    metrics = send("GET", "/metrics", {"Authorization": f"Bearer {READ}"})
    for secret in (INGEST, READ, WRONG):
        assert secret not in metrics.text
    server.stop()
    log = (server.data_dir.parent / f"server-{server.port}.log").read_text(errors="replace")
    assert '"POST /send HTTP/1.1" 200' in log and '"GET /api/latest HTTP/1.1" 401' in log, "the access log was off"
    for secret in (INGEST, READ, WRONG):
        assert secret not in log, f"a token is in the log: {[l for l in log.splitlines() if secret in l][:3]}"
    # passed in the environment, the tokens are not on the command line `ps` shows everyone
    assert INGEST not in " ".join(server.proc.args)
    report.put("security", "logged_requests", sent)


# -- SQL injection ----------------------------------------------------------------------------------

INJECTIONS = ["sqlite_version()", "temperature FROM sensor_data --", "' OR '1'='1", "1 OR 1=1", "x\" OR \"1\"=\"1",
              "1); DROP TABLE sensor_data; --", "1 UNION SELECT sqlite_version(), 1 --", "load_extension('/tmp/x')",
              "fault0 >= 0 OR 1", "%", "_", "\\", "'", "\x00", "2023-11-08' OR '1'='1", "id", "rowid",
              "temperature,sqlite_version()", "(SELECT 1)", "1e999"]


class _Traces:
    """Records the text of every statement (the template, never the bound values)."""

    statements: list[str] = []

    def execute(self, sql, *args, **kwargs):
        _Traces.statements.append(sql)
        return super().execute(sql, *args, **kwargs)

    def executemany(self, sql, *args, **kwargs):
        _Traces.statements.append(sql)
        return super().executemany(sql, *args, **kwargs)


class TracingCursor(_Traces, sqlite3.Cursor):
    pass


class TracingConnection(_Traces, sqlite3.Connection):
    def executescript(self, sql, *args, **kwargs):
        _Traces.statements.append(sql)
        return super().executescript(sql, *args, **kwargs)

    def cursor(self, *args, **kwargs):
        return super().cursor(TracingCursor)


def test_no_sql_text_is_built_from_query_parameters(make_client, monkeypatch, report):
    from edge.http import openapi
    real_connect = sqlite3.connect

    def traced_connect(*args, **kwargs):
        kwargs["factory"] = TracingConnection
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", traced_connect)
    _Traces.statements = []
    version = sqlite3.sqlite_version
    spec = openapi.build("x")
    attempts = 0
    with make_client(raise_server_exceptions=False) as client:
        assert client.post("/send", json=[reading(i, Time="2023-11-08 10:00:00", machine="m1") for i in range(5)]
                           ).status_code == 200
        baseline = {"start": "2023-11-01", "end": "2023-11-30", "metric": "temperature", "metrics": "temperature"}
        for path, methods in spec["paths"].items():
            if "get" not in methods or "{" in path:
                continue
            names = [p["name"] for p in methods["get"].get("parameters", [])]
            for name in names:
                for payload in INJECTIONS:
                    params = {**{k: v for k, v in baseline.items() if k in names}, name: payload}
                    if path == "/events":
                        r = client.head(path, params=params)
                    else:
                        r = client.get(path, params=params)
                    attempts += 1
                    assert r.status_code < 500, f"{path}?{name}={payload!r}: {r.status_code} {r.text[:200]}"
                    assert version not in r.text, f"{path}?{name}={payload!r} leaked the SQLite version"
                    if name == "machine" and path in ("/api/latest", "/api/count", "/history") and r.status_code == 200:
                        assert '"m1"' not in r.text and r.json() not in ({"count": 5},), \
                            f"{path}?machine={payload!r} matched rows it should not"
        statements = list(_Traces.statements)
        assert client.get("/api/count?start=2023-11-08&end=2023-11-08").json() == {"count": 5}  # table intact
    assert statements, "no statement was traced"
    telling = [p for p in INJECTIONS if len(p) > 3 and not p.isalnum()]  # plain words may be column names
    tainted = [(p, s) for s in statements for p in telling if p in s]
    assert not tainted, f"input reached SQL text: {tainted[:3]}"
    report.put("security", "injection_requests", attempts)
    report.put("security", "sql_statements_traced", len(statements))


def test_machine_names_with_sql_are_stored_verbatim_as_values(client, settings):
    names = ["'; DROP TABLE sensor_data; --", "x') OR ('1'='1", "Robert'); --"]
    for name in names:
        assert client.post("/send", json=reading(0, machine=name)).status_code == 200
    with sqlite3.connect(settings.db_path) as conn:
        assert [r[0] for r in conn.execute("SELECT machine FROM sensor_data ORDER BY id")] == names
    assert [m["machine"] for m in client.get("/api/machines").json()["machines"]] == sorted(names)


# Every interpolation into SQL text in edge/, and why it cannot carry input. A new one fails the
# scan below until it is added here, with its reason.
SQL_INTERPOLATIONS = {
    "TABLE": "store.schema.TABLE constant",
    "CACHE_KIB": "store.database constant, an int",
    "CHANGES": "store.model_changes: table name constant",
    "_FEATURE_LIST": "reading_queries: FD-REST's column names (fdrest.COLUMNS) joined",
    "ALARMS": "alarms.tables: table name constant",
    "OUTBOX": "alarms.tables: outbox table name constant",
    "MACHINES": "store.schema: machines table name constant",
    "','.join('?' * len(chunk))": "'?' placeholders, one per name",
    "SELECT": "alarms.tables: column list constant",
    "SELECT_LIST": "store.schema: column list constant",
    "MAX_FAULT_SQL": "store.export: constant over FAULTS",
    "DEFAULT_MACHINE": "fdrest constant: the machine's column default",
    "', '.join(COLUMNS)": "fdrest constants",
    "', '.join(FAULTS)": "fdrest constants",
    "cols": "', '.join(FAULTS) in alarms.engine._replay",
    "alarm_columns_sql(TABLE)": "built from FAULTS and table constants",
    "column": "reading_queries.metric(): one of METRICS, matched by equality; schema.migrate: one of QUALITY_COLUMNS",
    "_QUALITY_TYPES[column]": "store.schema: the quality columns' constant SQL types",
    "clause": "reading_queries.machine_clause(): a constant text, the machine is bound",
    "where": "ReportFilter.where()/list_alarms: constant fragments, values bound",
    "select": "export.export_csv: the constants above and ReportFilter.where(), values bound",
    "' AND '.join(where)": "list_alarms: constant fragments, values bound",
    "aggregates": "series(): avg/max over columns from reading_queries.metric()",
    "marks": "'?' placeholders, one per key",
    "','.join('?' * len(keys))": "'?' placeholders",
    "', '.join((f'{k} = ?' for k in names))": "alarms.engine._change: keyword names of internal calls",
    "int(busy_ms)": "an int",
    "'FULL' if sync == 'full' else 'NORMAL'": "one of two constants",
    "max(int(max_mb * 1024 * 1024 // page), 1)": "an int",
    "min(VACUUM_PAGES, free - VACUUM_SLACK)": "an int",
    "table": "store.machine_state: the readings table constant its callers pass (schema.TABLE)",
    "raw_table": "store.rollups/counts: the readings table constant their callers pass (schema.TABLE)",
    "table(level)": "store.rollups.table(): one of two constant table names",
    "table('minute')": "store.rollups.table(): a constant table name",
    "table('hour')": "store.rollups.table(): a constant table name",
    "machine_state.MACHINES": "store.machine_state: machines table name constant",
    "', '.join(DATA_COLUMNS)": "fdrest constants (features and faults)",
    "_READ[level]": "store.rollups: constant column lists per level",
    "_READ['minute']": "store.rollups: a constant column list",
    "'peaks' if wanted else 'NULL'": "store.counts: one of two constant column expressions",
    "CURSOR": "plant.uplink_cursor: the cursor table's name constant",
    "QUALITY_LIST": "store.writer: the quality column names constant (schema.QUALITY_COLUMNS)",
}
SQL_NAMES = {  # statements passed as a variable or built by a call
    "DDL": "store.model_changes: its CREATE TABLE constant",
    "CREATE_TABLE": "store.schema constant", "ddl": "loop over a tuple of DDL constants",
    "CREATE_MACHINES": "store.schema constant", "UPSERT_MACHINE": "store.schema constant",
    "INSERT": "alarms.tables constant", "INSERT_OUTBOX": "alarms.tables constant",
    "insert_sql(size)": "placeholders for n rows (one of schema.chunk_sizes)", "insert_sql(len(chunk))": "placeholders for n rows",
    "sql": "a local built from the entries above",
    "CREATE.format(t=table(level))": "store.rollups constant DDL and table name",
    "_WRITE[level]": "store.rollups: constant statements per level", "_WRITE['minute']": "store.rollups constant",
    "_WRITE['hour']": "store.rollups constant",
    "ADD_PEAKS": "store.rollups constant DDL",
    "CREATE_CURSOR": "plant.uplink_cursor constant DDL",
    "LABEL_BY_ID": "store.labels constant", "LABELS_OVERLAPPING": "store.labels constant",
    "READINGS_IN_SPAN": "store.labelled_export constant",
    **dict.fromkeys(("CREATE_SHADOW", "CREATE_SHADOW_INDEX", "DELETE_SHADOW", "INSERT_SHADOW", "READINGS_AFTER",
                     "PAIRS", "NEWEST_SHADOW", "NEWEST_READING"),
                    "store.shadow_table: module constants from the table names and fdrest's columns"),
}


def test_static_scan_every_execute_in_edge_uses_parameters_or_constant_identifiers(report):
    problems, scanned = [], 0
    for path in sorted((REPO / "edge").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("execute", "executemany", "executescript") and node.args):
                continue
            scanned += 1
            sql = node.args[0]
            where = f"{path.name}:{node.lineno}"
            if isinstance(sql, ast.Constant) and isinstance(sql.value, str):
                continue
            if isinstance(sql, ast.JoinedStr):
                for part in sql.values:
                    if isinstance(part, ast.FormattedValue) and ast.unparse(part.value) not in SQL_INTERPOLATIONS:
                        problems.append(f"{where}: f-string interpolates {ast.unparse(part.value)!r}")
            elif ast.unparse(sql) not in SQL_NAMES:
                problems.append(f"{where}: SQL from {ast.unparse(sql)[:80]!r}")
    assert scanned > 20
    assert not problems, "SQL text built from something not known to be constant:\n" + "\n".join(problems)
    report.put("security", "execute_calls_scanned", scanned)


# -- CSV, limits, CORS, headers, static files -------------------------------------------------------

FORMULAS = ["=1+1", "+1", "-1", "@SUM(A1)", "=HYPERLINK(\"http://x\",\"y\")", "-2+3", "=cmd|' /C calc'!A0"]


def test_exported_cells_never_start_a_formula(client, settings, report):
    for i, name in enumerate(FORMULAS):
        assert client.post("/send", json=reading(i, Time="2023-11-08 10:00:00", machine=name)).status_code == 200
    for name in ("\t=1+1", "\r=1+1", "\n=1"):  # not printable: refused at the door
        r = client.post("/send", json=reading(0, Time="2023-11-08 10:00:00", machine=name))
        assert r.status_code == 422 and r.json()["field"] == "machine"
    # ... but a database written by something else may hold them
    with sqlite3.connect(settings.db_path) as conn:
        conn.execute("UPDATE sensor_data SET machine = ? WHERE id = 1", ("\t=1+1",))
        conn.execute("UPDATE sensor_data SET machine = ? WHERE id = 2", ("\r=1+1",))
        conn.execute("UPDATE sensor_data SET machine = ? WHERE id = 3", ("pump\r=HYPERLINK(1)",))  # a row break
    text = client.get("/generate_csv?start=2023-11-08&end=2023-11-08").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(FORMULAS), "a line break in a cell started a new row"
    assert rows[2]["machine"] == "pump\n=HYPERLINK(1)"  # one quoted cell
    for row in rows:
        for column, cell in row.items():
            if column in ("time", "machine", "alarms") and cell:
                assert cell[0] not in "=+-@\t\r", f"{column} cell {cell!r} would run as a formula"
        assert float(row["level"]) == pytest.approx(float(row["level"]))  # numbers stay numbers
    assert any(float(row[c]) < 0 for row in rows for c in ("level", "temperature"))
    report.put("security", "formula_prefixes", ["=", "+", "-", "@", "tab", "CR"])


def test_text_in_a_number_column_of_a_legacy_file_is_neutralised_too(client, settings):
    assert client.post("/send", json=reading(1, Time="2023-11-08 10:00:00")).status_code == 200
    with sqlite3.connect(settings.db_path) as conn:  # SQLite keeps text in a REAL column as text
        conn.execute("UPDATE sensor_data SET level = '=1+1' WHERE id = 1")
    rows = list(csv.DictReader(io.StringIO(client.get("/generate_csv?start=2023-11-08&end=2023-11-08").text)))
    assert rows[0]["level"] == "'=1+1"


def test_request_size_limits_hold_on_the_real_server(server_factory, linear_model, report):
    server = server_factory(model_dir(linear_model), args=["--max-body-bytes", "65536", "--max-batch-rows", "50"]).start()
    port = server.port
    big = json.dumps([reading(i) for i in range(100)]).encode()
    assert len(big) > 65536
    r = post(port, big)
    assert r.status == 413 and r.json()["limit"] == 65536
    # chunked, with no length announced: cut off while reading
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("POST", "/send")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    try:
        for start in range(0, len(big), 8192):
            chunk = big[start:start + 8192]
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except OSError:
        pass  # the server may stop reading once it answered
    resp = conn.getresponse()
    assert resp.status == 413, resp.read()
    conn.close()
    r = post(port, [reading(i) for i in range(51)])
    assert r.status == 413 and "51 readings" in r.json()["message"]
    # a 1 MB header and a 1 MB query string are refused (edge/http/head_limit.py) and do not take the
    # server down
    statuses = []
    for raw in (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
                b"GET /healthz?" + b"a=1&" * 250_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"):
        s = open_socket(port)
        try:
            s.sendall(raw)
            status, _ = read_response(s)
        except OSError:
            status = 0  # hung up on
        finally:
            s.close()
        statuses.append(status)
        assert get(port, "/healthz").status == 200
    assert statuses == [431, 431]
    assert post(port, reading(0)).status == 200
    report.put("security", "huge_header_and_query_status", statuses)
    report.note("security", "other_checks", "413 for bodies over --max-body-bytes (announced or chunked) and "
                "batches over --max-batch-rows")


def test_no_cors_headers_for_any_origin(guarded, report):
    origin = "https://evil.example"
    for path, _ in concrete_paths(guarded.app):
        for method in ("GET", "OPTIONS"):
            if path == "/events" and method == "GET":
                method = "HEAD"
            r = guarded.request(method, path, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                       "Authorization": f"Bearer {READ}"})
            allowed = {k.lower(): v for k, v in r.headers.items() if k.lower().startswith("access-control-")}
            assert not allowed, f"{method} {path} answered CORS headers {allowed}"
    report.note("security", "other_checks", "no CORS header for any origin")


def test_pages_carry_a_strict_content_security_policy(client, report):
    for page in ("/", "/report", "/dashboard", "/machines", "/models"):
        r = client.get(page)
        assert r.status_code == 200
        csp = {d.split()[0]: d.split()[1:] for d in r.headers["content-security-policy"].split(";") if d.strip()}
        assert csp["default-src"] == ["'self'"] and csp["object-src"] == ["'none'"]
        assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
        for directive, sources in csp.items():
            assert "*" not in sources and "'unsafe-eval'" not in sources, (page, directive)
            if directive in ("default-src", "script-src"):
                assert "'unsafe-inline'" not in sources, (page, directive)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    report.note("security", "other_checks", "CSP default-src 'self' without inline scripts on every page")


def test_static_files_cannot_climb_out_of_web_static_and_errors_show_no_internals(server_factory, linear_model,
                                                                                  monkeypatch, make_client, report):
    server = server_factory(model_dir(linear_model), env={"FDEDGE_TOKEN": INGEST, "FDEDGE_READ_TOKEN": READ}).start()
    for path in ("/static/../edge/http/auth.py", "/static/%2e%2e/%2e%2e/pyproject.toml", "/static/..%2f..%2fedge%2fauth.py",
                 "/static/../api/latest", "/static//etc/passwd", "/static/%2e%2e%2fsensor_data.db"):
        r = get(server.port, path)
        assert r.status in (400, 401, 404), f"{path}: {r.status}"
        assert b"hmac" not in r.body and b"[project]" not in r.body and b"readings" not in r.body, path
    r = get(server.port, "/api/latest")
    assert "server" not in r.headers, "the server announces itself"
    # an unexpected exception is a JSON 500 without a traceback (debug is off)
    from edge.store import reading_queries as queries
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals at /srv/x.py line 12")

    monkeypatch.setattr(queries, "machines", broken)
    with make_client(raise_server_exceptions=False) as client:
        r = client.get("/api/machines")
    assert r.status_code == 500 and r.json()["error"] == "internal"
    assert "Traceback" not in r.text and "secret internals" not in r.text
    report.note("security", "other_checks", "no path traversal out of /static; no Server header; 500s without internals")


def test_an_oversized_request_head_is_refused_before_it_is_buffered(server_factory, linear_model, report):
    server = server_factory(model_dir(linear_model)).start()
    before = rss_mb(server.proc.pid)
    s = open_socket(server.port)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(48):
            s.sendall(b"a" * (1 << 20))
    except OSError:
        pass  # refused and hung up on: what should happen
    finally:
        grown = rss_mb(server.proc.pid) - before
        s.close()
    assert get(server.port, "/healthz").status == 200
    assert grown < 16, f"the server buffered a 48 MB request head (+{grown:.0f} MB)"
    report.put("security", "head_flood_rss_mb", [round(before, 1), round(before + grown, 1)])
    report.note("security", "other_checks", f"431 for a request head over {MAX_HEAD_BYTES // 1024} KiB "
                f"(a 48 MB header: server RSS {before:.1f} -> {before + grown:.1f} MB)")


# -- request head limit (edge/http/head_limit.py) -------------------------------------------------------

class RawConnection:
    """A socket that reads responses one at a time (several may arrive in one recv)."""

    def __init__(self, port: int) -> None:
        self.sock = open_socket(port)
        self.buf = b""

    def _more(self) -> bytes:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return chunk

    def exchange(self, raw: bytes = b"", timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
        """Send `raw` (if any) and read one response: status, headers (lower-case names), body."""
        if raw:
            self.sock.sendall(raw)
        self.sock.settimeout(timeout)
        while b"\r\n\r\n" not in self.buf:
            if not self._more():
                raise AssertionError(f"connection closed before a response: {self.buf[:200]!r}")
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        self.buf = rest
        while len(self.buf) < length and self._more():
            pass
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split()[1]), headers, body

    def closed_by_server(self, timeout: float = 5) -> bool:
        """True once the server closed the connection (after anything still buffered)."""
        self.sock.settimeout(timeout)
        try:
            return not self.buf and self._more() == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def assert_431(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 431, (status, body[:200])
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    payload = json.loads(body)
    assert payload["error"] == "header_too_large" and payload["limit"] == MAX_HEAD_BYTES
    assert str(MAX_HEAD_BYTES) in payload["message"]


def padded_headers(total: int, line: int = 4096) -> bytes:
    """`total` bytes of X-Pad-n header lines (a browser with big cookies, a proxy adding headers)."""
    out = b""
    n = 0
    while len(out) < total:
        name = b"X-Pad-%d: " % n
        out += name + b"p" * (min(line, total - len(out)) - len(name) - 2) + b"\r\n"
        n += 1
    return out


def test_request_heads_up_to_the_limit_are_served_and_larger_ones_refused_with_431(server_factory, linear_model):
    server = server_factory(model_dir(linear_model)).start()
    port, db = server.port, server.data_dir / "sensor_data.db"
    allowed = padded_headers(32 * 1024)
    too_big = padded_headers(MAX_HEAD_BYTES + 4096)
    body = json.dumps(reading(0)).encode()

    def send(extra: bytes, keep_alive: bool = True) -> bytes:
        return (b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s%s\r\n%s"
                % (len(body), b"" if keep_alive else b"Connection: close\r\n", extra, body))

    # 32 KiB of headers: served, on one keep-alive connection (the count starts anew per request)
    c = RawConnection(port)
    for _ in range(2):
        status, headers, answer = c.exchange(send(allowed))
        assert status == 200, answer[:200]
        assert "connection" not in headers
    assert c.exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + allowed + b"\r\n")[0] == 200
    assert count_rows(db) == 2
    # ... then a head over the limit on the same connection: 431, the app never sees it, closed
    assert_431(*c.exchange(send(too_big)))
    assert c.closed_by_server()
    c.close()
    assert count_rows(db) == 2

    # a URL over the limit, complete ...
    c = RawConnection(port)
    assert_431(*c.exchange(b"GET /api/latest?" + b"a=1&" * (MAX_HEAD_BYTES // 3) + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert c.closed_by_server()
    c.close()
    # ... and still arriving: refused before its end, whether a URL or a header
    for start in (b"GET /api/latest?a=", b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: a="):
        c = RawConnection(port)
        c.sock.sendall(start)
        for _ in range(8):
            c.sock.sendall(b"b" * (32 * 1024))
        assert_431(*c.exchange())
        assert c.closed_by_server()
        c.close()
    # ... and sent in many small pieces, a header split across reads
    c = RawConnection(port)
    raw = send(too_big)
    for i in range(0, len(raw), 1000):
        c.sock.sendall(raw[i:i + 1000])
    assert_431(*c.exchange())
    c.close()
    assert count_rows(db) == 2

    # pipelined: the request before the oversized head is answered first, then the 431
    c = RawConnection(port)
    c.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + send(too_big))
    assert c.exchange()[0] == 200
    assert_431(*c.exchange())
    assert c.closed_by_server()
    c.close()

    # the server keeps serving, large-but-allowed heads included
    assert get(port, "/healthz").status == 200
    c = RawConnection(port)
    assert c.exchange(send(allowed, keep_alive=False))[0] == 200
    assert c.closed_by_server()
    c.close()
    assert count_rows(db) == 3
    assert post(port, reading(1)).status == 200
    assert "answered 431" in server.read_log()


def test_a_head_refused_behind_a_slow_pipelined_request_is_answered_after_it():
    """The 431 for a head still arriving waits for the response owed before it, and the app never
    sees the refused request (a tiny app under uvicorn with the protocol `fdedge serve` uses)."""
    import asyncio

    from edge.http.head_limit import BoundedHttpToolsProtocol

    seen: list[str] = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append(scope["path"])
        if scope["path"] == "/slow":
            await asyncio.sleep(0.5)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with Server(app=app, uvicorn={"http": BoundedHttpToolsProtocol, "log_level": "error"}) as server:
        port = server.port
        c = RawConnection(port)
        c.sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /refused HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(8):
            c.sock.sendall(b"a" * (32 * 1024))  # over the limit while /slow is still being answered
        status, _, body = c.exchange()
        assert (status, body) == (200, b"ok")
        assert_431(*c.exchange())
        assert c.closed_by_server()
        c.close()
        assert get(port, "/after").status == 200
        assert seen == ["/slow", "/after"]


def test_allowed_hosts_refuse_a_rebound_name_on_every_path(server_factory, linear_model, report):
    """DNS rebinding: a page's own name, pointed at the appliance, arrives in Host and is refused
    before any route (the POST /send shortcut included); listed names, loopback and IPv6 pass."""
    server = server_factory(model_dir(linear_model),
                            args=["--allowed-hosts", "fdedge.plant.local, 10.0.0.5, *.line3.example"]).start()
    port = server.port
    for host in ("evil.example", "evil.example:5000", "fdedge.plant.local.evil.example", "line3.example"):
        for method, path in (("GET", "/api/latest"), ("GET", "/events"), ("GET", "/"), ("POST", "/send")):
            body = reading(0) if method == "POST" else None
            r = request(port, method, path, body, headers={"Host": host})
            assert r.status == 400, (host, path, r.status)
            assert r.json()["error"] == "bad_host" and r.json()["field"] == "Host", r.json()
    db = server.data_dir / "sensor_data.db"
    assert count_rows(db) == 0
    for host in ("fdedge.plant.local", "FDEDGE.plant.local:5000", "10.0.0.5:5000", "pump.line3.example",
                 "localhost:5000", "127.0.0.1", "[::1]:5000"):
        assert request(port, "GET", "/api/latest", headers={"Host": host}).status == 200, host
    assert post(port, reading(1), headers={"Host": "fdedge.plant.local:5000"}).status == 200
    assert count_rows(db) == 1
    report.note("security", "other_checks", "with --allowed-hosts, 16 requests under rebound names (reads, events, "
                "pages, ingest) refused 400 `bad_host`; listed names, wildcards and loopback served")
