"""C twin of rtp2ws.ws.frame.encode: many RFC 6455 client frames in one buffer.

Built from native/wsframe.c when a C compiler is available; rtp2ws.ws.frame.encode_py
is used otherwise, or when RTP2WS_NO_NATIVE=1 is set at import.
"""

from collections.abc import Sequence

from typing_extensions import Buffer

def encode(messages: Sequence[str | Buffer], keys: Buffer, split: int = 0) -> bytes:
    """RFC 6455 client frames (FIN, MASK, one key per frame) of every message, in order:
    a str is a text frame, a buffer binary frames (cut every ``split`` bytes when split > 0).
    ``messages`` is a list or tuple; ``keys`` holds 4 bytes per frame (the rest is ignored)."""
