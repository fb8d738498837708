"""RFC 6455 frames as a server reads them: websockets' own parser (which requires
masking), for the tests of what rtp2ws writes (ws.frame, ws.outbox, ws.wire)."""

from __future__ import annotations

import pytest
from websockets.frames import Frame
from websockets.streams import StreamReader


def parse_frames(buf: bytes) -> list[Frame]:
    """Every frame in ``buf``, as a server (which requires masking) parses them."""
    reader = StreamReader()
    reader.feed_data(buf)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=True)
        with pytest.raises(StopIteration) as done:
            next(parser)
        frames.append(done.value.value)
    return frames
