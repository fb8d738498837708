import json
import random

import numpy as np
import pytest

from rtp2ws import cli
from rtp2ws.signalling.sip import (
    COMPACT,
    SipMessage,
    SipParseError,
    _mime_part,
    looks_like_sip,
    message_length,
    parse_message,
)
from rtp2ws.sinks.wav import read_wav

import callgen
import netgen
from callgen import Call, Party, expected_16k, frames_of, rtp_packets, tone
from fastcheck import check_equivalent


def crlf(text: str) -> bytes:
    """Test messages are written with \\n; SIP wants CRLF."""
    return text.replace("\n", "\r\n").encode("utf-8")


SDP_OFFER = crlf(
    """v=0
o=FreeSWITCH 1700000000 1700000001 IN IP4 10.0.0.5
s=FreeSWITCH
c=IN IP4 10.0.0.5
t=0 0
m=audio 16384 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
"""
)

INVITE = crlf(
    f"""INVITE sip:2000@10.0.0.9:5060 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKQ6aX3r0Dt8ScH
Max-Forwards: 70
From: "Extension 1000" <sip:1000@10.0.0.5>;tag=Bv3Q6p9ZmNXgD
To: <sip:2000@10.0.0.9:5060>
Call-ID: 6f4a8e1c-0b1e-123d-8a55-0242ac110002
CSeq: 125364 INVITE
Contact: <sip:mod_sofia@10.0.0.5:5060>
User-Agent: FreeSWITCH-mod_sofia/1.10.9-release~64bit
Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REGISTER, REFER, NOTIFY
Supported: timer, path, replaces
Allow-Events: talk, hold, conference, refer
Content-Type: application/sdp
Content-Disposition: session
Content-Length: {len(SDP_OFFER)}
X-FS-Support: update_display,send_info
Remote-Party-ID: "Extension 1000" <sip:1000@10.0.0.5>;party=calling;screen=yes;privacy=off

"""
) + SDP_OFFER

SDP_ANSWER = crlf(
    """v=0
o=- 3918 3919 IN IP4 10.0.0.9
s=-
c=IN IP4 10.0.0.9
t=0 0
m=audio 30000 RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
"""
)


def response(status: str, cseq: str = "125364 INVITE", body: bytes = b"",
             content_type: str | None = None, to_tag: str | None = "9a8b7c") -> bytes:
    to = "<sip:2000@10.0.0.9:5060>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"SIP/2.0 {status}",
        "Via: SIP/2.0/UDP 10.0.0.5:5060;rport=5060;branch=z9hG4bKQ6aX3r0Dt8ScH",
        'From: "Extension 1000" <sip:1000@10.0.0.5>;tag=Bv3Q6p9ZmNXgD',
        f"To: {to}",
        "Call-ID: 6f4a8e1c-0b1e-123d-8a55-0242ac110002",
        f"CSeq: {cseq}",
    ]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return crlf("\n".join(lines) + "\n\n") + body


# --- The FreeSWITCH INVITE ------------------------------------------------------


def test_invite_start_line_and_dialog():
    msg = parse_message(INVITE)
    assert msg.is_request
    assert msg.method == "INVITE"
    assert msg.uri == "sip:2000@10.0.0.9:5060"
    assert msg.status is None and msg.reason is None
    assert msg.call_id == "6f4a8e1c-0b1e-123d-8a55-0242ac110002"
    assert msg.cseq == (125364, "INVITE")
    assert msg.from_tag == "Bv3Q6p9ZmNXgD"
    assert msg.to_tag is None
    assert msg.from_uri == "sip:1000@10.0.0.5"
    assert msg.to_uri == "sip:2000@10.0.0.9:5060"
    assert msg.from_user == "1000"
    assert msg.to_user == "2000"
    assert msg.top_via_branch == "z9hG4bKQ6aX3r0Dt8ScH"
    assert msg.vias() == ["SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKQ6aX3r0Dt8ScH"]


def test_invite_headers_and_body():
    msg = parse_message(INVITE)
    assert msg.body == SDP_OFFER
    assert msg.sdp_bodies() == [SDP_OFFER]
    assert msg.headers[0] == ("via", "SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKQ6aX3r0Dt8ScH")
    assert [name for name, _ in msg.headers][:4] == ["via", "max-forwards", "from", "to"]
    assert msg.header("USER-AGENT") == "FreeSWITCH-mod_sofia/1.10.9-release~64bit"
    assert msg.header("x-fs-support") == "update_display,send_info"
    assert msg.header("k") == "timer, path, replaces"  # compact name for a full header
    assert msg.header("Subject") is None
    assert msg.header_all("Allow") == [
        "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REGISTER, REFER, NOTIFY"
    ]
    assert msg.header_all("subject") == []


