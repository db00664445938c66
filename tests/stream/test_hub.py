"""The SSE hub and stream: frames built directly as bytes equal sse_starlette's, each reading is
encoded once per shape that a connected client wants, and a client whose shape was not encoded
for a commit (it connected meanwhile) still gets every reading exactly once."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import numpy as np
import pytest
from sse_starlette.event import ServerSentEvent

from edge.appliance import Appliance
from edge.fdrest import FAULTS, FEATURES
from edge.ingest.bodies import Batch
from edge.store.database import Readers
from edge.store.schema import insert_rows, open_database
from edge.store.writer import Stored
from edge.stream import subscriber as subscriber_module
from edge.stream import wire as wire_module
from edge.stream.hub import Event, Hub
from edge.stream.subscriber import Subscriber
from edge.stream.wire import SHAPES, frame, reading_frame
from tests.harness import reading


def stream(app, last, machine, shape):
    """GET /events' byte stream for one client, without HTTP."""
    return Subscriber(app.hub, app.readers, last=last, machine=machine, shape=shape,
                      replay_max=app.settings.sse_replay_max).events()


# -- frames --------------------------------------------------------------------------------------

@pytest.mark.parametrize("event, data, id_", [
    ("hello", '{"last_id":3,"database_id":"x"}', 3),
    ("hello", '{"last_id":3}', None),
    ("gap", '{"skipped":5,"resume_id":9}', None),
    ("alarm", '{"event":"reload"}', None),
    ("alarm", 'two\nlines\r\nand\rmore', None),  # never from orjson, but split as the format demands
])
def test_frames_equal_sse_starlettes(event, data, id_):
    expected = ServerSentEvent(data=data, event=event, id=None if id_ is None else str(id_)).encode()
    assert frame(event, data, id_) == expected
    assert frame(event, data.encode(), id_) == expected


@pytest.mark.parametrize("shape", SHAPES)
def test_reading_frames_equal_sse_starlettes_and_carry_the_values(shape):
    x = [float(v) for v in np.random.default_rng(1).normal(size=35) * 1000]
    y = [float(v) for v in np.random.default_rng(2).normal(size=8) * 40]
    stored = (1, 1.8312, "Temperature:stuck,1.8-2 kHz:jump")  # the quality columns, as stored
    data = wire_module.reading_json(shape, 17, "2023-11-06T15:00:00Z", "pump-7", x, y, stored, "3f9c2a1b7d4e5f60")
    wire = reading_frame(shape, 17, "2023-11-06T15:00:00Z", "pump-7", x, y, stored, "3f9c2a1b7d4e5f60")
    assert wire == ServerSentEvent(data=data.decode(), event="reading", id="17").encode()
    event = Event.reading(17, "2023-11-06 15:00:00", "pump-7", x, y, (shape,), stored, "3f9c2a1b7d4e5f60")
    assert dict(event.wires) == {shape: wire}
    decoded = json.loads(data)
    quality = {"status": "suspect", "score": 1.8312, "reasons": [{"feature": "Temperature", "kind": "stuck"},
                                                                 {"feature": "1.8-2 kHz", "kind": "jump"}]}
    if shape == "arrays":
        assert decoded == {"id": 17, "time": "2023-11-06T15:00:00Z", "machine": "pump-7", "x": x, "y": y,
                           "model_version": "3f9c2a1b7d4e5f60", "quality": quality}
    else:
        assert decoded == {"id": 17, "time": "2023-11-06T15:00:00Z", "machine": "pump-7",
                           "features": dict(zip(FEATURES, x)), "faults": dict(zip(FAULTS, y)),
                           "model_version": "3f9c2a1b7d4e5f60", "quality": quality}
    # the database path (catch-up) writes the very same bytes
    row = (17, "2023-11-06 15:00:00", "pump-7", *x, *y, "3f9c2a1b7d4e5f60", *stored)
    assert wire_module.row_json(shape, row) == data
    # a reading without a verdict (no training statistics, or stored before the columns) is unknown
    unknown = json.loads(wire_module.row_json(shape, (17, "2023-11-06 15:00:00", "pump-7", *x, *y, None, None, None,
                                                      None)))
    assert unknown["quality"] == {"status": "unknown", "score": None, "reasons": []}


