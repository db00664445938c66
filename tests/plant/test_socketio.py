"""FD-REST's live clients: Socket.IO on the appliance's port (`--socketio`), `update_table` for every
stored reading with FD-REST's payload (what `/send` answered: a list of one fault object).

Real parts: `fdedge serve` (or the app under uvicorn in process) on a free loopback port,
python-socketio's own client (its polling transport: `websocket-client`, which its WebSocket
transport needs, is not installed), and a WebSocket client on wsproto (uvicorn's WebSocket
implementation here) speaking Engine.IO's upgrade as a browser does.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
from collections import deque
from dataclasses import replace

import pytest
import requests
import socketio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Ping, RejectConnection, Request, TextMessage

from tests.harness import reading

READ = "r3ad-t0ken"
INGEST = "1ngest-t0ken"
POLLING = "/socket.io/?EIO=4&transport=polling"


class Listener:
    """python-socketio's client, collecting `update_table` payloads."""

    def __init__(self) -> None:
        self.client = socketio.Client(reconnection=False)
        self.payloads: list[object] = []
        self.arrived = threading.Condition()
        self.disconnected = threading.Event()
        self.client.on("update_table", self._got)
        self.client.on("disconnect", lambda *_: self.disconnected.set())

    def _got(self, data: object) -> None:
        with self.arrived:
            self.payloads.append(data)
            self.arrived.notify_all()

    def connect(self, url: str, **kwargs) -> Listener:
        self.client.connect(url, transports=["polling"], wait_timeout=10, **kwargs)
        return self

    def wait_for(self, n: int, timeout: float = 10) -> list[object]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.payloads) >= n, timeout)
            return list(self.payloads)

    def close(self) -> None:
        if self.client.connected:
            self.client.disconnect()


@pytest.fixture
def listeners():
    made: list[Listener] = []

    def make() -> Listener:
        made.append(Listener())
        return made[-1]

    yield make
    for listener in made:
        listener.close()