def test_repr():
    msg = parse_message(INVITE)
    assert repr(msg) == (
        "SipMessage(INVITE sip:2000@10.0.0.9:5060, "
        "call_id='6f4a8e1c-0b1e-123d-8a55-0242ac110002', "
        f"16 headers, {len(SDP_OFFER)} bytes body)"
    )
    assert repr(parse_message(response("180 Ringing"))).startswith("SipMessage(180 Ringing,")


def test_body_cut_to_content_length():
    msg = parse_message(INVITE + b"\r\n\r\ntrailing junk")
    assert msg.body == SDP_OFFER


def test_body_without_content_length_is_rest_of_datagram():
    data = crlf("MESSAGE sip:a@b SIP/2.0\nCall-ID: x\nContent-Type: text/plain\n\nhello")
    msg = parse_message(data)
    assert msg.body == b"hello"
    assert msg.sdp_bodies() == []


# --- Responses and the rest of the dialog ----------------------------------------


@pytest.mark.parametrize(
    "status, code, reason",
    [
        ("100 Trying", 100, "Trying"),
        ("180 Ringing", 180, "Ringing"),
        ("200 OK", 200, "OK"),
        ("487 Request Terminated", 487, "Request Terminated"),
        ("603 Decline", 603, "Decline"),
    ],
)
def test_response_status_line(status, code, reason):
    msg = parse_message(response(status))
    assert not msg.is_request
    assert msg.method is None and msg.uri is None
    assert msg.status == code
    assert msg.reason == reason
    assert msg.cseq == (125364, "INVITE")
    assert msg.to_tag == "9a8b7c"
    assert msg.body == b""
    assert msg.sdp_bodies() == []


def test_183_and_200_with_sdp():
    for status in ("183 Session Progress", "200 OK"):
        msg = parse_message(response(status, body=SDP_ANSWER, content_type="application/sdp"))
        assert msg.sdp_bodies() == [SDP_ANSWER]


def test_content_type_parameters_and_case_ignored():
    msg = parse_message(
        response("200 OK", body=SDP_ANSWER, content_type="Application/SDP; charset=UTF-8")
    )
    assert msg.sdp_bodies() == [SDP_ANSWER]


def test_empty_sdp_body_is_not_an_sdp():
    msg = parse_message(response("200 OK", content_type="application/sdp"))
    assert msg.sdp_bodies() == []


def test_status_line_without_reason():
    msg = parse_message(b"SIP/2.0 200\r\nCall-ID: a\r\n\r\n")
    assert msg.status == 200 and msg.reason == ""


def test_status_line_utf8_reason():
    msg = parse_message("SIP/2.0 486 Besetzt – später\r\n\r\n".encode())
    assert msg.reason == "Besetzt – später"


def test_invalid_utf8_is_replaced():
    msg = parse_message(b"SIP/2.0 200 OK\r\nSubject: caf\xe9\r\n\r\n")
    assert msg.header("subject") == "caf\ufffd"


def test_ack_bye_cancel():
    for method, cseq in (("ACK", "125364 ACK"), ("BYE", "125365 BYE"), ("CANCEL", "125364 CANCEL")):
        data = crlf(
            f"""{method} sip:2000@10.0.0.9:5060 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bK{method}
Max-Forwards: 70
From: "Extension 1000" <sip:1000@10.0.0.5>;tag=Bv3Q6p9ZmNXgD
To: <sip:2000@10.0.0.9:5060>;tag=9a8b7c
Call-ID: 6f4a8e1c-0b1e-123d-8a55-0242ac110002
CSeq: {cseq}
Content-Length: 0

"""
        )
        msg = parse_message(data)
        assert msg.method == method
        assert msg.cseq == (int(cseq.split()[0]), method)
        assert msg.from_tag == "Bv3Q6p9ZmNXgD"
        assert msg.to_tag == "9a8b7c"
        assert msg.top_via_branch == f"z9hG4bK{method}"


def test_method_upper_cased():
    msg = parse_message(b"invite sip:a@b SIP/2.0\r\nCSeq: 1 invite\r\n\r\n")
    assert msg.method == "INVITE"
    assert msg.cseq == (1, "INVITE")


