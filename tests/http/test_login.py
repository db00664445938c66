"""POST /login exchanges a token for an HttpOnly, SameSite=Strict cookie, so people do not paste a
secret into every request and no script on the page can read it; POST /logout ends it."""

from __future__ import annotations

ORIGIN = {"Origin": "http://testserver"}


def test_a_valid_token_becomes_an_httponly_strict_cookie_that_reads(make_client):
    client = make_client(read_token="viewer-secret")
    assert client.get("/api/latest").status_code == 401
    r = client.post("/login", json={"token": "viewer-secret"}, headers=ORIGIN)
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "viewer (shared --read-token)"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("fdedge_token=viewer-secret;")
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/" in cookie
    assert client.get("/api/latest").status_code == 200  # the cookie reads
    out = client.post("/logout", headers=ORIGIN)
    assert out.status_code == 200 and "Max-Age=0" in out.headers["set-cookie"]
    client.cookies.clear()
    assert client.get("/api/latest").status_code == 401


def test_a_wrong_token_sets_nothing_and_says_so(make_client):
    client = make_client(read_token="viewer-secret")
    r = client.post("/login", json={"token": "wrong"}, headers=ORIGIN)
    assert r.status_code == 401 and "set-cookie" not in r.headers
    assert "not accepted" in r.json()["message"]
    for body in ({}, {"token": ""}, {"token": 5}, {"token": "a" * 5000}):
        bad = client.post("/login", json=body, headers=ORIGIN)
        assert bad.status_code in (400, 413) and "set-cookie" not in bad.headers, (body, bad.text)


def test_another_site_cannot_log_a_browser_in(make_client):
    client = make_client(read_token="viewer-secret")
    r = client.post("/login", json={"token": "viewer-secret"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers
