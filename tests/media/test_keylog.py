"""rtp2ws.media.keylog: the --srtp-keylog file format."""

from __future__ import annotations

import pytest

from rtp2ws.media.keylog import KeyLogError, parse_keylog
from rtp2ws.media.srtp import SrtpKey

import netgen
import srtpgen

S80 = "AES_CM_128_HMAC_SHA1_80"
GCM = "AEAD_AES_128_GCM"


def test_lines_by_call_and_by_address():
    k1, k2, k3 = srtpgen.key_for(S80, "1"), srtpgen.key_for(GCM, "2"), srtpgen.key_for(S80, "3")
    log = parse_keylog("\n".join([
        "# rtp2ws SRTP key log",
        "",
        f"call abc:def@10.0.0.1 caller {S80} inline:{srtpgen.b64(k1)}|2^31|7:1",
        f"call abc:def@10.0.0.1 caller {S80} inline:{srtpgen.b64(k1)}|2^31|7:1",      # again: once
        f"src 10.0.0.2:5000 {GCM.lower()} inline:{srtpgen.b64(k2)}",
        f"src [2001:db8::1]:4000 {S80} inline:{srtpgen.b64(k3)}",
        "   # indented comment",
    ]))
    assert log.for_call("abc:def@10.0.0.1", "caller") == [SrtpKey(S80, k1, b"\x07")]
    assert log.for_call("abc:def@10.0.0.1", "callee") == []
    assert log.for_src(netgen.packed("10.0.0.2"), 5000) == [SrtpKey(GCM, k2)]
    assert log.for_src(netgen.packed("2001:db8::1"), 4000) == [SrtpKey(S80, k3)]
    assert len(log) == 3


@pytest.mark.parametrize("line, says", [
    ("call x@y caller", "expected"),
    ("call x@y both AES_CM_128_HMAC_SHA1_80 inline:AAAA", "caller or callee"),
    ("src 10.0.0.2 AES_CM_128_HMAC_SHA1_80 inline:AAAA", "is not <address>:<port>"),
    ("src 10.0.0.2:70000 AES_CM_128_HMAC_SHA1_80 inline:AAAA", "is not <address>:<port>"),
    ("src host.example:5000 AES_CM_128_HMAC_SHA1_80 inline:AAAA", "is not <address>:<port>"),
    ("src 10.0.0.2:5000 AES_256_CM_HMAC_SHA1_80 inline:AAAA", "not one rtp2ws decrypts"),
    ("src 10.0.0.2:5000 AES_CM_128_HMAC_SHA1_80 inline:QUJD", "not a AES_CM_128_HMAC_SHA1_80 key||salt"),
    ("src 10.0.0.2:5000 AES_CM_128_HMAC_SHA1_80 inline:!!", "a=crypto"),
    ("ssrc 0x1234 AES_CM_128_HMAC_SHA1_80 inline:AAAA", "expected"),
])
def test_bad_lines_are_named(line, says):
    with pytest.raises(KeyLogError, match="line 2: .*" + says.replace("|", r"\|")):
        parse_keylog("# header\n" + line + "\n")