def test_lower_case_version_accepted():
    assert parse_message(b"sip/2.0 200 OK\r\n\r\n").status == 200


def test_leading_keepalive_crlf_skipped():
    msg = parse_message(b"\r\n\r\n" + INVITE)
    assert msg.method == "INVITE" and msg.body == SDP_OFFER


# --- Compact form -------------------------------------------------------------------


COMPACT_INVITE = crlf(
    f"""INVITE sip:bob@biloxi.example.com SIP/2.0
v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8
f: Alice <sip:alice@atlanta.example.com>;tag=1928301774
t: Bob <sip:bob@biloxi.example.com>
i: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
m: <sip:alice@pc33.atlanta.example.com>
k: 100rel
c: application/sdp
l: {len(SDP_OFFER)}

"""
) + SDP_OFFER


def test_compact_form():
    msg = parse_message(COMPACT_INVITE)
    assert [name for name, _ in msg.headers] == [
        "via", "from", "to", "call-id", "cseq", "contact", "supported",
        "content-type", "content-length",
    ]
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert msg.header("Call-ID") == msg.header("i") == msg.header("I")
    assert msg.header("m") == "<sip:alice@pc33.atlanta.example.com>"
    assert msg.header("contact") == "<sip:alice@pc33.atlanta.example.com>"
    assert msg.from_tag == "1928301774"
    assert msg.from_user == "alice"
    assert msg.to_uri == "sip:bob@biloxi.example.com"
    assert msg.top_via_branch == "z9hG4bKnashds8"
    assert msg.sdp_bodies() == [SDP_OFFER]


def test_compact_table():
    for short, full in {"i": "call-id", "f": "from", "t": "to", "m": "contact",
                        "c": "content-type", "l": "content-length", "v": "via",
                        "e": "content-encoding", "k": "supported", "s": "subject"}.items():
        assert COMPACT[short] == full


# --- Header syntax quirks ----------------------------------------------------------------


def test_header_folding():
    data = crlf(
        """INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.example.com
    ;branch=z9hG4bKfolded
Subject: I know you're there,
\tpick up the phone
 and talk to me!
Call-ID: folded@x

"""
    )
    msg = parse_message(data)
    assert msg.header("subject") == "I know you're there, pick up the phone and talk to me!"
    assert msg.header("via") == "SIP/2.0/UDP pc33.atlanta.example.com ;branch=z9hG4bKfolded"
    assert msg.top_via_branch == "z9hG4bKfolded"
    assert msg.call_id == "folded@x"


def test_whitespace_around_colon_and_name_case():
    msg = parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nCALL-ID   :   abc  \r\ncseq\t:\t7 options\r\n\r\n")
    assert msg.headers == [("call-id", "abc"), ("cseq", "7 options")]
    assert msg.cseq == (7, "OPTIONS")


def test_empty_header_value():
    msg = parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nSubject:\r\nCall-ID: x\r\n\r\n")
    assert msg.header("subject") == ""


def test_multiple_via_headers_and_comma_joined():
    data = crlf(
        """SIP/2.0 200 OK
Via: SIP/2.0/UDP proxy2.example.com:5060;branch=z9hG4bK721e4.1, SIP/2.0/UDP proxy1.example.com;branch=z9hG4bKnashds7;received=192.0.2.1
Via: SIP/2.0/TCP [2001:db8::9]:5060;branch=z9hG4bKv6
v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKuac
Call-ID: vias@x
CSeq: 1 INVITE

"""
    )
    msg = parse_message(data)
    assert len(msg.header_all("via")) == 3
    assert msg.header_all("via")[0].count("SIP/2.0/UDP") == 2  # not split
    assert msg.vias() == [
        "SIP/2.0/UDP proxy2.example.com:5060;branch=z9hG4bK721e4.1",
        "SIP/2.0/UDP proxy1.example.com;branch=z9hG4bKnashds7;received=192.0.2.1",
        "SIP/2.0/TCP [2001:db8::9]:5060;branch=z9hG4bKv6",
        "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKuac",
    ]
    assert msg.top_via_branch == "z9hG4bK721e4.1"


def test_via_comma_inside_quotes_not_split():
    msg = parse_message(
        b'SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;x="1,2";branch=z9hG4bKq, SIP/2.0/UDP b\r\n\r\n'
    )
    assert msg.vias() == ['SIP/2.0/UDP a;x="1,2";branch=z9hG4bKq', "SIP/2.0/UDP b"]
    assert msg.top_via_branch == "z9hG4bKq"


