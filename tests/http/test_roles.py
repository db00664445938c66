"""Named tokens and roles: `fdedge token` on the appliance's own file, each role against the
routes of edge.http.roles' table, a sensor limited to its machines, a revoke seen within a second."""

from __future__ import annotations

import sqlite3
import time

from edge.http import roles
from edge.token_cli import main as token_cli
from tests.harness import reading


def add(capsys, db, name, role, *extra) -> str:
    assert token_cli(["--db", str(db), "add", "--name", name, "--role", role, *extra]) == 0
    return capsys.readouterr().out.strip()


def test_each_role_may_do_what_the_table_says(make_client, settings, capsys):
    client = make_client(token="shared-in", read_token="shared-read", admin_token="shared-admin")
    secrets = {role: add(capsys, settings.db_path, role, role) for role in ("sensor", "viewer", "operator", "admin")}
    secrets[roles.SHARED_SENSOR], secrets[roles.SHARED_VIEWER] = "shared-in", "shared-read"
    secrets[roles.SHARED_ADMIN] = "shared-admin"
    requests = [("POST", "/send", reading(0)), ("GET", "/api/latest", None),
                ("POST", "/api/alarms/1/ack", {"by": "x"}), ("POST", "/api/labels", {}), ("POST", "/api/models", {})]
    for role, secret in secrets.items():
        for method, path, body in requests:
            r = client.request(method, path, json=body, headers={"Authorization": f"Bearer {secret}"})
            if roles.needed(method, path) in roles.ROLES[role]:
                assert r.status_code not in (401, 403), (role, method, path, r.text)
            else:
                assert r.status_code == 403 and r.json()["reason"] == "role", (role, method, path, r.text)
        assert client.get("/api/latest").status_code == 401
    assert token_cli(["--db", str(settings.db_path), "list"]) == 0
    listing = capsys.readouterr().out
    assert "operator" in listing and not any(s in listing for s in secrets.values())


def test_a_sensor_token_sends_only_for_its_machines_and_a_revoke_takes_effect(make_client, settings, capsys):
    client = make_client()
    assert client.post("/send", json=reading(0)).status_code == 200  # open: no token anywhere
    secret = add(capsys, settings.db_path, "press 3", "sensor", "--machines", "press-3")
    time.sleep(0.6)
    auth = {"Authorization": f"Bearer {secret}"}
    assert client.post("/send", json=reading(1)).status_code == 401  # a named token now guards ingest
    assert client.post("/send", json=reading(1, machine="press-3"), headers=auth).status_code == 200
    r = client.post("/send", json=[reading(2, machine="press-3"), reading(3, machine="press-4")], headers=auth)
    assert r.status_code == 403 and r.json()["machine"] == "press-4" and "press-4" in r.json()["message"]
    with sqlite3.connect(settings.db_path) as conn:  # nothing of the refused batch stored
        assert conn.execute("SELECT count(*) FROM sensor_data").fetchone()[0] == 2
    assert token_cli(["--db", str(settings.db_path), "revoke", "press 3"]) == 0
    deadline = time.monotonic() + 1.0
    while client.post("/send", json=reading(4, machine="press-3"), headers=auth).status_code != 401:
        assert time.monotonic() < deadline, "the revoke was not seen within a second"
        time.sleep(0.05)


def test_the_operator_login_cookie_acks_only_from_this_site(make_client, settings, capsys):
    client = make_client(token="shared-in")
    operator = add(capsys, settings.db_path, "shift A", "operator")
    viewer = add(capsys, settings.db_path, "wall", "viewer")
    host = {"Origin": "http://testserver"}
    client.cookies.set("fdedge_token", operator)
    assert client.post("/api/alarms/1/ack", json={"by": "x"}, headers=host).status_code == 404  # past auth
    assert client.post("/api/alarms/1/ack", json={"by": "x"}).status_code == 401  # no Origin: no cookie write
    assert client.post("/send", json=reading(0), headers=host).status_code == 401  # ingest takes the header
    client.cookies.set("fdedge_token", viewer)
    assert client.post("/api/alarms/1/ack", json={"by": "x"}, headers=host).status_code == 403


def test_docs_api_carries_the_role_table():
    """docs/API.md is what operators read; it must say what edge.http.roles enforces."""
    from pathlib import Path
    docs = (Path(__file__).parents[2] / "docs" / "API.md").read_text()
    assert roles.table_markdown() in docs


def _requests_of(app):
    """(method, path) for every route of the app, path parameters filled with 1."""
    from starlette.routing import Mount, Route
    out = []
    for route in app.routes:
        if isinstance(route, Mount):
            out.append(("GET", route.path + "/app.css"))
        elif isinstance(route, Route):
            path = route.path.replace("{alarm_id:int}", "1").replace("{label_id:int}", "1").replace(
                "{version}", "00000000deadbeef")
            assert "{" not in path, f"fill the parameter of {route.path} here"
            out += [(m, path) for m in sorted(route.methods or {"GET"}) if m != "HEAD"]
    return out + [("POST", "/api/models"), ("DELETE", "/api/unknown")]


def test_every_route_with_every_role(make_client, settings, capsys):
    """allowed -> neither 401 nor 403; denied -> 403 naming the role; no token -> 401 unless open."""
    client = make_client(token="shared-in", read_token="shared-read", admin_token="shared-admin")
    secrets = {role: add(capsys, settings.db_path, role, role) for role in ("sensor", "viewer", "operator", "admin")}
    secrets[roles.SHARED_SENSOR], secrets[roles.SHARED_VIEWER] = "shared-in", "shared-read"
    secrets[roles.SHARED_ADMIN] = "shared-admin"
    requests = _requests_of(client.app)
    assert len(requests) >= 20
    walked = 0
    for method, path in requests:
        if path == "/events":
            continue  # a stream that does not end; its access is the same "read" as /api/latest
        need = roles.needed(method, path)
        anonymous = client.request(method, path, json={})
        assert (anonymous.status_code == 401) == (need is not None), (method, path, anonymous.status_code)
        for role, secret in secrets.items():
            r = client.request(method, path, json={}, headers={"Authorization": f"Bearer {secret}"})
            if need is None or need in roles.ROLES[role]:
                assert r.status_code not in (401, 403), (role, method, path, r.status_code, r.text)
            else:
                assert r.status_code == 403 and r.json()["reason"] == "role", (role, method, path, r.text)
            walked += 1
    assert walked >= 7 * 20