def test_alarm_events_have_one_frame_for_every_shape():
    event = Event.make(4, "m1", "alarm", '{"event":"raise"}')
    assert set(event.wires) == set(SHAPES) and len({id(w) for w in event.wires.values()}) == 1
    assert b"id:" not in event.wires["arrays"]


# -- the hub counts clients per shape ------------------------------------------------------------

def test_hub_counts_clients_per_shape():
    hub = Hub()
    assert hub.shapes() == () and len(hub) == 0
    hub.subscribe("arrays")
    hub.subscribe("arrays")
    assert hub.shapes() == ("arrays",) and len(hub) == 2
    hub.subscribe("objects")
    assert hub.shapes() == ("objects", "arrays")
    hub.unsubscribe("arrays")
    hub.unsubscribe("objects")
    assert hub.shapes() == ("arrays",) and len(hub) == 1
    hub.unsubscribe("arrays")
    assert hub.shapes() == () and len(hub) == 0


def test_the_writer_encodes_only_the_shapes_of_connected_clients(client):
    import time

    hub = client.app.state.appliance.hub

    def published_readings(since: int) -> list:
        """Commits with readings from `since` on (alarm changes come as commits of their own);
        publish() reaches the loop a moment after the writer answered."""
        deadline = time.monotonic() + 5
        while not any(p.first_reading for p in hub.since(since)) and time.monotonic() < deadline:
            time.sleep(0.01)
        return [p for p in hub.since(since) if p.first_reading]

    assert client.post("/send", json=reading(0)).status_code == 200
    time.sleep(0.1)
    assert hub.next_seq == 0  # nobody listens: nothing encoded, nothing published
    hub.subscribe("arrays")
    try:
        assert client.post("/send", json=[reading(1), reading(2)]).status_code == 200
        (published,) = published_readings(0)
        assert set(published.wires) == {"arrays"}
        assert [set(e.wires) for e in published.events] == [{"arrays"}, {"arrays"}]
        assert published.wires["arrays"] == b"".join(e.wires["arrays"] for e in published.events)
        assert (published.first_reading, published.last_reading) == (2, 3)
        seq = hub.next_seq
        hub.subscribe("objects")
        assert client.post("/send", json=reading(3)).status_code == 200
        (published,) = published_readings(seq)
        assert set(published.wires) == {"objects", "arrays"}
        assert all(set(e.wires) == {"objects", "arrays"} for p in hub.since(0) for e in p.events if e.kind == "alarm")
    finally:
        hub.unsubscribe("arrays")
        hub.unsubscribe("objects")


# -- a client connecting between a commit's encoding and its publication -----------------------

class Rig:
    """A database, a hub and the appliance's own publish(), driven by hand on one event loop."""

    def __init__(self, tmp_path):
        self.path = tmp_path / "sensor_data.db"
        self.conn = open_database(self.path)
        self.hub = Hub()
        self.loop = asyncio.get_running_loop()
        self.app = SimpleNamespace(hub=self.hub, readers=Readers(self.path), loop=self.loop,
                                   latest=None, uplink=None,
                                   settings=SimpleNamespace(sse_replay_max=10_000), shadow=None,
                                   metrics=SimpleNamespace(ingested=SimpleNamespace(inc=lambda n: None)))
        self.stored = 0

    def commit(self, n: int, machine: str = "m") -> Stored:
        """Store n readings as the writer does; returns what the writer hands to publish()."""
        times = [f"2024-01-01 00:00:{self.stored + i:02d}" for i in range(n)]
        x = [[float(self.stored + i) + k / 8 for k in range(35)] for i in range(n)]
        y = [[float(self.stored + i) * 10 + k / 16 for k in range(8)] for i in range(n)]
        self.conn.execute("BEGIN")
        last = insert_rows(self.conn, times, x, y, [machine] * n)
        self.conn.execute("COMMIT")
        self.stored += n
        return Stored(last - n + 1, np.array(y), Batch(times=times, machines=[machine] * n, rows=x))

    def publish(self, stored: Stored) -> None:
        """The writer thread's publish(): picks the shapes now, lands on the loop later."""
        Appliance.publish(self.app, [stored])

    def close(self) -> None:
        self.app.readers.close()
        self.conn.close()