def test_no_via():
    msg = parse_message(b"SIP/2.0 200 OK\r\n\r\n")
    assert msg.vias() == [] and msg.top_via_branch is None
    assert msg.call_id == ""
    assert msg.from_uri == "" and msg.from_user is None and msg.from_tag is None


def test_display_name_with_comma_and_quotes():
    data = crlf(
        r"""INVITE sip:2000@pbx SIP/2.0
From: "Smith, John" <sip:1000@pbx>;tag=abc
To: "O\"Neil; <Bob>" <sip:+4930123@pbx;user=phone>
Contact: "Smith, John" <sip:1000@10.0.0.5:5060;transport=udp>, <sip:1000@10.0.0.6>
Call-ID: names@x

"""
    )
    msg = parse_message(data)
    assert msg.from_uri == "sip:1000@pbx"
    assert msg.from_tag == "abc"
    assert msg.from_user == "1000"
    assert msg.to_uri == "sip:+4930123@pbx"
    assert msg.to_user == "+4930123"
    assert msg.to_tag is None
    assert msg.header("contact") == (
        '"Smith, John" <sip:1000@10.0.0.5:5060;transport=udp>, <sip:1000@10.0.0.6>'
    )


def test_bare_addr_spec_params_are_header_params():
    msg = parse_message(
        b"BYE sip:a@b SIP/2.0\r\nFrom: sip:1000@pbx;tag=xyz\r\nt: tel:+15551234;tag=t1\r\n\r\n"
    )
    assert msg.from_uri == "sip:1000@pbx"
    assert msg.from_tag == "xyz"
    assert msg.to_uri == "tel:+15551234"
    assert msg.to_user == "+15551234"
    assert msg.to_tag == "t1"


def test_uri_user_variants():
    msg = parse_message(
        b"BYE sip:a@b SIP/2.0\r\n"
        b"From: Anonymous <sip:anonymous@anonymous.invalid>;tag=q\r\n"
        b"To: <sip:pbx.example.com>\r\n\r\n"
    )
    assert msg.from_user == "anonymous"
    assert msg.to_uri == "sip:pbx.example.com"
    assert msg.to_user is None
    msg = parse_message(
        b"BYE sip:a@b SIP/2.0\r\nFrom: <sips:%2B491234:secret@h;transport=tls>;TAG=T\r\n\r\n"
    )
    assert msg.from_uri == "sips:%2B491234:secret@h"
    assert msg.from_user == "+491234"
    assert msg.from_tag == "T"


def test_tag_quoted_and_missing_angle_close():
    msg = parse_message(b'BYE sip:a@b SIP/2.0\r\nFrom: <sip:1@h;x=1>;tag="q1"\r\nTo: <sip:2@h\r\n\r\n')
    assert msg.from_tag == "q1"
    assert msg.to_uri == "sip:2@h"


def test_lf_only_line_endings():
    body = SDP_OFFER.replace(b"\r\n", b"\n")
    data = INVITE.replace(b"\r\n", b"\n").replace(
        f"Content-Length: {len(SDP_OFFER)}".encode(), f"Content-Length: {len(body)}".encode()
    )
    msg = parse_message(data)
    assert msg.method == "INVITE"
    assert msg.call_id == "6f4a8e1c-0b1e-123d-8a55-0242ac110002"
    assert msg.from_tag == "Bv3Q6p9ZmNXgD"
    assert msg.header("content-type") == "application/sdp"
    assert msg.body == body
    assert msg.sdp_bodies() == [body]
    assert message_length(data + data) == len(data)


def test_mixed_line_endings():
    data = b"SIP/2.0 200 OK\nCall-ID: a\r\nCSeq: 2 BYE\n\r\n"
    msg = parse_message(data)
    assert msg.headers == [("call-id", "a"), ("cseq", "2 BYE")]
    assert message_length(data) == len(data)


def test_lf_conversion_shortens_body_below_content_length():
    # Content-Length still counts the CRLF bytes: the converted body is short.
    with pytest.raises(SipParseError, match=r"^SIP body truncated: Content-Length 248, 236 bytes"):
        parse_message(INVITE.replace(b"\r\n", b"\n"))


# --- Multipart ----------------------------------------------------------------------------

ISUP = bytes.fromhex("01 00 49 00 00 03 02 00 07 04 10 00 33 63 21 43 00 00 03".replace(" ", ""))
XML = b'<?xml version="1.0"?>\r\n<info><id>42</id></info>'


