"""SRTP with SDES keys end to end: calls whose SDP carries ``a=crypto`` (RFC 4568) and
whose media libsrtp itself protected (``srtpgen``), replayed by ``rtp2ws replay``, give
exactly the WAVs of the same call in clear; keys change by re-INVITE; SRTCP; wrong keys,
DTLS-SRTP and SAVP with no key give no audio, never noise; the WebSocket path gets the
same audio.  Each capture is also checked by ``fastcheck`` (the fast path never takes
an SRTP leg's packets as clear G.711)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rtp2ws import cli
from rtp2ws.sinks.wav import read_wav

import callgen
import netgen
import srtpgen
from callgen import Call, Party, expected_16k, frames_of, rtp_packets, sdp, tone
from fastcheck import check_equivalent

A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")
SSRC_A, SSRC_B = 0xAAAA0001, 0xBBBB0001


def replay(tmp_path, frames, *args, name="cap.pcap"):
    path = callgen.write(tmp_path / name, frames)
    check_equivalent(path)
    out = tmp_path / ("out-" + name)
    rc = cli.main(["replay", path, "--out-dir", str(out), "--no-progress", *args])
    with open(out / "calls.json") as f:
        return rc, json.load(f), out


def leg(call, tag):
    return next(entry for entry in call["legs"] if entry["tag"] == tag)


def wav(out, entry):
    data, rate, channels = read_wav(os.path.join(out, entry["wav"]))
    assert rate == 16000 and channels == 1
    return data


def setup(c: Call, t0: float, offer: str, answer: str, *, proto="RTP/SAVP", answer_proto=None) -> list:
    """INVITE (offer) / 100 / 200 (answer) / ACK, with ``offer`` and ``answer`` as extra SDP lines."""
    f = c.request(t0, "INVITE", body=sdp(A.ip, A.rtp_port, pts=(8, 101), proto=proto, extra=offer), to_tag=False)
    f += c.response(t0 + 0.01, 100, "Trying", "INVITE", to_tag=False)
    f += c.response(t0 + 0.05, 200, "OK", "INVITE",
                    body=sdp(B.ip, B.rtp_port, pts=(8, 101), proto=answer_proto or proto, extra=answer))
    f += c.request(t0 + 0.06, "ACK")
    return f


def streams(n=8000, t0=100.1):
    pa, pb = tone(440, n), tone(1000, n, amp=6000)
    sa = rtp_packets(A, B, t0, pa, ssrc=SSRC_A)
    sb = rtp_packets(B, A, t0 + 0.003, pb, ssrc=SSRC_B)
    return sa, sb, pa, pb


@pytest.mark.parametrize("suite", srtpgen.SUITES)
def test_each_suite_decodes_to_the_clear_calls_wavs(tmp_path, suite):
    sa, sb, pa, pb = streams()
    clear = Call("clear@test", A, B)
    rc, m, out = replay(tmp_path, frames_of(setup(clear, 100.0, "", "", proto="RTP/AVP"), sa, sb, clear.bye(101.5)),
                        name="clear.pcap")
    ka, kb = srtpgen.key_for(suite, "caller"), srtpgen.key_for(suite, "callee")
    c = Call("srtp@test", A, B)
    f = setup(c, 100.0, srtpgen.crypto_line(1, suite, ka), srtpgen.crypto_line(1, suite, kb))
    ea = srtpgen.protect_stream(sa, srtpgen.session(suite, ka))
    eb = srtpgen.protect_stream(sb, srtpgen.session(suite, kb))
    rc2, m2, out2 = replay(tmp_path, frames_of(f, ea, eb, c.bye(101.5)), name="srtp.pcap")
    assert rc == rc2 == 0
    for tag, pcm in (("caller", pa), ("callee", pb)):
        plain, secret = leg(m["calls"][0], tag), leg(m2["calls"][0], tag)
        assert secret["encrypted"] is False and secret["srtp"] == suite and plain["srtp"] is None
        assert secret["packets"] == plain["packets"] == 50
        assert "srtp_failed" not in secret
        assert np.array_equal(wav(out2, secret), wav(out, plain))
        assert np.array_equal(wav(out2, secret), expected_16k(pcm))
    assert m2["summary"]["srtp"] == 100
