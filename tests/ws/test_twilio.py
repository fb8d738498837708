"""ws.twilio: a call's stream as Twilio Media Streams messages, sans I/O: the ids,
connected and start at each connection, sequence numbers, each track's chunks
from its own first sample, timestamps on the stream's time line, gaps, the end,
DTMF, and the audio (the stream's even samples, µ-law)."""

import base64
import hashlib
import json

import numpy as np
import pytest

from rtp2ws.codec.g711 import decode_ulaw, encode_ulaw
from rtp2ws.ws import twilio
from rtp2ws.ws.protocol import encode

START = {"type": "start", "call_id": "a84b4c76e66710@pc33", "tag": "stereo", "stream_id": "9f0c" * 8,
         "channels": 2, "sample_rate": 16000, "frame_ms": 20,
         "sip_headers": {"X-Customer-Id": "42", "X-Missing": None}}


def stereo(left: np.ndarray, right: np.ndarray) -> bytes:
    return np.stack([left, right], axis=1).astype("<i2").tobytes()


def noise(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-20000, 20000, n).astype(np.int16)


def parsed(texts):
    return [json.loads(t) for t in texts]


def media(msgs, track=None):
    return [m["media"] for m in msgs if m["event"] == "media" and track in (None, m["media"]["track"])]


def test_the_ids_have_twilios_shapes():
    assert twilio.stream_sid("9f0c" * 8) == "MZ" + "9f0c" * 8
    assert twilio.stream_sid("9F0C" * 8) == "MZ" + "9f0c" * 8
    other = twilio.stream_sid("not hex")
    assert other.startswith("MZ") and len(other) == 34 and other != twilio.stream_sid("not hex either")
    assert twilio.call_sid("a84b4c76e66710@pc33") == "CA" + hashlib.sha256(b"a84b4c76e66710@pc33").hexdigest()[:32]
    assert twilio.call_sid("x") != twilio.call_sid("y")
    assert twilio.check_account_sid("AC" + "aB" * 16) == "AC" + "aB" * 16
    for bad in ("AC123", "CA" + "0" * 32, "AC" + "g" * 32, "AC" + "0" * 33, ""):
        with pytest.raises(ValueError, match="a Twilio Account SID is AC and 32 hex digits"):
            twilio.check_account_sid(bad)


