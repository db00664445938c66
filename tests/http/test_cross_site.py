"""Writes a web page on another site could make through an operator's browser are refused: a
"simple" cross-site POST (no Content-Type, text/plain, a form) and any foreign Origin."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.harness import reading

REPORT_SECTION = "hostile"
EVIL = "http://evil.example"


def _stored(settings) -> int:
    with sqlite3.connect(settings.db_path) as conn:
        return conn.execute("SELECT count(*) FROM sensor_data").fetchone()[0]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_ingest_needs_a_data_content_type(client, settings, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    if content_type is None:
        headers = {"Content-Type": ""}  # the test client would add one; an empty header is dropped below
    r = client.post("/send", content=json.dumps(reading(1)),
                    headers={k: v for k, v in headers.items() if v})
    assert r.status_code == 415, r.text
    assert "Content-Type" in r.json()["message"] or "content type" in r.json()["message"]
    assert _stored(settings) == 0


@pytest.mark.parametrize("origin", [EVIL, "null", "http://testserver.evil.example", "file://", "http://testserver:1"])
def test_a_foreign_origin_cannot_write(client, settings, origin):
    r = client.post("/send", json=reading(1), headers={"Origin": origin})
    assert r.status_code == 403 and r.json()["reason"] == "cross_origin" and r.json()["field"] == "Origin", r.text
    ack = client.post("/api/alarms/1/ack", json={"by": "x"}, headers={"Origin": origin})
    assert ack.status_code == 403, ack.text
    assert _stored(settings) == 0


@pytest.mark.parametrize("origin", [None, "http://testserver", "https://testserver", "HTTP://TESTSERVER"])
def test_sensors_and_the_appliances_own_pages_can_write(client, settings, origin):
    headers = {"Origin": origin} if origin else {}
    assert client.post("/send", json=reading(1), headers=headers).status_code == 200
    # no such alarm: the 404 shows the ack got past the origin and type checks
    assert client.post("/api/alarms/1/ack", json={"by": "x"}, headers=headers).status_code == 404


def test_a_listed_origin_can_write(make_client):
    client = make_client(allowed_origins=frozenset({"https://scada.plant.local:443"}))
    assert client.post("/send", json=reading(1), headers={"Origin": "https://scada.plant.local"}).status_code == 200
    assert client.post("/send", json=reading(1), headers={"Origin": "https://other.plant.local"}).status_code == 403


def test_an_ack_must_be_json(client):
    for ctype in ("text/plain", "application/x-www-form-urlencoded"):
        r = client.post("/api/alarms/1/ack", content=b'{"by": "x"}', headers={"Content-Type": ctype})
        assert r.status_code == 415, r.text


def test_what_a_browsers_no_cors_fetch_sends_is_refused_on_the_real_server(server_factory, linear_model, report):
    """The exact request of `fetch(url, {method: "POST", mode: "no-cors", body})` from evil.example."""
    import socket
    server = server_factory(linear_model[0]).start()
    body = json.dumps(reading(1)).encode()
    answers = []
    for extra in (b"", b"Content-Type: text/plain;charset=UTF-8\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"POST /send HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nOrigin: http://evil.example\r\n%s"
                      b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (server.port, extra, len(body), body))
            answers.append(s.recv(65536).split(b"\r\n", 1)[0])
    assert answers == [b"HTTP/1.1 403 Forbidden"] * 2, answers
    report.put("hostile", "cross_site", "a no-cors POST /send from http://evil.example (no type, text/plain): 403 "
                                        "`cross_origin`; without Origin, no Content-Type: 415; text/plain ack: 415")