def multipart_invite(boundary_param: str, boundary: str, lf: bool = False) -> bytes:
    dash = b"--" + boundary.encode()
    body = (
        dash + b"\r\n"
        b"Content-Type: application/sdp\r\n\r\n" + SDP_OFFER + b"\r\n"
        + dash + b"\r\n"
        b"Content-Type: application/ISUP; version=itu-t92+\r\n"
        b"Content-Disposition: signal; handling=optional\r\n\r\n" + ISUP + b"\r\n"
        + dash + b"\r\n"
        b"Content-Type: application/xml\r\n\r\n" + XML + b"\r\n"
        + dash + b"--\r\n"
    )
    eol = "\r\n"
    if lf:
        body, eol = body.replace(b"\r\n", b"\n"), "\n"
    head = eol.join([
        "INVITE sip:+4930123@gw SIP/2.0",
        "Via: SIP/2.0/UDP 10.1.1.1;branch=z9hG4bKmp",
        "Call-ID: multipart@gw",
        "CSeq: 1 INVITE",
        f"Content-Type: multipart/mixed;{boundary_param}",
        "MIME-Version: 1.0",
        f"Content-Length: {len(body)}",
        "",
        "",
    ])
    return head.encode() + body


@pytest.mark.parametrize(
    "param, boundary",
    [
        ('boundary="unique-boundary-1"', "unique-boundary-1"),
        ("boundary=unique-boundary-1", "unique-boundary-1"),
        (' Boundary = "sip:simple boundary"', "sip:simple boundary"),
        ("charset=utf-8;boundary=3mzmOMNrh", "3mzmOMNrh"),
    ],
)
def test_multipart_mixed_sdp_and_isup(param, boundary):
    msg = parse_message(multipart_invite(param, boundary))
    assert msg.sdp_bodies() == [SDP_OFFER]


def test_multipart_lf_only():
    msg = parse_message(multipart_invite('boundary="b1"', "b1", lf=True))
    assert msg.sdp_bodies() == [SDP_OFFER.replace(b"\r\n", b"\n")]


