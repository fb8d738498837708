"""SIP over WebSocket (RFC 7118) seen on a TCP flow: the opening handshake and the frames.

Sans-I/O, for ``rtp2ws.net.tcpstream.SipTcpReassembler``, which hands each direction's
in-order bytes here once that direction's opening handshake said so:

* ``upgrade(head)`` reads an HTTP header block (RFC 6455 section 4): the client's
  ``GET`` with ``Upgrade: websocket`` and ``sip`` among its ``Sec-WebSocket-Protocol``
  values, or the server's ``101`` that picked ``sip``.  It returns whether the bytes
  after it in that direction are WebSocket frames carrying SIP, and whether they are
  the client's (masked, RFC 6455 section 5.3).
* ``WsSipReader.feed(data, stats)`` reads those frames with websockets' own sans-I/O
  frame parser (``websockets.protocol.Protocol``: masking checked, fragmented messages,
  control frames, the closing handshake, UTF-8 of text frames, sizes bounded) and
  returns every whole text or binary message: each is one SIP message (RFC 7118
  section 5: no ``Content-Length`` framing).  What websockets would answer (pongs, its
  close) is dropped: rtp2ws only watches.

Counted in the reassembler's ``stats``: ``ws_upgrades`` (directions switched to
WebSocket), ``ws_messages``, ``ws_control`` (ping, pong, close frames), ``ws_errors``
(frames websockets refuses: garbage, a client frame not masked, reserved bits such as
an unnegotiated compression's, a message over ``max_size``), and ``http_other`` (an HTTP
header block that is not a SIP WebSocket upgrade).  After an error the reader starts
afresh at the next bytes it is given (a TCP segment normally starts a frame); after a
close frame it reads nothing more.  At most ``max_size`` bytes and a frame header (14
bytes) are held per direction: a frame or message in the making.
"""

from __future__ import annotations

import re

from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

__all__ = ["HTTP_LINE", "MAX_HTTP_HEAD", "WsSipReader", "upgrade"]

# RFC 7230 3.1: request-line = method SP request-target SP HTTP-version; status-line =
# HTTP-version SP status-code SP reason-phrase.  RFC 6455 4.1: the handshake is a GET of
# HTTP/1.1 or later.  Matched per line (re.M), without the CRLF.
HTTP_LINE = re.compile(rb"(?:GET [^ \r\n]+ HTTP/1\.[0-9]|HTTP/1\.[0-9] [0-9]{3}(?: [^\r\n]*)?)\r?$", re.M)
MAX_HTTP_HEAD = 16384         # an opening handshake's header block is a few hundred bytes
_HEADER = re.compile(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*:[ \t]*(.*?)[ \t]*\r?$", re.M)


def _tokens(value: bytes) -> set[bytes]:
    """A comma-separated header value's items, lower-cased (``Upgrade``, ``Connection``,
    ``Sec-WebSocket-Protocol``)."""
    return {item.strip().lower() for item in value.split(b",")}


def upgrade(head: bytes) -> tuple[bool, bool]:
    """(SIP over WebSocket follows, it is the client's side) for the HTTP header block
    ``head`` (start line to the empty line)."""
    line, _, rest = head.partition(b"\n")
    headers: dict[bytes, set[bytes]] = {}
    for m in _HEADER.finditer(rest):
        headers.setdefault(m.group(1).lower(), set()).update(_tokens(m.group(2)))
    if b"websocket" not in headers.get(b"upgrade", ()) or b"sip" not in headers.get(b"sec-websocket-protocol", ()):
        return False, False
    if line.startswith(b"GET "):
        return True, True
    return line.split(b" ", 2)[1] == b"101", False


class WsSipReader:
    """One direction of a SIP WebSocket connection, after its handshake: frames in,
    SIP messages out."""

    __slots__ = ("client", "max_size", "_proto", "_parts", "_closed")

    def __init__(self, client: bool, max_size: int = 1 << 20) -> None:
        self.client = client          # the client's frames: masked
        self.max_size = max_size
        self._proto = self._new()
        self._parts: list[bytes] = []  # the fragments of the message in the making
        self._closed = False

    def __repr__(self) -> str:
        side = "client" if self.client else "server"
        return f"WsSipReader({side}, {self.held} bytes held{', closed' if self._closed else ''})"

    def _new(self) -> Protocol:
        # websockets reads as the side that receives these frames: a server reads the
        # client's (masked), a client the server's (unmasked).
        return Protocol(Side.SERVER if self.client else Side.CLIENT, max_size=self.max_size)

    @property
    def held(self) -> int:
        """Bytes held: a frame not yet whole, the fragments of a message not yet whole."""
        return len(self._proto.reader.buffer) + sum(len(p) for p in self._parts)

    def restart(self) -> None:
        """The bytes given so far end somewhere a frame cannot go on (a TCP hole was
        skipped): the next bytes begin a frame."""
        self._proto = self._new()
        self._parts.clear()

    def feed(self, data: bytes, stats: dict[str, int]) -> list[bytes]:
        if self._closed or not data:
            return []
        p = self._proto
        p.receive_data(data)
        p.data_to_send()             # its pongs and close: a watcher sends nothing
        out: list[bytes] = []
        parts = self._parts
        for frame in p.events_received():
            if not isinstance(frame, Frame):     # Request, Response: the handshake's, not here
                continue
            op = frame.opcode
            if op is Opcode.TEXT or op is Opcode.BINARY or op is Opcode.CONT:
                if op is not Opcode.CONT:
                    parts.clear()
                parts.append(bytes(frame.data))
                if frame.fin:
                    out.append(b"".join(parts))
                    parts.clear()
            else:
                stats["ws_control"] += 1
                if op is Opcode.CLOSE:
                    self._closed = True
        if p.parser_exc is not None:    # websockets' ProtocolError, PayloadTooBig, UnicodeDecodeError
            stats["ws_errors"] += 1
            self.restart()
        stats["ws_messages"] += len(out)
        return out
