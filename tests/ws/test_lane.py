"""ws.lane: a stream's data plane.  The fast path pushes frames into a lane, the lane
marks itself once per flush while live, and send_batches writes a lane only when its
stream may take a batch (Stream._may_take's checks), else says what the sender does.
Both twins (LanePy with send_batches_py, rtp2ws._wsframe.Lane with the C send_batches)
run every test; real sockets, websockets' own protocol object for the state."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri
from wsparse import parse_frames

from rtp2ws.ws import lane as lane_mod
from rtp2ws.ws import outbox as outbox_mod
from rtp2ws.ws import wire as wire_mod
from rtp2ws.ws.lane import LanePy
from rtp2ws.ws.wire import ENDED, MARK, PENDING, SENT, WAKE

OPEN = State.OPEN


@pytest.fixture(params=["python", "native"])
def twin(request):
    if request.param not in wire_mod.TWINS or request.param not in outbox_mod.TWINS:
        pytest.skip("rtp2ws._wsframe is not built (or RTP2WS_NO_NATIVE is set)")
    return request.param


def outbox_of(twin: str, i: int = 0):
    ob = outbox_mod.TWINS[twin][0]({"call_id": f"c{i}", "tag": "caller", "stream_id": f"s{i}"}, frame_ms=20)
    ob.connected()
    return ob


def lane_of(twin, ob, marked, owner="stream"):
    if twin == "python":
        return LanePy(ob, marked, owner)
    from rtp2ws import _wsframe

    return _wsframe.Lane(ob, marked, owner)


def send_of(twin):
    return wire_mod.TWINS[twin][1]


class Transport:
    """Stands for asyncio's transport: only is_closing() is read."""

    def __init__(self) -> None:
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing


def protocol(state=OPEN):
    p = ClientProtocol(parse_uri("ws://127.0.0.1/"))
    p.state = state
    return p


def pcm(start: int, n: int = 320) -> bytes:
    return b"".join(((start + i) & 0x7FFF).to_bytes(2, "little") for i in range(n))


def drain(sock) -> bytes:
    sock.setblocking(False)
    out = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


def test_make_lane_picks_the_twin_of_the_outbox():
    ob = outbox_of("python")
    assert type(lane_mod.make_lane(ob, [], None)) is LanePy
    if "native" in outbox_mod.TWINS and "native" in wire_mod.TWINS:
        from rtp2ws import _wsframe

        assert type(lane_mod.make_lane(outbox_of("native"), [], None)) is _wsframe.Lane


def test_take_marked_hands_over_the_lanes_and_the_list_goes_on(twin):
    """The sender's flush takes the marked lanes out of the one list they append to:
    all of them in order, the list empty after and still the one the lanes mark."""
    import sys

    take = lane_mod.take_marked_py
    if twin == "native":
        from rtp2ws import _wsframe
        take = _wsframe.take_marked
        with pytest.raises(TypeError):
            take(())
    marked: list = []
    lanes = [lane_of(twin, outbox_of(twin, i), marked) for i in range(40)]
    for lane in lanes:
        lane.go_live(None, protocol(), Transport(), OPEN)
    for rnd in range(3):
        for lane in lanes[rnd:]:
            lane.push(pcm(0))
        refs = sys.getrefcount(lanes[-1])
        got = take(marked)
        after = sys.getrefcount(lanes[-1])
        assert after == refs                                 # the reference moved, none leaked
        assert got == lanes[rnd:] and marked == [] and type(got) is list
        if twin == "native":                                 # its room kept for the next appends
            assert sys.getsizeof(marked) >= sys.getsizeof([]) + 8 * len(got)
        for lane in got:
            lane.dirty = False                               # as send_batches does
        del got
    assert take(marked) == []
    lanes[5].push(pcm(0))
    assert marked == [lanes[5]]


def test_a_push_queues_and_marks_the_lane_once_while_live(twin):
    ob = outbox_of(twin)
    marked: list = []
    lane = lane_of(twin, ob, marked)
    lane.push(pcm(0))
    assert ob.queued_samples == 320 and marked == [] and not lane.dirty      # not live: queued only
    lane.go_live(None, protocol(), Transport(), OPEN)
    lane.push(pcm(320), 1.0, 0, 320)
    lane.push(pcm(640, 640), 2.0, 0, 320)
    assert marked == [lane] and lane.dirty and lane.pushed == 4 * 320
    assert ob.offset == 4 * 320
    lane.go_dead()
    assert not lane.live and lane.wire is None


def test_stamps_note_each_push(twin):
    lane = lane_of(twin, outbox_of(twin), [])
    lane.push(pcm(0))
    lane.stamps = []
    lane.push(pcm(0, 640), 12.5, 40, 320)
    assert lane.stamps == [(320, 960, 12.5, 40, 320)]
    with pytest.raises(ValueError if twin == "native" else Exception):
        lane.push(b"\x00\x00\x00")      # not whole samples


