"""SDP parsing (RFC 4566 / RFC 8866), the subset needed for audio, sans-I/O.

What rtp2ws needs from an offer or answer is where each side wants its
RTP (address and port), which payload types mean which codec, and
whether the stream is on hold or encrypted.  Everything else is kept
as raw attributes and otherwise ignored.

The parser is tolerant: CRLF or LF line endings, trailing whitespace and
unknown or non ``x=`` lines are accepted.  It raises
:class:`SdpParseError` (a ``ValueError``) with a fixed message for input
that is not SDP at all, and for ``m=`` and ``c=`` lines it cannot
read, since those decide where media goes.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import cast

__all__ = [
    "CRYPTO_SUITES",
    "DIRECTIONS",
    "STATIC_PAYLOAD_TYPES",
    "CryptoAttribute",
    "InlineKey",
    "MediaDescription",
    "SdpParseError",
    "SessionDescription",
    "parse_crypto",
    "parse_sdp",
]


class SdpParseError(ValueError):
    """An SDP body could not be parsed."""


DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
DEFAULT_DIRECTION = "sendrecv"

# Static payload types, RFC 3551 tables 4 and 5: pt -> (name, rate, channels).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),  # RTP clock is 8000 although sampled at 16 kHz
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CELB", 90000, 1),
    26: ("JPEG", 90000, 1),
    28: ("NV", 90000, 1),
    31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}

# SDES crypto suites (RFC 4568 section 6.2, RFC 6188, RFC 7714): name -> (master key,
# master salt) lengths in bytes, what an ``inline:`` key||salt must decode to.
CRYPTO_SUITES: dict[str, tuple[int, int]] = {
    "AES_CM_128_HMAC_SHA1_80": (16, 14),
    "AES_CM_128_HMAC_SHA1_32": (16, 14),
    "F8_128_HMAC_SHA1_80": (16, 14),
    "AES_192_CM_HMAC_SHA1_80": (24, 14),
    "AES_192_CM_HMAC_SHA1_32": (24, 14),
    "AES_256_CM_HMAC_SHA1_80": (32, 14),
    "AES_256_CM_HMAC_SHA1_32": (32, 14),
    "AEAD_AES_128_GCM": (16, 12),
    "AEAD_AES_256_GCM": (32, 12),
}

_ENCRYPTION_ATTRIBUTES = frozenset({"crypto", "fingerprint", "zrtp-hash"})
_HOLD_ADDRESSES = frozenset({"0.0.0.0", "::"})


# --- Grammar (RFC 8866 section 9) -------------------------------------------------
#
#   ; sdp-line =  %x61-7A "=" text   (type is one lower-case letter)
_LINE = re.compile(r"(?P<type>[a-z])=(?P<value>.*)")
_LINE_BREAK = re.compile(r"\r?\n|\r")

#   proto-version =  %s"v" "=" 1*DIGIT CRLF
_VERSION = re.compile(r"[0-9]+")

#   origin-field = %s"o" "=" username SP sess-id SP sess-version SP
#                  nettype SP addrtype SP unicast-address CRLF
# (Six whitespace-separated fields; anything else leaves origin None.)

#   connection-field = [%s"c" "=" nettype SP addrtype SP
#                       connection-address CRLF]
#   connection-address = multicast-address / ipv6-address / unicast-address
#   IP4-multicast = m1 3( "." decimal-uchar ) "/" ttl [ "/" numaddr ]
#   IP6-multicast = IP6-address [ "/" numaddr ]
_CONNECTION = re.compile(
    r"(?P<nettype>\S+)[ \t]+(?P<addrtype>\S+)[ \t]+(?P<address>[^/\s]+)(?:/\S*)?"
)

#   media-field = %s"m" "=" media SP port ["/" integer]
#                 SP proto 1*(SP fmt) CRLF
#   media = token
#   port  = 1*DIGIT
#   proto = token *("/" token)
#   fmt   = token
# (Some stacks omit the formats of a rejected stream; tolerated.)
_MEDIA = re.compile(
    r"(?P<kind>[^\s]+)[ \t]+0*(?P<port>[0-9]{1,10})(?:/[0-9]+)?[ \t]+(?P<proto>[^\s]+)"
    r"(?P<fmts>(?:[ \t]+[^\s]+)*)"
)

#   attribute = (attribute-name ":" attribute-value) / attribute-name
#
#   a=rtpmap:<payload type> <encoding name>/<clock rate>
#            [/<encoding parameters>]                    (section 6.6)
_RTPMAP = re.compile(
    r"0*(?P<pt>[0-9]{1,10})[ \t]+(?P<name>[^/\s]+)/0*(?P<rate>[0-9]{1,10})(?:/0*(?P<channels>[0-9]{1,10}))?"
)
#   a=fmtp:<format> <format specific parameters>         (section 6.15)
_FMTP = re.compile(r"0*(?P<pt>[0-9]{1,10})(?:[ \t]+(?P<params>.*))?")
#   rtcp-attribute = "a=rtcp:" port [nettype space addrtype space
#                    connection-address] CRLF            (RFC 3605)
_RTCP = re.compile(
    r"0*(?P<port>[0-9]{1,10})(?:[ \t]+\S+[ \t]+\S+[ \t]+(?P<address>[^/\s]+)(?:/\S*)?)?"
)
#   a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]     (RFC 4568 section 9.1)
#   tag          = 1*9DIGIT
#   crypto-suite = 1*(ALPHA / DIGIT / "_")
#   key-params   = key-param *(";" key-param)
#   key-param    = key-method ":" key-info      ; key-method "inline" (others: not SDES in clear)
#   key-info     = key-salt ["|" lifetime] ["|" mki]
#   key-salt     = 1*(base64)                   ; master key || master salt
#   lifetime     = ["2^"] 1*(DIGIT)
#   mki          = mki-value ":" mki-length     ; mki-length 1*3DIGIT, 1..128
#   session-param = 1*(VCHAR)                   ; KDR=, UNENCRYPTED_SRTP, WSH= ...: kept, not used
_CRYPTO = re.compile(r"(?P<tag>[0-9]{1,9})[ \t]+(?P<suite>[A-Za-z0-9_]+)[ \t]+(?P<keys>\S+)(?P<params>(?:[ \t]+\S+)*)",
                     re.ASCII)
_INLINE = re.compile(
    r"inline:(?P<key>[A-Za-z0-9+/]+={0,2})(?:\|(?P<life>(?:2\^)?[0-9]{1,20}))?(?:\|0*(?P<mki>[0-9]{1,10}):0*(?P<mkilen>[0-9]{1,3}))?",
    re.IGNORECASE | re.ASCII)      # ASCII: no Kelvin sign for a "k", no long s for an "s"
MAX_CRYPTO_KEYS = 16     # inline keys read from one a=crypto line (more are ignored)

#   a=ptime:<packet time>  a=maxptime:<maximum packet time>  (milliseconds;
#   fractional values are seen in the wild and truncated)
# Numbers are read with at most 10 significant digits (leading zeros aside): int()
# refuses more than 4,300, and nothing in SDP needs more than a 32-bit value.
_FORMAT = re.compile(r"[0-9]{1,3}")     # ASCII digits only: str.isdigit() takes "²", int() does not
_MILLISECONDS = re.compile(r"0*(?P<ms>[0-9]{1,10})(?:\.[0-9]*)?")


@dataclass(frozen=True)
class InlineKey:
    """One ``inline:`` key of an ``a=crypto`` line: master key || master salt, with its
    lifetime (in packets, None when not given) and its MKI (value, length in bytes; the
    length 0 when the packets carry none)."""

    key_salt: bytes
    lifetime: int | None = None
    mki: int = 0
    mki_length: int = 0

    def __repr__(self) -> str:          # never the key itself in a log line
        return f"InlineKey({len(self.key_salt)} bytes, mki={self.mki}:{self.mki_length})"


@dataclass(frozen=True)
class CryptoAttribute:
    """An ``a=crypto`` line (RFC 4568 SDES): the key(s) its sender encrypts the SRTP and
    SRTCP it *sends* with."""

    tag: int
    suite: str                          # upper case, as CRYPTO_SUITES names them
    keys: tuple[InlineKey, ...]
    session_params: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        """A suite of CRYPTO_SUITES whose every key has its key||salt length."""
        lengths = CRYPTO_SUITES.get(self.suite)
        return lengths is not None and all(len(k.key_salt) == sum(lengths) for k in self.keys)


def parse_crypto(value: str) -> CryptoAttribute:
    """An ``a=crypto`` attribute's value; SdpParseError when it does not follow RFC 4568
    section 9.1, has no inline key, or a key is not base64.  Only ``inline:`` keys are
    kept (other key methods carry no key in the SDP)."""
    m = _CRYPTO.fullmatch(value.strip())
    if m is None:
        raise SdpParseError("SDP a=crypto line malformed")
    keys: list[InlineKey] = []
    for param in m.group("keys").split(";")[:MAX_CRYPTO_KEYS]:
        k = _INLINE.fullmatch(param)
        if k is None:
            if param[:7].lower() == "inline:":
                raise SdpParseError("SDP a=crypto inline key malformed")
            continue
        try:
            # RFC 3548 base64; some stacks leave out the padding
            raw = base64.b64decode(k.group("key") + "=" * (-len(k.group("key")) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise SdpParseError("SDP a=crypto inline key is not base64") from None
        life = k.group("life")
        lifetime = None
        if life is not None:
            lifetime = 1 << min(int(life[2:]), 64) if life.startswith("2^") else int(life)
        mki_length = int(k.group("mkilen") or 0)
        if k.group("mki") is not None and not 1 <= mki_length <= 128:
            raise SdpParseError("SDP a=crypto MKI length out of range")
        keys.append(InlineKey(raw, lifetime, int(k.group("mki") or 0), mki_length))
    if not keys:
        raise SdpParseError("SDP a=crypto line has no inline key")
    return CryptoAttribute(int(m.group("tag")), m.group("suite").upper(), tuple(keys),
                           tuple(m.group("params").split()))


@dataclass
class MediaDescription:
    """One ``m=`` section with its effective connection address."""

    kind: str
    port: int
    proto: str
    formats: list[int] = field(default_factory=list)
    address: str | None = None
    rtpmap: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    ptime: int | None = None
    maxptime: int | None = None
    rtcp_port: int | None = None
    rtcp_address: str | None = None
    rtcp_mux: bool = False
    direction: str = DEFAULT_DIRECTION
    encrypted: bool = False
    crypto: list[CryptoAttribute] = field(default_factory=list)   # a=crypto lines, in order
    crypto_errors: int = 0               # a=crypto lines that did not parse (ignored)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def on_hold(self) -> bool:
        """sendonly/inactive, or a 0.0.0.0 / :: connection address."""
        return self.direction in ("sendonly", "inactive") or self.address in _HOLD_ADDRESSES

    def __repr__(self) -> str:
        codecs = ",".join(
            f"{pt}:{self.rtpmap[pt][0]}" if pt in self.rtpmap else str(pt)
            for pt in self.formats
        )
        return (
            f"MediaDescription({self.kind} {self.address}:{self.port} {self.proto} "
            f"[{codecs}] {self.direction}{' encrypted' if self.encrypted else ''})"
        )


@dataclass
class SessionDescription:
    """A parsed SDP body."""

    origin: tuple[str, str, str, str, str, str] | None = None
    address: str | None = None
    direction: str = DEFAULT_DIRECTION
    media: list[MediaDescription] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    def audio(self) -> MediaDescription | None:
        """First enabled ``m=audio``, else the first ``m=audio``, else None."""
        first: MediaDescription | None = None
        for media in self.media:
            if media.kind == "audio":
                if media.port != 0:
                    return media
                if first is None:
                    first = media
        return first


def _connection_address(value: str) -> str:
    match = _CONNECTION.fullmatch(value.strip())
    if match is None:
        raise SdpParseError("SDP c= line malformed")
    return match.group("address")


def _milliseconds(value: str | None) -> int | None:
    match = _MILLISECONDS.fullmatch(value.strip()) if value else None
    return int(match.group("ms")) if match else None


def _finish_media(media: MediaDescription, session: SessionDescription,
                  session_attrs: set[str], media_address: str | None) -> None:
    """Resolve media-level values once all of the section's lines are read."""
    media.address = media_address if media_address is not None else session.address
    direction = None
    for name, value in media.attributes:
        key = name.lower()
        if key in DIRECTIONS:
            direction = key
        elif key == "rtpmap" and value is not None:
            m = _RTPMAP.fullmatch(value.strip())
            if m is not None:
                pt = int(m.group("pt"))
                if pt not in media.rtpmap:
                    media.rtpmap[pt] = (
                        m.group("name").upper(),
                        int(m.group("rate")),
                        int(m.group("channels") or 1),
                    )
        elif key == "fmtp" and value is not None:
            m = _FMTP.fullmatch(value.strip())
            if m is not None:
                media.fmtp.setdefault(int(m.group("pt")), (m.group("params") or "").strip())
        elif key == "ptime":
            media.ptime = _milliseconds(value)
        elif key == "maxptime":
            media.maxptime = _milliseconds(value)
        elif key == "rtcp" and value is not None:
            m = _RTCP.fullmatch(value.strip())
            if m is not None and int(m.group("port")) <= 65535:
                media.rtcp_port = int(m.group("port"))
                media.rtcp_address = m.group("address")
        elif key == "rtcp-mux":
            media.rtcp_mux = True
        elif key == "crypto":
            try:
                media.crypto.append(parse_crypto(value or ""))
            except SdpParseError:
                media.crypto_errors += 1
    media.direction = direction or session.direction
    for pt in media.formats:
        if pt not in media.rtpmap and pt in STATIC_PAYLOAD_TYPES:
            media.rtpmap[pt] = STATIC_PAYLOAD_TYPES[pt]
    media.encrypted = (
        "SAVP" in media.proto.upper()
        or any(name.lower() in _ENCRYPTION_ATTRIBUTES for name, _ in media.attributes)
        or bool(session_attrs & _ENCRYPTION_ATTRIBUTES)
    )


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body.

    Raises SdpParseError for input that does not start with a ``v=`` line
    (after blank lines), and for ``m=``/``c=`` lines it cannot read.
    """
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    lines = [line.strip() for line in _LINE_BREAK.split(text)]
    lines = [line for line in lines if line]
    if not lines:
        raise SdpParseError("SDP is empty")
    if not lines[0].startswith("v="):
        raise SdpParseError("SDP does not start with a v= line")
    if not _VERSION.fullmatch(lines[0][2:].strip()):
        raise SdpParseError("SDP v= line malformed")

    session = SessionDescription()
    session_attrs: set[str] = set()
    media: MediaDescription | None = None
    media_address: str | None = None
    for line in lines[1:]:
        match = _LINE.fullmatch(line)
        if match is None:
            continue  # not an SDP line; tolerated
        kind, value = match.group("type"), match.group("value")
        if kind == "m":
            if media is not None:
                _finish_media(media, session, session_attrs, media_address)
            m = _MEDIA.fullmatch(value.strip())
            if m is None or int(m.group("port")) > 65535:
                raise SdpParseError("SDP m= line malformed")
            formats = [int(fmt) for fmt in m.group("fmts").split() if _FORMAT.fullmatch(fmt) and int(fmt) <= 127]
            media = MediaDescription(
                kind=m.group("kind").lower(),
                port=int(m.group("port")),
                proto=m.group("proto"),
                formats=formats,
            )
            media_address = None
            session.media.append(media)
        elif kind == "c":
            address = _connection_address(value)
            if media is None:
                if session.address is None:
                    session.address = address
            elif media_address is None:
                media_address = address
        elif kind == "a":
            name, colon, attr_value = value.partition(":")
            attribute = (name.strip(), attr_value.strip() if colon else None)
            if media is None:
                session.attributes.append(attribute)
                key = attribute[0].lower()
                session_attrs.add(key)
                if key in DIRECTIONS:
                    session.direction = key
            else:
                media.attributes.append(attribute)
        elif kind == "o" and media is None:
            fields = value.split()
            if len(fields) == 6:
                session.origin = cast("tuple[str, str, str, str, str, str]", tuple(fields))
    if media is not None:
        _finish_media(media, session, session_attrs, media_address)
    return session