def test_multipart_nested_and_several_sdp():
    inner = (
        b"--inner\r\nContent-Type: application/sdp\r\n\r\n" + SDP_ANSWER + b"\r\n"
        b"--inner\r\nContent-Type: text/plain\r\n\r\nv=0 but not sdp\r\n--inner--\r\n"
    )
    body = (
        b"preamble to be ignored\r\n"
        b"--outer\r\ncontent-type: APPLICATION/SDP\r\n\r\n" + SDP_OFFER + b"\r\n"
        b'--outer\r\nContent-Type: multipart/alternative;\r\n boundary="inner"\r\n\r\n'
        + inner + b"\r\n"
        b"--outer--\r\nepilogue\r\n"
    )
    data = (
        b"SIP/2.0 200 OK\r\nCall-ID: n@x\r\nContent-Type: multipart/related; boundary=outer\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )
    assert parse_message(data).sdp_bodies() == [SDP_OFFER, SDP_ANSWER]


def test_multipart_edge_cases():
    def msg(ct: str, body: bytes) -> SipMessage:
        return parse_message(f"SIP/2.0 200 OK\r\nContent-Type: {ct}\r\n\r\n".encode() + body)

    sdp_part = b"--b\r\nContent-Type: application/sdp\r\n\r\n" + SDP_OFFER
    # No boundary parameter: nothing can be found.
    assert msg("multipart/mixed", sdp_part + b"\r\n--b--").sdp_bodies() == []
    # Missing close delimiter (truncated capture): the last part runs to the end.
    assert msg("multipart/mixed; boundary=b", sdp_part).sdp_bodies() == [SDP_OFFER]
    # A part without headers defaults to text/plain.
    assert msg("multipart/mixed; boundary=b", b"--b\r\n\r\nv=0\r\n--b--").sdp_bodies() == []
    # Other content types are not SDP.
    assert msg("application/isup", ISUP).sdp_bodies() == []
    # A line that merely starts with the boundary is not a delimiter.
    body = b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--bb\r\n--b--\r\n"
    assert msg("multipart/mixed; boundary=b", body).sdp_bodies() == [b"v=0\r\n--bb"]


# --- Errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "SIP message empty"),
        (b"\r\n\r\n", "SIP message empty"),
        (b"hello world\r\n\r\n", "SIP start line malformed"),
        (b"INVITE sip:a@b\r\n\r\n", "SIP start line malformed"),
        (b"INVITE sip:a@b HTTP/1.1\r\n\r\n", "SIP start line malformed"),
        (b"SIP/2.0 20 OK\r\n\r\n", "SIP start line malformed"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "SIP start line malformed"),
        (b"INVITE sip:a@b SIP/2.0\r\nCall-ID x\r\n\r\n", "SIP header line without colon"),
        (b"INVITE sip:a@b SIP/2.0\r\n: x\r\n\r\n", "SIP header name malformed"),
        (b"INVITE sip:a@b SIP/2.0\r\nCall ID: x\r\n\r\n", "SIP header name malformed"),
        (b"INVITE sip:a@b SIP/2.0\r\n folded: x\r\n\r\n", "SIP continuation line before first header"),
        (b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\n", "SIP headers not terminated by an empty line"),
        (b"INVITE sip:a@b SIP/2.0\r\nl: ten\r\n\r\n", "SIP Content-Length malformed"),
        (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n", "SIP Content-Length malformed"),
        (b"\x80\x00\x01\x02\r\n\r\n", "SIP start line malformed"),
    ],
)
def test_parse_errors(data, message):
    with pytest.raises(SipParseError) as excinfo:
        parse_message(data)
    assert str(excinfo.value) == message
    assert isinstance(excinfo.value, ValueError)


def test_truncated_body():
    data = b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 300\r\n\r\n" + b"v" * 120
    with pytest.raises(SipParseError) as excinfo:
        parse_message(data)
    assert str(excinfo.value) == "SIP body truncated: Content-Length 300, 120 bytes present"


def test_truncated_invite():
    with pytest.raises(SipParseError) as excinfo:
        parse_message(INVITE[:-10])
    assert str(excinfo.value) == (
        f"SIP body truncated: Content-Length {len(SDP_OFFER)}, {len(SDP_OFFER) - 10} bytes present"
    )


@pytest.mark.parametrize("value", [None, "", "abc INVITE", "1", "INVITE 1", "1 INVITE extra"])
def test_cseq_malformed(value):
    head = "BYE sip:a@b SIP/2.0\r\n" + (f"CSeq: {value}\r\n" if value is not None else "")
    msg = parse_message(head.encode() + b"\r\n")  # parsing itself succeeds
    with pytest.raises(SipParseError) as excinfo:
        msg.cseq
    assert str(excinfo.value) == "CSeq header missing or malformed"


# --- Stream framing -------------------------------------------------------------------------


def test_message_length_complete_and_incomplete():
    assert message_length(INVITE) == len(INVITE)
    assert message_length(INVITE + b"INVITE sip:") == len(INVITE)
    for cut in (0, 1, 20, INVITE.index(b"\r\n\r\n") + 3, len(INVITE) - 1):
        assert message_length(INVITE[:cut]) is None, cut


def test_message_length_two_concatenated():
    second = response("200 OK", body=SDP_ANSWER, content_type="application/sdp")
    buf = INVITE + second
    first = message_length(buf)
    assert first == len(INVITE)
    assert message_length(buf[first:]) == len(second)
    assert parse_message(buf[:first]).method == "INVITE"
    assert parse_message(buf[first:]).sdp_bodies() == [SDP_ANSWER]


def test_message_length_no_body_and_compact_and_lf():
    bye = b"BYE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n"
    assert message_length(bye + bye) == len(bye)
    assert message_length(COMPACT_INVITE) == len(COMPACT_INVITE)
    lf = b"SIP/2.0 200 OK\nl: 3\n\nabcSIP/2.0"
    assert message_length(lf) == len(lf) - len(b"SIP/2.0")


def test_message_length_keepalives():
    assert message_length(b"\r\n\r\n") is None
    assert message_length(b"\r\n\r\n" + INVITE) == 4 + len(INVITE)
    assert parse_message((b"\r\n\r\n" + INVITE)[: 4 + len(INVITE)]).body == SDP_OFFER


def test_message_length_bad_content_length():
    with pytest.raises(SipParseError) as excinfo:
        message_length(b"SIP/2.0 200 OK\r\nContent-Length: x\r\n\r\n")
    assert str(excinfo.value) == "SIP Content-Length malformed"


# --- Sniffing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        INVITE,
        COMPACT_INVITE,
        b"SIP/2.0 100 Trying\r\n",
        b"ACK sip:2000@10.0.0.9 SIP/2.0\r\n",
        b"OPTIONS sips:pbx.example.com SIP/2.0\r\n",
        b"MESSAGE tel:+15551234 SIP/2.0\r\n",
        b"SUBSCRIBE SIP:1000@pbx SIP/2.0\r\n",
        b"PUBLISH sip:",
    ]
    + [f"{m} sip:x@y SIP/2.0".encode() for m in (
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE",
        "INFO", "REFER", "NOTIFY", "SUBSCRIBE", "MESSAGE", "PUBLISH")],
)
def test_looks_like_sip_true(payload):
    assert looks_like_sip(payload)


