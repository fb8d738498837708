"""The SRTP key log (``--srtp-keylog FILE``): SDES keys the mirror cannot see, sans-I/O.

When the signalling travels over TLS (SIP over TLS, WSS), the ``a=crypto`` lines are not
in the capture, but the PBX or SBC that terminates the TLS knows the keys.  A key log
gives them to rtp2ws, read once at start.  One key per line; blank lines and lines that
start with ``#`` are ignored:

    call <Call-ID> <caller|callee> <suite> inline:<key||salt>[|lifetime][|MKI:length]
    src <address>:<port> <suite> inline:<key||salt>[|lifetime][|MKI:length]

``call``: the key the caller (or the callee) of that call sends with, as its SDP's
``a=crypto`` would say; used beside the SDP's keys when the SIP is seen.  ``src``: the key
of whatever SRTP comes from that address and port (IPv6 as ``[2001:db8::1]:4000``), so it
applies to calls whose signalling is not seen at all (rtp2ws then makes a media-only call
of the flow).  ``<suite>`` and the ``inline:`` key are written as in ``a=crypto``
(RFC 4568), e.g.

    call 3848276298220188511@10.0.0.1 caller AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR
    src 10.0.0.2:5000 AEAD_AES_128_GCM inline:3ThJHRDWhBIrnk1Yn91NjQZkG7sOvHdoWJeLKc
"""

from __future__ import annotations

from ..signalling.correlator import pack_ip
from ..signalling.sdp import SdpParseError, parse_crypto
from .srtp import PROFILES, SrtpKey, keys_for

MAX_LINES = 100_000          # key lines read from one file (a bound on what it can make us hold)
SIDES = ("caller", "callee")


class KeyLogError(ValueError):
    """A key log line that cannot be read (the message names the line)."""


class KeyLog:
    """Keys by call and side, and by sender address."""

    def __init__(self) -> None:
        self.by_call: dict[tuple[str, str], list[SrtpKey]] = {}
        self.by_src: dict[tuple[bytes, int], list[SrtpKey]] = {}

    def __len__(self) -> int:
        return sum(map(len, self.by_call.values())) + sum(map(len, self.by_src.values()))

    def for_call(self, call_id: str, side: str) -> list[SrtpKey]:
        return self.by_call.get((call_id, side), [])

    def for_src(self, ip: bytes, port: int) -> list[SrtpKey]:
        return self.by_src.get((ip, port), [])


def _address(text: str) -> tuple[bytes, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ip = pack_ip(host)
    return None if ip is None else (ip, int(port))


def _key(suite: str, inline: str, where: str) -> SrtpKey:
    try:
        attr = parse_crypto(f"1 {suite} {inline}")
    except SdpParseError as exc:
        raise KeyLogError(f"{where}: {exc}") from None
    if attr.suite not in PROFILES:
        raise KeyLogError(f"{where}: suite {attr.suite} is not one rtp2ws decrypts ({', '.join(PROFILES)})")
    keys = keys_for([attr])
    if not keys:
        raise KeyLogError(f"{where}: the inline key is not a {attr.suite} key||salt")
    return keys[0]


def parse_keylog(text: str) -> KeyLog:
    """The keys of a key log's text; KeyLogError naming the first line it cannot read."""
    log = KeyLog()
    for n, line in enumerate(text.splitlines(), 1):
        if n > MAX_LINES:
            raise KeyLogError(f"more than {MAX_LINES} lines")
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"line {n}"
        if fields[0] == "call" and len(fields) == 5:
            _, call_id, side, suite, inline = fields
            if side not in SIDES:
                raise KeyLogError(f"{where}: the side is caller or callee, not {side!r}")
            key = _key(suite, inline, where)
            keys = log.by_call.setdefault((call_id, side), [])
        elif fields[0] == "src" and len(fields) == 4:
            _, addr, suite, inline = fields
            where_from = _address(addr)
            if where_from is None:
                raise KeyLogError(f"{where}: {addr!r} is not <address>:<port>")
            key = _key(suite, inline, where)
            keys = log.by_src.setdefault(where_from, [])
        else:
            raise KeyLogError(f"{where}: expected 'call <Call-ID> <caller|callee> <suite> inline:<key>' "
                              "or 'src <address>:<port> <suite> inline:<key>'")
        if key not in keys:
            keys.append(key)
    return log