def test_each_connection_begins_with_connected_and_start_and_counts_from_one():
    t = twilio.TwilioStream(START, "AC" + "1" * 32)
    for _ in range(2):                    # a reconnect: the same two messages, the count from 1 again
        t.connect()
        msgs = parsed(t.convert([]))
        assert msgs == [
            {"event": "connected", "protocol": "Call", "version": "1.0.0"},
            {"event": "start", "sequenceNumber": "1", "start": {
                "accountSid": "AC" + "1" * 32, "streamSid": "MZ" + "9f0c" * 8, "callSid": twilio.call_sid(START["call_id"]),
                "tracks": ["inbound", "outbound"], "customParameters": {"X-Customer-Id": "42"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
             "streamSid": "MZ" + "9f0c" * 8}]
        assert parsed(t.convert([])) == []          # once
    assert t.convert([stereo(noise(320, 1), noise(320, 2))]) == []   # no track has begun: nothing


def test_tracks_are_cut_from_their_own_first_sample_and_stamped_on_the_stream():
    """Caller from sample 0, callee from 16 kHz sample 1000 (8 kHz 500: 62.5 ms): chunk n
    of a track is its samples 160 (n - 1) on, at the millisecond its first one falls in;
    the chunks go in time order; the audio is the stream's even samples as µ-law."""
    n = 3200 * 2                          # 400 ms at 16 kHz
    left, right = noise(n, 1), noise(n, 2)
    right[:1000] = 0
    t = twilio.TwilioStream(START)
    t.connect()
    out = t.convert([encode({"type": "track", "leg": "caller", "offset": 0}),
                     encode({"type": "track", "leg": "callee", "offset": 1000}),
                     stereo(left[:1234], right[:1234]), stereo(left[1234:], right[1234:])])
    msgs = parsed(out)
    assert [m["sequenceNumber"] for m in msgs[1:]] == [str(i) for i in range(1, len(msgs))]
    inbound, outbound = media(msgs, "inbound"), media(msgs, "outbound")
    assert [m["chunk"] for m in inbound] == [str(i) for i in range(1, 21)]          # 3200 samples: 20 whole
    assert [m["timestamp"] for m in inbound] == [str(20 * i) for i in range(20)]
    assert len(outbound) == (3200 - 500) // 160
    assert [m["timestamp"] for m in outbound] == [str((500 + 160 * i) // 8) for i in range(len(outbound))]
    assert outbound[0]["timestamp"] == "62"
    stamps = [int(m["timestamp"]) for m in media(msgs)]
    assert stamps == sorted(stamps)
    got_in = b"".join(base64.b64decode(m["payload"]) for m in inbound)
    assert got_in == encode_ulaw(left[::2])
    got_out = b"".join(base64.b64decode(m["payload"]) for m in outbound)
    assert got_out == encode_ulaw(right[1000::2][:len(got_out)])
    # the end: the callee's last 140 samples, completed with silence, then stop
    t.stop()
    tail = parsed(t.convert([]))
    assert [m["event"] for m in tail] == ["media", "stop"]
    last = tail[0]["media"]
    assert last["track"] == "outbound" and last["chunk"] == str(len(outbound) + 1)
    assert base64.b64decode(last["payload"]) == encode_ulaw(right[1000 + 2 * 160 * len(outbound)::2]) + b"\xff" * 20
    assert tail[1] == {"event": "stop", "sequenceNumber": str(len(msgs) + 1), "streamSid": "MZ" + "9f0c" * 8,
                       "stop": {"accountSid": twilio.DEFAULT_ACCOUNT_SID, "callSid": twilio.call_sid(START["call_id"])}}


def test_a_mu_law_leg_comes_back_byte_for_byte():
    """The even samples of the 16 kHz stream are the decoded 8 kHz ones: µ-law again,
    the same bytes (but for -0, 0x7f, which decodes as +0)."""
    src = np.random.default_rng(3).integers(0, 256, 1600, dtype=np.uint8).tobytes()
    src = src.replace(b"\x7f", b"\xff")
    pcm8 = decode_ulaw(src)
    up = np.zeros(3200, dtype=np.int16)
    up[::2] = pcm8
    up[1::2] = 12345                       # what the interpolator makes between them is not used
    t = twilio.TwilioStream(START)
    t.connect()
    msgs = parsed(t.convert([encode({"type": "track", "leg": "caller", "offset": 0}), stereo(up, up)]))
    assert b"".join(base64.b64decode(m["payload"]) for m in media(msgs, "inbound")) == src


def test_a_gap_cuts_the_chunks_short_and_the_timestamps_jump():
    left = noise(3200, 4)
    t = twilio.TwilioStream(START)
    t.connect()
    t.convert([])
    first = parsed(t.convert([encode({"type": "track", "leg": "caller", "offset": 0}),
                              stereo(left[:500], left[:500])]))
    assert [m["chunk"] for m in media(first)] == ["1"]                 # 250 samples: one whole chunk
    after = parsed(t.convert([encode({"type": "drop", "offset": 2000, "samples": 1500}),
                              stereo(left[2000:2640], left[2000:2640])]))
    m = media(after)
    assert [(x["chunk"], x["timestamp"]) for x in m] == [("2", "20"), ("3", "125"), ("4", "145")]
    assert base64.b64decode(m[0]["payload"]) == encode_ulaw(left[320:500:2]) + b"\xff" * 70
    assert base64.b64decode(m[1]["payload"]) == encode_ulaw(left[2000:2320:2])
    assert [x["sequenceNumber"] for x in after] == ["3", "4", "5"]      # the drop itself is not sent


def test_dtmf_says_the_track_and_other_events_are_not_sent():
    t = twilio.TwilioStream(START)
    t.connect()
    t.convert([])
    out = parsed(t.convert([encode({"type": "dtmf", "digit": "5", "duration_ms": 120, "leg": "caller"}),
                            encode({"type": "hold", "by": "caller"}),
                            encode({"type": "dtmf", "digit": "#", "duration_ms": 80, "leg": "callee"}),
                            encode({"type": "codec", "codec": "PCMA"})]))
    assert out == [{"event": "dtmf", "streamSid": "MZ" + "9f0c" * 8, "sequenceNumber": "2",
                    "dtmf": {"track": "inbound_track", "digit": "5"}},
                   {"event": "dtmf", "streamSid": "MZ" + "9f0c" * 8, "sequenceNumber": "3",
                    "dtmf": {"track": "outbound_track", "digit": "#"}}]


def test_a_track_placed_behind_what_was_converted_begins_at_the_next_sample():
    t = twilio.TwilioStream(START)
    t.connect()
    t.convert([encode({"type": "track", "leg": "caller", "offset": 0}), stereo(noise(640, 5), noise(640, 6))])
    msgs = parsed(t.convert([encode({"type": "track", "leg": "callee", "offset": 0}),
                             stereo(noise(320, 7), noise(320, 8))]))
    assert [(m["track"], m["timestamp"]) for m in media(msgs)] == [("inbound", "40"), ("outbound", "40")]