RTP_PCMA = bytes.fromhex("8008a1b2000012c0deadbeef") + b"\xd5" * 160
STUN_BINDING = bytes.fromhex("000100002112a442") + bytes(12)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"SIP/2.0",
        b"SIP/2.0\r\n",
        b"SIP/3.0 200 OK",
        b"INVITE",
        b"INVITE ",
        b"INVITE http://example.com SIP/2.0",
        b"invite sip:a@b SIP/2.0",
        b"FOO sip:a@b SIP/2.0",
        b" INVITE sip:a@b SIP/2.0",
        b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n",
        RTP_PCMA,
        STUN_BINDING,
        bytes(range(256)),
    ],
)
def test_looks_like_sip_false(payload):
    assert not looks_like_sip(payload)


def test_looks_like_sip_random_bytes():
    rng = random.Random(1)
    for _ in range(2000):
        payload = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
        assert not looks_like_sip(payload)


# --- Robustness --------------------------------------------------------------------------------


def _check_message(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    # Every accessor either answers or raises the documented error.
    msg.call_id, msg.from_tag, msg.to_tag, msg.from_uri, msg.to_uri
    msg.from_user, msg.to_user, msg.vias(), msg.top_via_branch, msg.sdp_bodies()
    repr(msg)
    try:
        msg.cseq
    except SipParseError:
        pass


def test_random_inputs_only_raise_sip_parse_error():
    rng = random.Random(20240101)
    seeds = [
        INVITE, COMPACT_INVITE, multipart_invite('boundary="b1"', "b1"),
        response("200 OK", body=SDP_ANSWER, content_type="application/sdp"),
    ]
    alphabet = b'\r\n :;,<>"\\=@/-' + b"abcSIP0123"
    for _ in range(3000):
        seed = rng.choice(seeds)
        choice = rng.randrange(4)
        if choice == 0:
            data = seed[: rng.randrange(len(seed) + 1)]
        elif choice == 1:
            data = bytearray(seed)
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] = rng.choice(alphabet)
            data = bytes(data)
        elif choice == 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 200)))
        else:
            data = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 200)))
        _check_message(data)
        try:
            length = message_length(data)
        except SipParseError:
            continue
        assert length is None or 0 < length <= len(data)


# --- Numbers and work are bounded (issue 10) ---------------------------------------------------

MANY = "9" * 4301     # past Python's int() limit of 4300 digits


@pytest.mark.parametrize("value", [MANY, "1" * 11, "0" * 5000 + "1" * 11])
def test_content_length_of_too_many_digits_is_malformed(value):
    data = f"INVITE sip:a@b SIP/2.0\r\nContent-Length: {value}\r\n\r\nbody".encode()
    for parse in (parse_message, message_length):
        with pytest.raises(SipParseError) as excinfo:
            parse(data)
        assert str(excinfo.value) == "SIP Content-Length malformed"


def test_content_length_of_ten_digits_and_leading_zeros():
    ten = b"INVITE sip:a@b SIP/2.0\r\nl: 9999999999\r\n\r\nbody"
    with pytest.raises(SipParseError) as excinfo:
        parse_message(ten)
    assert str(excinfo.value) == "SIP body truncated: Content-Length 9999999999, 4 bytes present"
    assert message_length(ten) is None          # a stream would wait for the body
    zeros = b"INVITE sip:a@b SIP/2.0\r\nl: " + b"0" * 5000 + b"3\r\n\r\nbodyINVITE"
    assert parse_message(zeros).body == b"bod"
    assert message_length(zeros) == len(zeros) - len(b"yINVITE")