def test_a_live_lane_is_written_and_its_peer_reads_the_frames(twin):
    a, b = socket.socketpair()
    lock = threading.RLock()
    with a, b:
        wire = wire_mod.TWINS[twin][0](a.fileno(), lock)
        ob = outbox_of(twin)
        marked: list = []
        lane = lane_of(twin, ob, marked)
        lane.go_live(wire, protocol(), Transport(), OPEN)
        for t in range(3):
            lane.push(pcm(t * 320), float(t), 0, 320)
        with lock:
            attention = send_of(twin)(marked[:], 64 * 1024)
        marked.clear()
        assert attention == [] and not lane.dirty
        frames = parse_frames(drain(b))
        assert [f.data for f in frames if f.opcode is Opcode.BINARY] == [pcm(t * 320) for t in range(3)]
        assert not ob.pending
        ob.note_sent = True
        lane.push(pcm(960))
        with lock:
            assert send_of(twin)(marked[:], 64 * 1024) == [(0, SENT, None)]
        assert ob.sent == (960, 1280)
        wire.close()


@pytest.mark.parametrize("why", ["closing", "state", "blocked", "broken", "pending"])
def test_a_lane_whose_stream_may_not_take_is_not_written(twin, why):
    """Each of Stream._may_take's reasons: the lane comes back with WAKE and nothing
    is taken (ENDED, or nothing, when nothing is pending)."""
    a, b = socket.socketpair()
    lock = threading.RLock()
    with a, b:
        wire = wire_mod.TWINS[twin][0](a.fileno(), lock)
        ob = outbox_of(twin)
        marked: list = []
        lane = lane_of(twin, ob, marked)
        transport = Transport()
        lane.go_live(wire, protocol(State.CLOSING if why == "state" else OPEN), transport, OPEN)
        lane.push(pcm(0))
        if why == "closing":
            transport.closing = True
        elif why == "blocked":
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            with lock:
                while not wire.blocked:
                    wire.write(b"x" * 65536)
        elif why == "broken":
            b.close()
            with lock:
                wire.write(b"x" * 100)
                wire.write(b"x" * 100)
            assert wire.broken is not None
        elif why == "pending":
            ob.take([], 1 << 20)        # nothing left to take
        written = wire.written
        with lock:
            attention = send_of(twin)([lane], 64 * 1024)
        assert not lane.dirty
        if why == "pending":
            assert attention == []
            ob.end({"type": "end"})
            with lock:
                assert send_of(twin)([lane], 64 * 1024) == [(0, ENDED, None)]
        else:
            assert attention == [(0, WAKE, None)]
            assert ob.pending and wire.written == written
        wire.close()


def test_lanes_not_live_released_or_without_a_wire(twin):
    obs = [outbox_of(twin, i) for i in range(3)]
    marked: list = []
    lanes = [lane_of(twin, ob, marked) for ob in obs]
    for lane in lanes:
        lane.push(pcm(0))
    lanes[1].go_live(None, protocol(), Transport(), OPEN)      # TLS: the sender's own flush
    lanes[2].go_live(None, protocol(), Transport(), OPEN)
    lanes[2].release()
    assert lanes[2].owner is None and not lanes[2].live
    assert send_of(twin)(lanes, 1 << 16) == [(1, MARK, None)]
    assert all(ob.pending for ob in obs)


def test_a_lane_with_more_than_the_budget_stays_pending(twin):
    a, b = socket.socketpair()
    lock = threading.RLock()
    with a, b:
        wire = wire_mod.TWINS[twin][0](a.fileno(), lock)
        ob = outbox_of(twin)
        lane = lane_of(twin, ob, [])
        lane.go_live(wire, protocol(), Transport(), OPEN)
        for t in range(10):
            lane.push(pcm(t * 320))
        with lock:
            assert send_of(twin)([lane], 1000) == [(0, PENDING, None)]
        assert ob.pending
        wire.close()


def test_the_bridge_puts_what_it_queued_before_the_frames_the_fast_path_pushes():
    """LoopBridge.fast_pumping: an event the pipeline queued earlier in the tick goes
    into the outbox before the frames the fast path then pushes into the lane, under
    the sender's lock (the lock is held while pumping)."""
    import asyncio

    from rtp2ws.sinks.streams import Event, Open, StreamSink
    from rtp2ws.ws.bridge import LoopBridge
    from rtp2ws.ws.sender import Sender, SenderConfig

    async def main():
        with socket.socket() as s:          # nothing listens there: the stream just queues
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        sender = Sender(SenderConfig(url=f"ws://127.0.0.1:{port}/", max_buffer_ms=10000))
        sender.use_loop()
        streams = StreamSink()
        bridge = LoopBridge(streams, sender, asyncio.get_running_loop())
        streams.ops.append(Open("s1", {"call_id": "c", "tag": "caller", "frame_ms": 20}, 1))
        bridge.tick(0.0)
        stream = bridge._open["s1"]
        streams.ops.append(Event("s1", {"type": "dtmf", "digit": "7"}))
        with bridge.fast_pumping():
            assert sender._lock._is_owned()
            stream.lane.push(pcm(0), 1.0, 0, 320)
        assert not sender._lock._is_owned()
        msgs: list = []
        stream.outbox.take(msgs, 1 << 20)
        assert len(msgs) == 2 and json.loads(msgs[0])["digit"] == "7" and bytes(msgs[1]) == pcm(0)
        await sender.close()

    asyncio.run(main())
