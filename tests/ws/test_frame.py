"""rtp2ws.ws.frame: many RFC 6455 client frames in one buffer, checked with
websockets' own frame parser and a real websockets server on 127.0.0.1.
Every test runs against the pure-Python encoder and the C twin."""

from __future__ import annotations

import asyncio
import os
import random

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from wsparse import parse_frames

from rtp2ws.speedups import load_native
from rtp2ws.ws import frame as wsframe

SIZES = [0, 1, 3, 4, 5, 7, 8, 9, 125, 126, 127, 640, 3200, 65535, 65536, 70001]


@pytest.fixture(params=["python", "native"])
def encode(request):
    if request.param == "python":
        return wsframe.encode_py
    native = load_native("_wsframe")
    if native is None:
        pytest.skip("rtp2ws._wsframe is not built (or RTP2WS_NO_NATIVE is set)")
    return native.encode


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + n).randbytes(n)




def keys_of(buf: bytes) -> list[bytes]:
    """The masking key of every frame, read from the headers."""
    keys, pos = [], 0
    while pos < len(buf):
        n = buf[pos + 1] & 0x7F
        ext = 2 if n == 126 else 8 if n == 127 else 0
        if ext:
            n = int.from_bytes(buf[pos + 2:pos + 2 + ext], "big")
        keys.append(buf[pos + 2 + ext:pos + 6 + ext])
        pos += 6 + ext + n
    return keys


# --------------------------------------------------------------------------- frames


