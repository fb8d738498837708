"""ws.streamtask: a stream's task ends once, whatever ends it, for the sender's
streams and AudioHook's alike."""

import asyncio
import socket

import pytest

from rtp2ws.ws.hookstream import HookStream
from rtp2ws.ws.sender import Sender, SenderConfig, Stream


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("fmt, kind", [("rtp2ws", Stream), ("audiohook", HookStream)])
def test_a_stream_stopped_before_its_task_ran_still_ends(fmt, kind):
    """The sender closes right after a stream opened: its task, cancelled before its
    first step, never runs its own end; the stream is ended all the same (done, no
    longer active, what it had queued counted), not left open for ever."""
    async def main():
        s = Sender(SenderConfig(url=f"ws://127.0.0.1:{_free_port()}/audio", ws_format=fmt))
        st = s.open_stream("early", {"type": "start", "call_id": "c", "tag": "caller", "stream_id": "early",
                                     "from": "a", "to": "b", "src": None, "dst": None, "codec": "L16",
                                     "sample_rate": 16000, "channels": 1, "frame_ms": 20, "sip_headers": {},
                                     "version": 1})
        assert isinstance(st, kind)
        st.send_audio(bytes(640))
        await s.close()                  # before the event loop ran the task once
        return s, st

    s, st = asyncio.run(asyncio.wait_for(main(), 10))
    assert st.done and not st.given_up and st.dropped_samples == 320
    assert s.stats["active"] == 0
