"""SIP message parsing (RFC 3261), sans-I/O.

This is the slow path: SIP is a few packets per call, so clarity and
tolerance of real-world quirks matter more than speed.  Everything here
takes bytes and returns values; nothing reads a socket or a clock.

Three entry points:

* :func:`looks_like_sip` -- a cheap sniff for UDP payloads on any port;
* :func:`message_length` -- framing for stream transports (TCP/TLS);
* :func:`parse_message` -- one whole message into a :class:`SipMessage`.

Every malformed input raises :class:`SipParseError` (a ``ValueError``)
with a fixed message, and nothing else: numbers are bounded
(:data:`MAX_DIGITS`), and the work is linear in the input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

__all__ = [
    "COMPACT",
    "METHODS",
    "SipMessage",
    "SipParseError",
    "looks_like_sip",
    "message_length",
    "parse_message",
]


class SipParseError(ValueError):
    """A SIP message could not be parsed."""


# Compact header forms: RFC 3261 section 7.3.3 plus later extensions.
COMPACT: dict[str, str] = {
    "a": "accept-contact",  # RFC 3841
    "b": "referred-by",  # RFC 3892
    "c": "content-type",
    "d": "request-disposition",  # RFC 3841
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",  # RFC 3841
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",  # RFC 4474 (obsoleted by RFC 8224)
    "o": "event",  # RFC 6665
    "r": "refer-to",  # RFC 3515
    "s": "subject",
    "t": "to",
    "u": "allow-events",  # RFC 6665
    "v": "via",
    "x": "session-expires",  # RFC 4028
    "y": "identity",  # RFC 8224
}

# Methods recognised by looks_like_sip() (RFC 3261 and extensions).
METHODS: frozenset[str] = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK",
        "UPDATE", "INFO", "REFER", "NOTIFY", "SUBSCRIBE", "MESSAGE", "PUBLISH",
    }
)
_METHODS_B = frozenset(m.encode("ascii") for m in METHODS)
_URI_SCHEMES_B = (b"sip:", b"sips:", b"tel:")
_MAX_METHOD_LENGTH = max(len(m) for m in METHODS)

# Nested multipart bodies deeper than this are ignored by sdp_bodies().
MAX_MULTIPART_DEPTH = 8

# Content-Length and the CSeq number have at most this many significant digits
# (leading zeros aside); more is malformed.  A CSeq number is below 2**31
# (section 8.1.1.5) and a message is far shorter than 10**10 bytes on any
# transport; unbounded, int() would take quadratic time and, past 4300 digits,
# raise a plain ValueError.
MAX_DIGITS = 10


# --- Grammar (RFC 3261 section 25.1) -------------------------------------
#
#   token        =  1*(alphanum / "-" / "." / "!" / "%" / "*"
#                   / "_" / "+" / "`" / "'" / "~" )
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"

#   SIP-Version  =  "SIP" "/" 1*DIGIT "." 1*DIGIT
#   ("The SIP-Version string is case-insensitive", section 7.1)
SIP_VERSION = r"[Ss][Ii][Pp]/[0-9]+\.[0-9]+"

#   Request-Line =  Method SP Request-URI SP SIP-Version CRLF
#   Method       =  INVITEm / ACKm / ... / extension-method
#   extension-method = token
# (Runs of spaces/tabs are tolerated between the parts.)
_REQUEST_LINE = re.compile(
    rf"(?P<method>{TOKEN})[ \t]+(?P<uri>[^ \t]+)[ \t]+{SIP_VERSION}"
)

#   Status-Line   =  SIP-Version SP Status-Code SP Reason-Phrase CRLF
#   Status-Code   =  3DIGIT
#   Reason-Phrase =  *(reserved / unreserved / escaped
#                    / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
# (An empty reason with the SP omitted is tolerated.)
_STATUS_LINE = re.compile(
    rf"{SIP_VERSION}[ \t]+(?P<status>[0-9]{{3}})(?:[ \t]+(?P<reason>.*))?"
)

#   message-header =  field-name HCOLON field-value
#   HCOLON         =  *( SP / HTAB ) ":" SWS
#   header-name    =  token
_HEADER_NAME = re.compile(TOKEN)

#   CSeq  =  "CSeq" HCOLON 1*DIGIT LWS Method
_CSEQ = re.compile(rf"(?P<number>[0-9]+)[ \t]+(?P<method>{TOKEN})")

#   Content-Length  =  ( "Content-Length" / "l" ) HCOLON 1*DIGIT
_DIGITS = re.compile(r"[0-9]+")
_DIGITS_B = re.compile(rb"[0-9]+")

# The empty line ending the header section; bare LF tolerated.
#   SIP-message  =  start-line *message-header CRLF [ message-body ]
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_BREAK = re.compile(r"\r?\n")

# A Content-Length header line, for stream framing without a full parse.
_CONTENT_LENGTH_LINE = re.compile(
    rb"^(?:content-length|l)[ \t]*:(?P<value>[^\r\n]*)", re.IGNORECASE | re.MULTILINE
)


# --- Small helpers -----------------------------------------------------------


def canonical_name(name: str) -> str:
    """Lower-case header name with the compact form expanded."""
    name = name.strip().lower()
    return COMPACT.get(name, name)


def _number(digits: str | bytes) -> int | None:
    """The value of a run of ASCII digits (str or bytes), or None when it has
    more than MAX_DIGITS significant digits."""
    digits = digits.lstrip(b"0") if isinstance(digits, bytes) else digits.lstrip("0")
    if len(digits) > MAX_DIGITS:
        return None
    return int(digits) if digits else 0


def _unquoted(value: str) -> Iterator[tuple[int, str]]:
    """Yield (index, char) for the characters outside quoted-strings (RFC 3261
    ``quoted-string``, with ``quoted-pair`` backslash escapes)."""
    in_quotes = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        else:
            yield i, ch
        i += 1


def _split_outside_quotes(value: str, sep: str) -> list[str]:
    """Split on ``sep`` except inside quoted-strings and ``<...>`` URIs."""
    parts: list[str] = []
    start = 0
    in_angle = False
    for i, ch in _unquoted(value):
        if ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == sep and not in_angle:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def _find_outside_quotes(value: str, char: str) -> int:
    """Index of the first ``char`` outside quoted-strings, or -1."""
    for i, ch in _unquoted(value):
        if ch == char:
            return i
    return -1


def _unquote(value: str) -> str:
    """Strip one level of quoted-string quoting."""
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _parse_params(text: str) -> dict[str, str | None]:
    """``*( SEMI generic-param )`` into a dict (names lower-case, values
    unquoted, ``None`` for a bare name).  The first occurrence wins."""
    params: dict[str, str | None] = {}
    for part in _split_outside_quotes(text, ";"):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if name and name not in params:
            params[name] = _unquote(value) if eq else None
    return params


def _strip_uri_params(uri: str) -> str:
    """``sip:1000@pbx;user=phone?X=y`` -> ``sip:1000@pbx``.

    The user part may itself contain ``;`` and ``?`` (RFC 3261
    ``user-unreserved``), so parameters are only looked for after the
    ``@`` when there is one, else after the scheme.
    """
    at = uri.rfind("@")
    start = at + 1 if at >= 0 else uri.find(":") + 1
    cut = len(uri)
    for ch in ";?":
        pos = uri.find(ch, start)
        if 0 <= pos < cut:
            cut = pos
    return uri[:cut].strip()


def _parse_name_addr(value: str) -> tuple[str, dict[str, str | None]]:
    """Split a From/To/Contact value into (URI without params, header params).

    ::

        from-spec    =  ( name-addr / addr-spec ) *( SEMI from-param )
        name-addr    =  [ display-name ] LAQUOT addr-spec RAQUOT
        display-name =  *(token LWS) / quoted-string

    Without angle brackets the URI cannot contain ``;`` (section 20.10),
    so everything after the first ``;`` is a header parameter.
    """
    lt = _find_outside_quotes(value, "<")
    if lt >= 0:
        gt = value.find(">", lt + 1)
        if gt < 0:
            uri, rest = value[lt + 1 :], ""
        else:
            uri, rest = value[lt + 1 : gt], value[gt + 1 :]
        return _strip_uri_params(uri), _parse_params(rest)
    uri, _, rest = value.partition(";")
    return _strip_uri_params(uri), _parse_params(rest)


def _uri_user(uri: str) -> str | None:
    """User part of a SIP/SIPS URI, or the number of a tel: URI."""
    scheme, colon, rest = uri.partition(":")
    if not colon:
        return None
    if scheme.lower() == "tel":
        return unquote(rest) or None
    at = rest.rfind("@")
    if at < 0:
        return None
    userinfo = rest[:at]
    user = userinfo.partition(":")[0]  # drop ":password"
    return unquote(user) or None


uri_user = _uri_user     # public: ws.formats names a call's parties by it


def _media_type(content_type: str | None) -> tuple[str, dict[str, str | None]]:
    """``multipart/mixed;boundary="x"`` -> (``multipart/mixed``, params)."""
    if not content_type:
        return "", {}
    mtype, _, rest = content_type.partition(";")
    return mtype.strip().lower(), _parse_params(rest)


# --- The message ----------------------------------------------------------------


@dataclass
class SipMessage:
    """One parsed SIP request or response.

    ``headers`` holds ``(canonical lower-case name, value)`` pairs in
    message order; compact names are expanded and folded lines joined.
    """

    is_request: bool
    method: str | None
    uri: str | None
    status: int | None
    reason: str | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def __repr__(self) -> str:
        if self.is_request:
            first = f"{self.method} {self.uri}"
        else:
            first = f"{self.status} {self.reason}"
        return (
            f"SipMessage({first}, call_id={self.call_id!r}, "
            f"{len(self.headers)} headers, {len(self.body)} bytes body)"
        )

    # Header access ----------------------------------------------------------

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (any case, compact form accepted)."""
        name = canonical_name(name)
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        """Every value of header ``name``, one per header line (not split)."""
        name = canonical_name(name)
        return [value for key, value in self.headers if key == name]

    # Dialog identification --------------------------------------------------

    @property
    def call_id(self) -> str:
        """The Call-ID, or ``''`` when missing."""
        return self.header("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """``(number, METHOD)`` from CSeq; raises SipParseError if absent/bad."""
        value = self.header("cseq")
        match = _CSEQ.fullmatch(value) if value is not None else None
        number = _number(match.group("number")) if match is not None else None
        if number is None:
            raise SipParseError("CSeq header missing or malformed")
        assert match is not None  # number is None without a match
        return number, match.group("method").upper()

    def _addr(self, name: str) -> tuple[str, dict[str, str | None]]:
        value = self.header(name)
        if value is None:
            return "", {}
        return _parse_name_addr(value)

    @property
    def from_tag(self) -> str | None:
        return self._addr("from")[1].get("tag")

    @property
    def to_tag(self) -> str | None:
        return self._addr("to")[1].get("tag")

    @property
    def from_uri(self) -> str:
        """From addr-spec without parameters (``''`` when missing)."""
        return self._addr("from")[0]

    @property
    def to_uri(self) -> str:
        """To addr-spec without parameters (``''`` when missing)."""
        return self._addr("to")[0]

    @property
    def from_user(self) -> str | None:
        return _uri_user(self.from_uri)

    @property
    def to_user(self) -> str | None:
        return _uri_user(self.to_uri)

    # Via -------------------------------------------------------------------------

    def vias(self) -> list[str]:
        """Every Via value, top first, comma-joined values split apart."""
        result: list[str] = []
        for value in self.header_all("via"):
            for part in _split_outside_quotes(value, ","):
                part = part.strip()
                if part:
                    result.append(part)
        return result

    @property
    def top_via_branch(self) -> str | None:
        """The ``branch`` parameter of the topmost Via.

        ::

            via-parm  =  sent-protocol LWS sent-by *( SEMI via-params )
        """
        vias = self.vias()
        if not vias:
            return None
        _, _, params = vias[0].partition(";")
        return _parse_params(params).get("branch")

    # Bodies ----------------------------------------------------------------------

    def sdp_bodies(self) -> list[bytes]:
        """Every non-empty ``application/sdp`` body, multipart parts included."""
        return _sdp_bodies(self.header("content-type"), self.body, 0)


def _sdp_bodies(content_type: str | None, body: bytes, depth: int) -> list[bytes]:
    mtype, params = _media_type(content_type)
    if mtype == "application/sdp":
        return [body] if body else []
    if not mtype.startswith("multipart/") or depth >= MAX_MULTIPART_DEPTH:
        return []
    boundary = params.get("boundary")
    if not boundary:
        return []
    result: list[bytes] = []
    for part_type, part_body in _multipart_parts(body, boundary.encode("utf-8")):
        result.extend(_sdp_bodies(part_type, part_body, depth + 1))
    return result


def _multipart_parts(body: bytes, boundary: bytes) -> list[tuple[str | None, bytes]]:
    """Split a MIME multipart body into ``(content-type, content)`` parts.

    RFC 2046 section 5.1.1::

        multipart-body := [preamble CRLF]
                          dash-boundary transport-padding CRLF
                          body-part *encapsulation
                          close-delimiter transport-padding
                          [CRLF epilogue]
        dash-boundary  := "--" boundary
        encapsulation  := delimiter transport-padding CRLF body-part
        delimiter      := CRLF dash-boundary
        close-delimiter := delimiter "--"
        body-part      := MIME-part-headers [CRLF *OCTET]

    Bare LF is tolerated; a missing close delimiter ends the last part at
    the end of the body.
    """
    delimiter = re.compile(
        rb"(?:^|\r?\n)--" + re.escape(boundary) + rb"(?P<close>--)?[ \t]*(?:\r?\n|$)"
    )
    parts: list[tuple[str | None, bytes]] = []
    previous_end: int | None = None
    for match in delimiter.finditer(body):
        if previous_end is not None:
            parts.append(_mime_part(body[previous_end : match.start()]))
        if match.group("close"):
            previous_end = None
            break
        previous_end = match.end()
    if previous_end is not None:
        parts.append(_mime_part(body[previous_end:]))
    return parts


def _mime_part(part: bytes) -> tuple[str | None, bytes]:
    """One body-part into (Content-Type or None, content)."""
    if part.startswith(b"\r\n"):
        return None, part[2:]
    if part.startswith(b"\n"):
        return None, part[1:]
    end = _HEAD_END.search(part)
    if end is None:
        head, content = part, b""
    else:
        head, content = part[: end.start()], part[end.end() :]
    content_type: list[str] | None = None  # the value, then its folded lines
    current: str | None = None
    for line in _LINE_BREAK.split(head.decode("utf-8", errors="replace")):
        if line[:1] in (" ", "\t") and current is not None:
            if current == "content-type" and content_type is not None:
                content_type.append(line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue
        current = name.strip().lower()
        if current == "content-type" and content_type is None:
            content_type = [value.strip()]
    return (" ".join(content_type) if content_type is not None else None), content


# --- Entry points ------------------------------------------------------------------


def looks_like_sip(payload: bytes) -> bool:
    """Cheap sniff: does this UDP payload start like a SIP message?

    True for ``SIP/2.0 `` (a response) or a known method followed by a
    space and a ``sip:``, ``sips:`` or ``tel:`` Request-URI.
    """
    if payload[:8] == b"SIP/2.0 ":
        return True
    space = payload.find(b" ", 0, _MAX_METHOD_LENGTH + 1)
    if space <= 0 or payload[:space] not in _METHODS_B:
        return False
    scheme = payload[space + 1 : space + 6].lower()
    return scheme.startswith(_URI_SCHEMES_B)


def _leading_blank(data: bytes) -> int:
    """Length of the CR/LF run before the start line (keep-alives, section 7.5)."""
    return len(data) - len(data.lstrip(b"\r\n"))


def message_length(buf: bytes) -> int | None:
    """Length of the first message in a stream buffer, or None if incomplete.

    The length covers any CRLF keep-alives before the start line, the
    header section with its terminating empty line, and Content-Length
    bytes of body (0 when the header is absent, as on streams it is
    mandatory).  A non-numeric Content-Length, or one of more than
    MAX_DIGITS significant digits, raises SipParseError since the stream
    can no longer be framed.
    """
    start = _leading_blank(buf)
    if start == len(buf):
        return None
    end = _HEAD_END.search(buf, start)
    if end is None:
        return None
    head = buf[start : end.start()]
    length = 0
    match = _CONTENT_LENGTH_LINE.search(head)
    if match is not None:
        value = match.group("value").strip()
        number = _number(value) if _DIGITS_B.fullmatch(value) else None
        if number is None:
            raise SipParseError("SIP Content-Length malformed")
        length = number
    total = end.end() + length
    return total if len(buf) >= total else None


def _join_folded(parts: list[str]) -> str:
    """A header value and its continuation lines, one space between non-empty parts
    (joined once: appending line by line would copy the value for every line)."""
    return " ".join(part for part in parts if part)


def parse_message(data: bytes) -> SipMessage:
    """Parse one complete SIP message.

    Leading CR/LF are skipped.  The header section must end with an empty
    line (CRLF or bare LF).  The body is what follows, cut to
    Content-Length when that header is present.
    """
    start = _leading_blank(data)
    if start == len(data):
        raise SipParseError("SIP message empty")
    end = _HEAD_END.search(data, start)
    if end is None:
        raise SipParseError("SIP headers not terminated by an empty line")
    head = data[start : end.start()].decode("utf-8", errors="replace")
    lines = _LINE_BREAK.split(head)

    start_line = lines[0].strip()
    is_request: bool
    method = uri = reason = None
    status = None
    match = _STATUS_LINE.fullmatch(start_line)
    if match is not None:
        is_request = False
        status = int(match.group("status"))
        reason = (match.group("reason") or "").strip()
    else:
        match = _REQUEST_LINE.fullmatch(start_line)
        if match is None:
            raise SipParseError("SIP start line malformed")
        is_request = True
        method = match.group("method").upper()
        uri = match.group("uri")

    headers: list[tuple[str, str]] = []
    folded: list[str] = []  # the last header's value and its continuation lines
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            # LWS = [*WSP CRLF] 1*WSP : a folded continuation line.
            if not headers:
                raise SipParseError("SIP continuation line before first header")
            if not folded:
                folded.append(headers[-1][1])
            folded.append(line.strip())
            continue
        if folded:
            headers[-1] = (headers[-1][0], _join_folded(folded))
            folded = []
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError("SIP header line without colon")
        name = name.strip()
        if not _HEADER_NAME.fullmatch(name):
            raise SipParseError("SIP header name malformed")
        headers.append((canonical_name(name), value.strip()))
    if folded:
        headers[-1] = (headers[-1][0], _join_folded(folded))

    body = data[end.end() :]
    message = SipMessage(
        is_request=is_request,
        method=method,
        uri=uri,
        status=status,
        reason=reason,
        headers=headers,
        body=body,
    )
    content_length = message.header("content-length")
    if content_length is not None:
        length = _number(content_length) if _DIGITS.fullmatch(content_length) else None
        if length is None:
            raise SipParseError("SIP Content-Length malformed")
        if length > len(body):
            raise SipParseError(
                f"SIP body truncated: Content-Length {length}, {len(body)} bytes present"
            )
        message.body = body[:length]
    return message