def post(url: str, body: object, token: str | None = None) -> list[dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = requests.post(url + "/send", json=body, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


class WebSocket:
    """A blocking WebSocket client on wsproto: enough for Engine.IO's text packets."""

    def __init__(self, port: int, target: str, headers: list[tuple[str, str]] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque = deque()
        self.sock.sendall(self.ws.send(Request(host=f"127.0.0.1:{port}", target=target,
                                               extra_headers=[(k.encode(), v.encode()) for k, v in headers or []])))
        first = self._next()
        self.status = 101 if isinstance(first, AcceptConnection) else getattr(first, "status_code", None)
        if isinstance(first, RejectConnection):
            self.sock.close()

    def _next(self):
        while not self.events:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.ws.receive_data(data)
            self.events.extend(self.ws.events())
        return self.events.popleft()

    def send(self, text: str) -> None:
        self.sock.sendall(self.ws.send(Message(data=text)))

    def recv(self) -> str:
        text = ""
        while True:
            event = self._next()
            if isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                raise ConnectionError(f"closed: {event.code}")
            elif isinstance(event, TextMessage):
                text += event.data
                if event.message_finished:
                    return text

    def close(self) -> None:
        self.sock.close()


def socketio_events(packets: list[str]) -> list[list]:
    """Socket.IO EVENT packets ('42[...]') of the default namespace, decoded."""
    return [json.loads(p[2:]) for p in packets if p.startswith("42")]


# -- off by default ---------------------------------------------------------------------------------

def test_socket_io_is_not_served_unless_turned_on(server_factory, settings):
    with server_factory(settings=settings) as server:
        assert requests.get(server.url + POLLING, timeout=5).status_code == 404
        assert server.appliance.socketio is None
    assert not settings.socketio


# -- what FD-REST's clients receive -----------------------------------------------------------------

def test_every_stored_reading_arrives_as_update_table_with_fdrests_payload(server_factory, linear_model, listeners):
    server = server_factory(linear_model[0], args=["--socketio"]).start()
    first, second = listeners().connect(server.url), listeners().connect(server.url)
    single = post(server.url, reading(1))  # FD-REST's /send: one reading, answered [{fault0..fault7}]
    batch = post(server.url, [reading(2), reading(3, machine="m2"), reading(4)])
    expected = [single, *([row] for row in batch)]
    for listener in (first, second):
        got = listener.wait_for(len(expected))
        assert got == expected  # in commit order, each a list of one object, /send's own values
        assert all(list(p[0]) == [f"fault{i}" for i in range(8)] for p in got)


def test_the_websocket_upgrade_a_browser_makes_works_and_carries_the_events(server_factory, linear_model):
    server = server_factory(linear_model[0], args=["--socketio"]).start()
    http = requests.Session()
    opened = http.get(server.url + POLLING, timeout=5)
    assert opened.status_code == 200 and opened.text.startswith("0"), opened.text
    handshake = json.loads(opened.text[1:])
    assert "websocket" in handshake["upgrades"]
    sid = handshake["sid"]
    assert http.post(f"{server.url}{POLLING}&sid={sid}", data="40", timeout=5).text == "OK"
    assert http.get(f"{server.url}{POLLING}&sid={sid}", timeout=5).text.startswith("40")
    ws = WebSocket(server.port, f"/socket.io/?EIO=4&transport=websocket&sid={sid}")
    try:
        assert ws.status == 101
        ws.send("2probe")
        assert ws.recv() == "3probe"
        ws.send("5")  # upgraded: from now on everything comes over the WebSocket
        answer = post(server.url, reading(7))
        packets = []
        while not socketio_events(packets):
            packets.append(ws.recv())
        assert socketio_events(packets) == [["update_table", answer]]
    finally:
        ws.close()


def test_a_websocket_only_client_connects_directly_and_gets_every_reading_of_a_batch(server_factory, linear_model):
    server = server_factory(linear_model[0], args=["--socketio"]).start()
    ws = WebSocket(server.port, "/socket.io/?EIO=4&transport=websocket")
    try:
        assert ws.status == 101 and ws.recv().startswith("0")
        ws.send("40")
        assert ws.recv().startswith("40")
        answer = post(server.url, [reading(i) for i in range(1000)])
        packets: list[str] = []
        while len(socketio_events(packets)) < len(answer):
            packets.append(ws.recv())
        assert socketio_events(packets) == [["update_table", [row]] for row in answer]
    finally:
        ws.close()


def test_the_event_is_encoded_as_python_socketios_own_encoder_does():
    from edge.plant.socketio_bridge import EVENT, event_packet

    payload = [{f"fault{i}": 0.1 * i - 3.3 for i in range(8)}]
    own = socketio.packet.Packet(socketio.packet.EVENT, data=[EVENT, payload]).encode()
    ours = event_packet(payload)
    assert ours[0] == own[0] == "2" and json.loads(ours[1:]) == json.loads(own[1:]) == ["update_table", payload]


# -- access -----------------------------------------------------------------------------------------

def test_with_a_read_token_a_client_needs_it_by_header_cookie_or_query(server_factory, linear_model, listeners):
    server = server_factory(linear_model[0], args=["--socketio", "--read-token", READ, "--token", INGEST,
                                                   "--access-log"]).start()
    for kwargs in ({}, {"headers": {"Authorization": "Bearer wrong"}}, {"headers": {"Cookie": "fdedge_token=wrong"}}):
        with pytest.raises(socketio.exceptions.ConnectionError, match="401"):
            listeners().connect(server.url, **kwargs)
    with pytest.raises(socketio.exceptions.ConnectionError, match="401"):
        listeners().connect(server.url + "/?token=wrong")
    r = requests.get(server.url + POLLING, timeout=5)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer") and READ not in r.text
    assert WebSocket(server.port, "/socket.io/?EIO=4&transport=websocket").status == 403

    allowed = [listeners().connect(server.url, headers={"Authorization": f"Bearer {READ}"}),
               listeners().connect(server.url, headers={"Cookie": f"fdedge_token={READ}"}),
               listeners().connect(f"{server.url}/?token={READ}"),
               listeners().connect(server.url, headers={"Authorization": f"Bearer {INGEST}"})]
    answer = post(server.url, reading(5), token=INGEST)
    for listener in allowed:
        assert listener.wait_for(1) == [answer]
    ws = WebSocket(server.port, f"/socket.io/?EIO=4&transport=websocket&token={READ}")
    assert ws.status == 101
    ws.close()
    for listener in allowed:
        listener.close()
    server.stop()
    log = server.read_log()
    assert "GET /socket.io/?" in log and "WebSocket /socket.io/?" in log, "the access log was off"
    assert READ not in log and INGEST not in log and "wrong" not in log  # a query token is never logged


def test_pages_of_other_sites_are_refused_and_listed_origins_served(server_factory, linear_model, listeners):
    server = server_factory(linear_model[0], args=["--socketio", "--allowed-origins", "https://scada.plant.local"]
                            ).start()
    evil = requests.get(server.url + POLLING, headers={"Origin": "https://evil.example"}, timeout=5)
    assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers
    assert WebSocket(server.port, "/socket.io/?EIO=4&transport=websocket",
                     [("Origin", "https://evil.example")]).status != 101
    for origin in (server.url, "https://scada.plant.local"):
        ok = requests.get(server.url + POLLING, headers={"Origin": origin}, timeout=5)
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == origin
    listeners().connect(server.url, headers={"Origin": "https://scada.plant.local"})
    # JSONP answers a <script> tag, which any site may embed: not served
    assert requests.get(server.url + POLLING + "&j=0", timeout=5).status_code == 400


def test_allowed_hosts_apply_to_socket_io(server_factory, linear_model):
    server = server_factory(linear_model[0], args=["--socketio", "--allowed-hosts", "fdedge.plant.local"]).start()
    rebound = requests.get(server.url + POLLING, headers={"Host": "evil.example"}, timeout=5)
    assert rebound.status_code == 400 and rebound.json()["error"] == "bad_host"
    assert requests.get(server.url + POLLING, headers={"Host": "fdedge.plant.local"}, timeout=5).status_code == 200


def test_clients_are_bounded_by_the_connection_cap(server_factory, settings):
    cap = 16  # the smallest cap --max-connections allows
    with server_factory(settings=replace(settings, socketio=True, max_connections=cap)) as server:
        for _ in range(cap):
            assert requests.get(server.url + POLLING, timeout=5).status_code == 200
        refused = requests.get(server.url + POLLING, timeout=5)
        assert refused.status_code == 503 and refused.json()["reason"] == "too_many_clients"


# -- shutdown ---------------------------------------------------------------------------------------

def test_sigterm_disconnects_clients_and_logs_no_error(server_factory, linear_model, listeners):
    server = server_factory(linear_model[0], args=["--socketio"]).start()
    listener = listeners().connect(server.url)
    post(server.url, reading(1))
    assert len(listener.wait_for(1)) == 1
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == -signal.SIGTERM
    assert listener.disconnected.wait(10)
    log = server.read_log()
    assert "ERROR" not in log and "Traceback" not in log and "Cancel" not in log, log