@pytest.mark.parametrize("n", SIZES)
def test_each_size_parses_back(encode, n):
    data = payload(n)
    text = "é" * (n // 2) + "x" * (n % 2)               # n UTF-8 bytes
    keys = os.urandom(8)
    buf = encode([data, text], keys)
    head = 2 + (2 if 126 <= n < 65536 else 8 if n >= 65536 else 0) + 4
    assert len(buf) == 2 * (head + n)
    binary, txt = parse_frames(buf)
    assert binary.opcode is Opcode.BINARY and binary.data == data
    assert txt.opcode is Opcode.TEXT and txt.data == text.encode()
    for f in (binary, txt):
        assert f.fin and not (f.rsv1 or f.rsv2 or f.rsv3)
    assert keys_of(buf) == [keys[:4], keys[4:]]
    # the length uses the shortest form (RFC 6455 5.2)
    assert buf[1] & 0x7F == (n if n < 126 else 126 if n < 65536 else 127)
    assert buf[0] == 0x82 and buf[1] & 0x80


def test_many_messages_in_order_each_with_its_own_key(encode):
    msgs = []
    for i, n in enumerate(SIZES * 3):
        msgs.append(payload(n, i) if i % 3 else f'{{"type":"dtmf","n":{n},"from":"Zoë"}}')
    keys = os.urandom(4 * len(msgs))
    buf = encode(msgs, keys)
    frames = parse_frames(buf)
    assert len(frames) == len(msgs) == wsframe.frame_count(msgs)
    for m, f in zip(msgs, frames):
        if isinstance(m, str):
            assert f.opcode is Opcode.TEXT and f.data.decode() == m
        else:
            assert f.opcode is Opcode.BINARY and f.data == m
    assert keys_of(buf) == [keys[i:i + 4] for i in range(0, len(keys), 4)]


@pytest.mark.parametrize("n", [0, 1, 639, 640, 641, 1280, 6400, 6401, 70000])
def test_split_cuts_one_buffer_into_frames(encode, n):
    data = payload(n, 7)
    count = wsframe.frame_count([data], 640)
    assert count == max(1, -(-n // 640))
    keys = os.urandom(4 * count)
    frames = parse_frames(encode(["start", data, "end"], os.urandom(8) + keys, 640))
    assert [f.opcode for f in frames] == [Opcode.TEXT] + [Opcode.BINARY] * count + [Opcode.TEXT]
    audio = frames[1:-1]
    assert b"".join(f.data for f in audio) == data
    assert all(len(f.data) == 640 for f in audio[:-1]) and len(audio[-1].data) == (n % 640 or min(n, 640))
    # split larger than the buffer: one frame
    assert [f.data for f in parse_frames(encode([data], os.urandom(4), n + 1))] == [data]


def test_buffers_of_any_kind(encode):
    pcm = (np.arange(-500, 500) * 37).astype("<i2")
    raw = pcm.tobytes()
    keys = os.urandom(16)
    want = encode([raw, raw[:10], raw, raw], keys)
    assert encode([bytearray(raw), memoryview(raw)[:10], pcm, memoryview(pcm)], keys) == want
    assert encode((raw, raw[:10], raw, raw), keys + b"extra") == want          # a tuple; spare key bytes ignored
    assert encode([], b"") == b""


def test_masking_uses_the_given_keys(encode):
    # a zero key leaves the payload readable; a key of 0xff inverts it
    data = bytes(range(200))
    plain = encode([data], b"\0\0\0\0")
    assert plain == b"\x82\xfe\x00\xc8\0\0\0\0" + data
    inverted = encode([data], b"\xff\xff\xff\xff")
    assert inverted[8:] == bytes(b ^ 0xFF for b in data)
    k = b"\x01\x02\x04\x08"
    assert encode(["abcdefghij"], k)[6:] == bytes(c ^ k[i % 4] for i, c in enumerate(b"abcdefghij"))


def test_errors(encode):
    with pytest.raises(ValueError, match=r"^3 frames need 12 mask key bytes, got 11$"):
        encode([b"a", "b", b"c"], b"k" * 11)
    with pytest.raises(ValueError, match=r"^3 frames need 12 mask key bytes, got 8$"):
        encode([b"x" * 1000], b"k" * 8, 400)
    with pytest.raises(ValueError, match="split must be 0 or more"):
        encode([b"a"], b"k" * 4, -1)
    with pytest.raises(TypeError, match=r"^message 1: expected str or a contiguous buffer, not int$"):
        encode([b"a", 5], b"k" * 8)
    with pytest.raises(TypeError, match="messages must be a list or a tuple"):
        encode(iter([b"a"]), b"k" * 4)
    with pytest.raises(TypeError, match="contiguous"):
        encode([np.zeros(10, np.int16)[::2]], b"k" * 4)


def test_native_and_python_agree_byte_for_byte():
    native = load_native("_wsframe")
    if native is None:
        pytest.skip("rtp2ws._wsframe is not built")
    rng = random.Random(3)
    for trial in range(200):
        msgs = []
        for _ in range(rng.randrange(0, 12)):
            n = rng.choice(SIZES[:-3] + [rng.randrange(0, 5000)])
            msgs.append(payload(n, trial) if rng.random() < 0.7 else "ü" * (n // 2))
        split = rng.choice([0, 0, 1, 7, 640, 3200])
        keys = os.urandom(4 * wsframe.frame_count(msgs, split))
        assert native.encode(msgs, keys, split) == wsframe.encode_py(msgs, keys, split), (trial, split)


# --------------------------------------------------------------------------- receivers


def test_websockets_server_protocol_accepts_the_batch(encode):
    """websockets' sans-I/O server, fed the batch a few bytes at a time."""
    msgs = ['{"type":"start"}'] + [payload(n, 1) for n in SIZES] + ['{"type":"end"}']
    buf = encode(msgs, os.urandom(4 * len(msgs)))
    server = ServerProtocol(state=State.OPEN, max_size=None)
    for i in range(0, len(buf), 1000):
        server.receive_data(buf[i:i + 1000])
    events = server.events_received()
    assert server.state is State.OPEN and server.parser_exc is None
    assert [e.data.decode() if e.opcode is Opcode.TEXT else bytes(e.data) for e in events] == msgs


def test_real_server_on_loopback_receives_every_message(encode):
    """A batch written with one transport.write on a websockets client connection
    arrives at a websockets server as the same messages, interleaved with
    websockets' own sends."""
    msgs = ["héllo"] + [payload(n, 2) for n in SIZES] + [payload(3200 * 3 + 100, 3)]

    async def main():
        got = []
        done = asyncio.Event()

        async def handler(ws):
            async for m in ws:
                got.append(m)
            done.set()

        async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
                await ws.send("first, through websockets")
                ws.transport.write(encode(msgs, os.urandom(4 * len(msgs))))
                split = encode([msgs[-1]], os.urandom(4 * 4), 3200)
                ws.transport.write(split)
                await ws.ping()
                await ws.send(b"last, through websockets")
            await asyncio.wait_for(done.wait(), 5)
        return got

    got = asyncio.run(main())
    last = msgs[-1]
    want = (["first, through websockets"] + msgs + [last[i:i + 3200] for i in range(0, len(last), 3200)]
            + [b"last, through websockets"])
    assert got == want
