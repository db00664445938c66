"""--allowed-hosts reads the Host header strictly: a value that only starts like a loopback name is
not one, and a fully qualified name with its trailing dot is the name itself."""

from __future__ import annotations

import pytest

from edge.http.hosts import split_host
from tests.harness import reading

REPORT_SECTION = "hostile"
REFUSED = ["[::1]evil.example", "localhost:5000@evil.example", "localhost@evil.example", "127.0.0.1 evil.example",
           "localhost:5000:1", "[::1", "evil.example", "localhost..", "", "localhost:99999x"]


@pytest.fixture
def guarded(make_client):
    return make_client(allowed_hosts="fdedge.plant.local, *.line2.plant.local")


@pytest.mark.parametrize("host", REFUSED)
def test_values_that_only_look_like_a_listed_name_are_refused(guarded, host):
    r = guarded.get("/api/latest", headers={"Host": host})
    assert r.status_code == 400 and r.json()["error"] == "bad_host", (host, r.text)
    assert guarded.post("/send", json=reading(1), headers={"Host": host}).status_code == 400


@pytest.mark.parametrize("host", ["fdedge.plant.local", "FDEDGE.plant.local.", "fdedge.plant.local.:5000",
                                  "pump.line2.plant.local.", "localhost", "localhost.:5000", "[::1]:5000",
                                  "127.0.0.1:5000"])
def test_listed_names_with_a_port_or_a_trailing_dot_and_loopback_pass(guarded, host):
    assert guarded.get("/api/latest", headers={"Host": host}).status_code == 200, host


def test_split_host():
    assert split_host("Name.Example.:5000") == ("name.example", 5000)
    assert split_host("[::1]:80") == ("::1", 80) and split_host("[::1]") == ("::1", None)
    assert all(split_host(h) is None for h in REFUSED if h not in ("evil.example",))


def test_the_rebinding_check_on_tricky_hosts_is_reported(report):
    report.put("hostile", "allowed_hosts", f"--allowed-hosts: {len(REFUSED)} look-alike Host values "
                                           "(`[::1]evil.example`, `localhost:5000@evil.example`, ...) refused 400; "
                                           "trailing-dot names served")