class Reader:
    """One client's stream, read frame by frame; a read may stay pending (the client waits)."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.pending: asyncio.Future | None = None
        self.early: list[dict] = []  # frames that arrived while parking

    async def next(self, timeout: float = 5) -> list[dict]:
        if self.early:
            early, self.early = self.early, []
            return early
        if self.pending is None:
            self.pending = asyncio.ensure_future(anext(self.stream))
        chunk = await asyncio.wait_for(asyncio.shield(self.pending), timeout)
        self.pending = None
        return parse(chunk)

    async def park(self) -> None:
        """Let the client read on until it waits for the hub (start-up catch-up done)."""
        while True:
            self.pending = asyncio.ensure_future(anext(self.stream))
            await asyncio.sleep(0.2)
            if not self.pending.done():
                return
            self.early += parse(self.pending.result())

    async def take(self, n: int, timeout: float = 5) -> list[dict]:
        """The next frames until n reading events arrived."""
        got: list[dict] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while sum(e["event"] == "reading" for e in got) < n:
            got += await self.next(deadline - asyncio.get_running_loop().time())
        return got

    async def nothing_more(self, wait: float = 0.3) -> None:
        try:
            extra = await self.next(wait)
        except TimeoutError:
            return
        pytest.fail(f"unexpected events: {extra}")

    async def close(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            try:
                await self.pending
            except (asyncio.CancelledError, StopAsyncIteration):
                pass
        await self.stream.aclose()


def parse(chunk: bytes) -> list[dict]:
    out = []
    for text in chunk.split(b"\r\n\r\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in text.decode().split("\r\n"))
        fields["data"] = json.loads(fields["data"])
        out.append(fields)
    return out


def reading_ids(events: list[dict]) -> list[int]:
    return [int(e["id"]) for e in events if e["event"] == "reading"]


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(subscriber_module, "COALESCE_SECONDS", 0.01)


@pytest.mark.parametrize("last_event_id", [None, 0])
def test_a_client_connecting_between_encoding_and_publication_gets_every_reading_once(tmp_path, fast, last_event_id):
    async def main():
        rig = Rig(tmp_path)
        objects = Reader(stream(rig.app, None, None, "objects"))
        arrays = Reader(stream(rig.app, last_event_id, None, "arrays"))
        try:
            assert (await objects.next())[0]["event"] == "hello"  # an objects client is connected
            rig.publish(rig.commit(3))  # encoded for objects only; reaches the hub on the next loop turn
            assert rig.hub.shapes() == ("objects",)
            hello = await arrays.next()  # subscribes and reads the database: publish() lands meanwhile
            assert hello[0]["event"] == "hello" and hello[0]["data"]["last_id"] == 3
            (published,) = rig.hub.since(0)
            assert set(published.wires) == {"objects"}, "the commit was published before the client waited"
            await arrays.park()
            rig.publish(rig.commit(2))  # now encoded for both shapes
            got = await arrays.take(2 if last_event_id is None else 5)
            assert reading_ids(got) == ([4, 5] if last_event_id is None else [1, 2, 3, 4, 5])
            assert all(list(e["data"]) == ["id", "time", "machine", "x", "y", "model_version", "quality"] for e in got)
            assert reading_ids(await objects.take(5)) == [1, 2, 3, 4, 5]
            await arrays.nothing_more()
            await objects.nothing_more()
        finally:
            await arrays.close()
            await objects.close()
            rig.close()
        assert len(rig.hub) == 0 and rig.hub.shapes() == ()

    asyncio.run(main())


def objects_only(stored: Stored) -> list[Event]:
    """The stored readings' events as if encoded before an arrays client subscribed."""
    b = stored.batch
    return [Event.reading(stored.first_id + j, b.times[j], b.machines[j], b.rows[j], stored.faults[j].tolist(),
                          ("objects",)) for j in range(len(b))]


