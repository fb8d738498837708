"""RFC 6455 client frames for many messages at once, in one buffer.

The sender writes each connection's batch of messages (``start``, audio,
events, ``drop``, ``end``) with one ``transport.write``; this module builds
that buffer.  Every frame is a whole message: FIN=1, RSV1-3=0 (no
extension is ever negotiated), opcode text (0x1) or binary (0x2), MASK=1 with
its own 4-byte key (RFC 6455 5.3: the caller draws the keys for a batch from
one ``os.urandom`` call), the payload length in 7, 16 or 64 bits (5.2), and
the payload XOR-ed with the key.

``encode(messages, keys, split=0) -> bytes``

* ``messages``: a list or tuple; a ``str`` is one text frame (UTF-8), any other
  item a contiguous buffer sent as binary frames: one frame, or with
  ``split > 0`` cut into frames of ``split`` bytes, the last one shorter (an
  empty buffer is still one empty frame).
* ``keys``: 4 bytes per frame, in frame order (more are ignored).

``frame_count(messages, split=0)`` says how many frames (and so how many keys)
that is; ``ping_frame(payload, key)`` makes the acknowledgement ping the sender
writes after audio.  It only builds bytes: it never reads a frame (websockets does all
reading), does not choose what to send (``ws.outbox``) and writes to no
socket (``ws.sender``).  The C twin ``rtp2ws._wsframe`` (native/wsframe.c) is used unless it
is not built or ``RTP2WS_NO_NATIVE`` is set (``rtp2ws.speedups`` picks it);
``BACKEND`` names the one in use, ``BACKENDS`` those available,
and the same tests run against both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ..speedups import pick

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["BACKEND", "BACKENDS", "encode", "encode_py", "frame_count", "header_length", "ping_frame"]

OP_TEXT = 0x1
OP_BINARY = 0x2
FIN = 0x80
MASK = 0x80


def header_length(n: int) -> int:
    """Bytes of header (with the masking key) before an ``n``-byte payload."""
    return 6 if n < 126 else 8 if n < 65536 else 14


def _pieces(messages: Sequence[str | Buffer], split: int) -> Iterator[tuple[int, bytes | memoryview]]:
    """(opcode, payload) for every frame, in order."""
    if split < 0:
        raise ValueError("split must be 0 or more")
    if not isinstance(messages, (list, tuple)):
        raise TypeError(f"messages must be a list or a tuple, not {type(messages).__name__}")
    for i, m in enumerate(messages):
        if isinstance(m, str):
            yield OP_TEXT, m.encode()
            continue
        try:
            view = memoryview(m)
        except TypeError:
            raise TypeError(f"message {i}: expected str or a contiguous buffer, not {type(m).__name__}") from None
        if not view.c_contiguous:
            raise TypeError(f"message {i}: expected str or a contiguous buffer, not {type(m).__name__}")
        view = view.cast("B") if view.ndim != 1 or view.format != "B" else view
        n = len(view)
        if split and n > split:
            for pos in range(0, n, split):
                yield OP_BINARY, view[pos:pos + split]
        else:
            yield OP_BINARY, view


def frame_count(messages: Sequence[str | Buffer], split: int = 0) -> int:
    """How many frames ``encode`` makes of ``messages``."""
    count = 0
    for m in messages:
        if isinstance(m, str) or not split:
            count += 1
        else:
            n = memoryview(m).nbytes
            count += max(1, -(-n // split))
    return count


def ping_frame(payload: bytes, key: bytes) -> bytes:
    """A masked client Ping frame (RFC 6455 5.5.2) with an 8-byte payload."""
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(key + key, "big")
    return b"\x89\x88" + key + masked.to_bytes(8, "big")


def _mask(payload: bytes | memoryview, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def encode_py(messages: Sequence[str | Buffer], keys: Buffer, split: int = 0) -> bytes:
    """The pure-Python ``encode``."""
    pieces = list(_pieces(messages, split))
    keys = memoryview(keys).cast("B")
    if len(keys) // 4 < len(pieces):
        raise ValueError(f"{len(pieces)} frames need {4 * len(pieces)} mask key bytes, got {len(keys)}")
    out = bytearray()
    for i, (opcode, payload) in enumerate(pieces):
        key = bytes(keys[4 * i:4 * i + 4])
        n = len(payload)
        out.append(FIN | opcode)
        if n < 126:
            out.append(MASK | n)
        elif n < 65536:
            out.append(MASK | 126)
            out += n.to_bytes(2, "big")
        else:
            out.append(MASK | 127)
            out += n.to_bytes(8, "big")
        out += key
        out += _mask(payload, key)
    return bytes(out)


_native, BACKENDS = pick("wsframe")
BACKEND = BACKENDS[0]
if _native is not None:
    # the extension pick() chose, imported by name so that its stub (_wsframe.pyi) types it
    from .._wsframe import encode
else:
    encode = encode_py
