"""ws.hookstream.HookStream's queue, with no server to take it."""

import asyncio
import socket

from rtp2ws.ws.hookstream import HookStream
from rtp2ws.ws.sender import Sender, SenderConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_flood_of_holds_keeps_one_mark_between_two_runs_of_audio():
    """A re-INVITE flood (hold, resume, hold ...) while the server is away: the queue
    keeps one hold mark between two runs of audio, where the holds end up (no audio
    between them, nothing else of them is heard), not one per re-INVITE."""
    async def main():
        s = Sender(SenderConfig(url=f"ws://127.0.0.1:{_free_port()}/audio", ws_format="audiohook",
                                backoff_initial=5.0))
        st = s.open_stream("flood", {"type": "start", "call_id": "c", "tag": "stereo", "stream_id": "flood",
                                     "from": "a", "to": "b", "src": None, "dst": None, "codec": "L16",
                                     "sample_rate": 16000, "channels": 2, "frame_ms": 20, "sip_headers": {},
                                     "version": 1}, channels=2)
        assert isinstance(st, HookStream)
        marks = []
        for run in range(10):
            st.send_audio(bytes(4 * 320))                      # 20 ms of two channels
            for i in range(1000):
                st.send_event({"type": "hold" if (i + run) % 2 == 0 else "resume"})
            marks.append((999 + run) % 2 == 0)                 # where the run's holds end up
        queue = list(st._queue)
        await s.close()
        return queue, marks

    queue, marks = asyncio.run(asyncio.wait_for(main(), 10))
    assert len(queue) == 20
    assert [item for item in queue if isinstance(item, bool)] == marks
    assert all(isinstance(item, bytes) for item in queue[0::2])
