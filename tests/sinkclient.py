"""A client's side of ``rtp2ws sink``, for the tests of the sink and of what talks to it:
protocol messages and recognisable frames, a stream sent over a real connection, and the
sink to send to (in this process: ``serving``; the command in a process of its own:
``spawn_sink`` under asyncio, ``SinkProcess`` without)."""

import asyncio
import json
import os
import signal
import subprocess
import sys

import numpy as np
from websockets.asyncio.client import connect

from rtp2ws.sinks.wav import WavFile
from rtp2ws.sinkserver.server import SinkServer
from rtp2ws.ws import protocol

PY = sys.executable
FRAME = 320  # 20 ms at 16 kHz
TIMEOUT = 20.0


def run(coro):
    async def bounded():
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


def start_msg(stream_id="s1", call_id="call-1@test", tag="caller", channels=1, offset=0, resumed=False, **kw):
    m = {"type": "start", "version": protocol.PROTOCOL_VERSION, "call_id": call_id, "tag": tag,
         "stream_id": stream_id, "from": "sip:1000@a", "to": "sip:2000@b", "src": "10.0.0.1:4000",
         "dst": "10.0.0.2:5000", "codec": "L16", "sample_rate": 16000, "channels": channels, "frame_ms": 20,
         "resumed": resumed, "offset": offset, "start_time": "2024-01-01T00:00:00.000+00:00",
         "sip_headers": {"User-Agent": "test"}}
    m.update(kw)
    return m


def event(kind, stream_id="s1", call_id="call-1@test", tag="caller", **fields):
    m = {"type": kind, "call_id": call_id, "tag": tag, "stream_id": stream_id}
    m.update(fields)
    return m


def end_msg(samples, stream_id="s1", **kw):
    fields = {"reason": "bye", "samples": samples, "dropped_ms": 0, "reconnects": 0}
    fields.update(kw)
    return event("end", stream_id=stream_id, **fields)


def frame(i, channels=1):
    """Frame ``i``: distinct, recognisable samples (never all zero)."""
    n = FRAME * channels
    return ((np.arange(n, dtype=np.int64) * 7 + i * 1000 + 1) % 30000 - 15000).astype("<i2")


def frames(indices, channels=1):
    return np.concatenate([frame(i, channels) for i in indices])


def wav_bytes_like_wavout(tmp_path, samples, channels=1):
    """What wavout.WavFile writes for ``samples``."""
    path = str(tmp_path / f"ref-{channels}-{len(samples)}.wav")
    w = WavFile(path, channels=channels)
    w.write(samples)
    w.close()
    with open(path, "rb") as f:
        return f.read()


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


async def send_stream(uri, msgs, **kw):
    """Send text (dict) and binary (ndarray) messages; wait for the sink's close; the close code."""
    async with connect(uri, **kw) as ws:
        for m in msgs:
            await ws.send(m.astype("<i2").tobytes() if isinstance(m, np.ndarray) else protocol.encode(m))
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    return ws.close_code, ws.close_reason


async def serving(tmp_path, **kw):
    server = SinkServer(str(tmp_path / "out"), **kw)
    port = await server.start()
    return server, f"ws://127.0.0.1:{port}/"


async def spawn_sink(tmp_path, *args, name="sink"):
    err = os.open(tmp_path / f"{name}.stderr", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rtp2ws.cli", "sink", "--listen", "127.0.0.1:0", "--out-dir",
            str(tmp_path / "out"), *args, stdout=asyncio.subprocess.PIPE, stderr=err)
    finally:
        os.close(err)
    line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
    assert line.startswith("rtp2ws sink listening on "), line
    return proc, line.split()[-1]


class SinkProcess:
    """``rtp2ws sink`` in its own process."""

    def __init__(self, out_dir, *args, port=0):
        self.out_dir = out_dir
        self.args = args
        self.start(port)

    def start(self, port=0):
        self.proc = subprocess.Popen([PY, "-m", "rtp2ws.cli", "sink", "--listen", f"127.0.0.1:{port}",
                                      "--out-dir", str(self.out_dir), *self.args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert "listening on" in line, self.proc.stderr.read()
        self.url_base = line.split()[-1]
        self.port = int(self.url_base.rsplit(":", 1)[1])

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.stderr.read()

    def messages(self):
        with open(self.out_dir / "messages.jsonl") as f:
            return [json.loads(line)["message"] for line in f]