@pytest.mark.parametrize("number", [MANY, "2" * 11])
def test_cseq_of_too_many_digits_is_malformed(number):
    msg = parse_message(f"BYE sip:a@b SIP/2.0\r\nCSeq: {number} BYE\r\n\r\n".encode())
    with pytest.raises(SipParseError) as excinfo:
        msg.cseq
    assert str(excinfo.value) == "CSeq header missing or malformed"
    assert parse_message(b"BYE sip:a@b SIP/2.0\r\nCSeq: " + b"0" * 5000 + b"4294967295 BYE\r\n\r\n").cseq == (
        4294967295, "BYE")


def test_folded_lines_are_joined_once_per_header(monkeypatch):
    """Appending each continuation line to the value copied the value every time:
    20,000 folded lines (100 KB) copied about 1 GB.  The value is joined once."""
    from rtp2ws.signalling import sip

    joined = []
    real = sip._join_folded
    monkeypatch.setattr(sip, "_join_folded", lambda parts: joined.append(len(parts)) or real(parts))
    lines = 20000
    data = (b"INVITE sip:a@b SIP/2.0\r\nSubject: a\r\n" + b" bc\r\n" * lines + b"\tz\r\n"
            b"Call-ID: x\r\n \r\nX-Last: 1\r\n\t2\r\n\r\n")
    msg = parse_message(data)
    assert msg.header("subject") == "a" + " bc" * lines + " z"
    assert msg.call_id == "x" and msg.header("x-last") == "1 2"
    assert joined == [lines + 2, 2, 2]


def test_folded_mime_content_type():
    body = crlf("--b1\nContent-Type: application/sdp\n ;x=1\n\tand more\n\n") + SDP_OFFER + b"\r\n--b1--\r\n"
    folded = (b"INVITE sip:a@b SIP/2.0\r\nContent-Type: multipart/mixed;boundary=b1\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert parse_message(folded).sdp_bodies() == [SDP_OFFER]
    assert _mime_part(b"Content-Type: a/b\r\n ;x=1\r\n\r\n\tc\r\n\r\nxyz") == ("a/b ;x=1", b"\tc\r\n\r\nxyz")


def test_long_digit_runs_only_raise_sip_parse_error():
    rng = random.Random(10)
    for _ in range(300):
        digits = "0" * rng.choice((0, 1, 5000)) + "".join(
            rng.choices("0123456789", k=rng.choice((1, 9, 10, 11, 4300, 4301, 20000))))
        name = rng.choice(("Content-Length", "l", "CSeq", "content-LENGTH "))
        value = f"{digits} INVITE" if name == "CSeq" else digits
        data = f"INVITE sip:a@b SIP/2.0\r\nCall-ID: d\r\n{name}: {value}\r\n\r\n".encode() + b"b" * rng.randrange(40)
        _check_message(data)
        try:
            length = message_length(data)
        except SipParseError:
            continue
        assert length is None or 0 < length <= len(data)


# --- End to end: one packet must not stop a replay ------------------------------------------


def test_udp_content_length_of_4301_digits_is_one_malformed_packet(tmp_path):
    """One such datagram made ``int()`` raise a plain ValueError out of the pipeline:
    live exited with a traceback, replay exited 2 without calls.json."""
    a, b = Party("10.0.0.1", 5060, 4000, "1000"), Party("10.0.0.2", 5060, 5000, "2000")
    bad = (b"MESSAGE sip:2000@10.0.0.2 SIP/2.0\r\nCall-ID: bad@test\r\nCSeq: 1 MESSAGE\r\n"
           b"Content-Length: " + MANY.encode() + b"\r\n\r\nhello")
    call = Call("good@test", a, b)
    pcm = tone(440, 1600)
    frames = frames_of([(99.0, netgen.udp(a.ip, 5060, b.ip, 5060, bad))], call.setup(100.0),
                       rtp_packets(a, b, 100.1, pcm, ssrc=0xAAAA0001), call.bye(100.5))
    path = callgen.write(tmp_path / "bad_udp.pcap", frames)
    check_equivalent(path)
    out = tmp_path / "out"
    assert cli.main(["replay", path, "--out-dir", str(out), "--no-progress"]) == 0
    with open(out / "calls.json") as f:
        manifest = json.load(f)
    (got,) = manifest["calls"]
    assert got["call_id"] == "good@test" and got["end_reason"] == "bye"
    caller = next(leg for leg in got["legs"] if leg["tag"] == "caller")
    data, rate, _ = read_wav(str(out / caller["wav"]))
    assert rate == 16000 and np.array_equal(data, expected_16k(pcm))
    assert manifest["summary"]["malformed"] == 1 and manifest["summary"]["malformed_sip"] == 1