def test_a_commit_not_encoded_for_a_waiting_client_is_caught_up_from_the_database(tmp_path, fast):
    """Cannot happen (a client's shape is encoded for every commit stored after it subscribed), but
    if it did, the client reads those rows from the database, once, and still gets the alarms."""
    async def main():
        rig = Rig(tmp_path)
        arrays = Reader(stream(rig.app, None, None, "arrays"))
        try:
            assert (await arrays.next())[0]["data"]["last_id"] == 0
            await arrays.park()
            rig.hub.publish(objects_only(rig.commit(3)) + [Event.make(3, "m", "alarm", '{"event":"raise"}')],
                            ("objects",))
            rig.publish(rig.commit(2))
            got = await arrays.take(5)
            if "alarm" not in [e["event"] for e in got]:  # the replay came in a frame of its own
                got += await arrays.next()
            assert reading_ids(got) == [1, 2, 3, 4, 5]
            kinds = [e["event"] for e in got]
            assert kinds.index("alarm") > kinds.index("reading") and kinds.count("alarm") == 1
            assert [e["data"]["x"][0] for e in got if e["event"] == "reading"] == [0.0, 1.0, 2.0, 3.0, 4.0]
            await arrays.nothing_more()
        finally:
            await arrays.close()
            rig.close()

    asyncio.run(main())


def test_readings_gone_from_the_database_meanwhile_do_not_stall_the_client(tmp_path, fast):
    async def main():
        rig = Rig(tmp_path)
        arrays = Reader(stream(rig.app, None, None, "arrays"))
        try:
            await arrays.next()
            await arrays.park()
            stored = rig.commit(2)
            rig.conn.execute("DELETE FROM sensor_data")  # retention ran before the client read them
            rig.hub.publish(objects_only(stored), ("objects",))
            await asyncio.sleep(0.2)  # the client finds them in neither place, and waits again
            rig.publish(rig.commit(1))
            assert reading_ids(await arrays.take(1)) == [3]
            await arrays.nothing_more()
        finally:
            await arrays.close()
            rig.close()

    asyncio.run(main())


def test_the_machine_filter_works_in_both_shapes_from_one_publication(tmp_path, fast):
    async def main():
        rig = Rig(tmp_path)
        readers = {shape: Reader(stream(rig.app, None, "m1", shape)) for shape in SHAPES}
        try:
            for r in readers.values():
                await r.next()
                await r.park()
            rig.publish(rig.commit(2, "m0"))
            rig.publish(rig.commit(2, "m1"))
            rig.publish(rig.commit(1, "m0"))
            got = {}
            for shape, r in readers.items():
                got[shape] = await r.take(2)
                assert reading_ids(got[shape]) == [3, 4], shape
                assert {e["data"]["machine"] for e in got[shape]} == {"m1"}, shape
            for a, o in zip(got["arrays"], got["objects"]):
                assert o["data"]["features"] == dict(zip(FEATURES, a["data"]["x"]))
                assert o["data"]["faults"] == dict(zip(FAULTS, a["data"]["y"]))
            for r in readers.values():
                await r.nothing_more()
        finally:
            for r in readers.values():
                await r.close()
            rig.close()

    asyncio.run(main())


def test_clients_at_one_cursor_send_one_shared_chunk_per_tick(tmp_path, fast, monkeypatch):
    """Clients wake together, so a tick's commits are joined once and every client at that cursor
    writes the very same bytes; a client behind the others is served on its own."""
    joins = []
    real_join = Hub.joined

    def counting_join(self, cursor, shape):
        hit = real_join(self, cursor, shape)
        joins.append((cursor, shape, id(hit.wire) if hit else None))
        return hit

    monkeypatch.setattr(Hub, "joined", counting_join)

    async def main():
        rig = Rig(tmp_path)
        clients = [Reader(stream(rig.app, None, None, "arrays")) for _ in range(3)]
        try:
            for c in clients:
                await c.next()
                await c.park()
            for _ in range(4):  # several commits inside one coalescing wait
                rig.publish(rig.commit(2))
            chunks = [await c.next() for c in clients]
            assert all(reading_ids(chunk) == list(range(1, 9)) for chunk in chunks)
            wires = {wire for cursor, shape, wire in joins if wire is not None}
            assert len(wires) == 1, "one joined chunk served every client"
            late = Reader(stream(rig.app, 6, None, "arrays"))  # resumes mid-way
            try:
                assert reading_ids(await late.take(2)) == [7, 8]
                rig.publish(rig.commit(1))
                assert [reading_ids(await c.take(1)) for c in [*clients, late]] == [[9]] * 4
                await late.nothing_more()
            finally:
                await late.close()
        finally:
            for c in clients:
                await c.close()
            rig.close()

    asyncio.run(main())
