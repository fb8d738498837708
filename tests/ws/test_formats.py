"""ws.formats: the tag each format's messages carry."""

import pytest

from rtp2ws.codec.audioformat import AudioFormat
from rtp2ws.sinks.wav import folder_name
from rtp2ws.ws import formats


def test_rtp2ws_keeps_the_legs_own_tag():
    for tag in ("caller", "callee", "caller#2", "stereo"):
        assert formats.wire_tag("rtp2ws", "a84b4c76e66710@pc33", tag) == tag


def test_seed_names_the_stream_by_call_and_leg():
    assert formats.wire_tag("seed", "a84b4c76e66710@pc33", "caller") == "a84b4c76e66710@pc33-caller"
    assert formats.wire_tag("seed", "a84b4c76e66710@pc33", "callee#2") == "a84b4c76e66710@pc33-callee#2"


@pytest.mark.parametrize("key", ["../../etc/passwd", "a/b", "x#2", "", ".", "..", "tab\there", "é@host"])
def test_seed_tags_are_one_file_name_and_tell_calls_apart(key):
    tag = formats.wire_tag("seed", key, "caller")
    name = tag + ".pcm"
    assert "/" not in name and "\0" not in name and name not in (".", "..")
    assert tag == folder_name(key) + "-caller"


def test_seed_tags_of_calls_that_look_alike_differ():
    keys = ["a/b", "a_b", "a?b", "a/b#2"]
    assert len({formats.wire_tag("seed", k, "caller") for k in keys}) == len(keys)


def test_an_unknown_format_is_refused_with_the_list():
    with pytest.raises(ValueError, match="rtp2ws, seed"):
        formats.check("twilio-ish")
    assert formats.check("seed") == "seed"


# -- what the other servers' formats put on the wire (docs/protocol.md, with their sources) --

START = {"type": "start", "call_id": "a84b4c76e66710@pc33", "tag": "caller", "stream_id": "9f0c", "version": 1,
         "from": "sip:alice@atlanta.example.com", "to": "tel:+15083728299", "src": "10.0.0.1:4000",
         "dst": "10.0.0.2:5000", "codec": "L16", "sample_rate": 16000, "channels": 1, "frame_ms": 20,
         "start_time": "2024-01-01T00:00:00.000+00:00",
         "sip_headers": {"X-Customer-Id": "42", "X-Missing": None}}


def test_rtp2ws_and_seed_send_their_own_start_with_resumed_and_offset():
    for fmt in ("rtp2ws", "seed"):
        assert formats.first_message(fmt, START, resumed=True, offset=320) == dict(START, resumed=True, offset=320)
        assert formats.event(fmt, {"type": "hold", "by": "caller"}) == {"type": "hold", "by": "caller"}
        assert formats.spec(fmt).resumes and formats.spec(fmt).subprotocol is None


def test_vonage_first_message_is_websocket_connected_with_the_headers_at_the_top_level():
    msg = formats.first_message("vonage", START, resumed=True, offset=320)
    assert msg == {"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
                   "call_id": "a84b4c76e66710@pc33", "tag": "caller", "stream_id": "9f0c",
                   "from": "sip:alice@atlanta.example.com", "to": "tel:+15083728299", "X-Customer-Id": "42"}
    assert list(msg)[:2] == ["event", "content-type"]
    assert formats.first_message("vonage", dict(START, sample_rate=8000))["content-type"] == "audio/l16;rate=8000"


def test_vonage_sends_dtmf_its_way_and_no_other_event():
    dtmf = {"type": "dtmf", "call_id": "c", "tag": "caller", "stream_id": "s", "digit": "5", "duration_ms": 260,
            "offset": 1600, "time": "..."}
    assert formats.event("vonage", dtmf) == {"event": "websocket:dtmf", "digit": "5", "duration": 260}
    for kind in ("hold", "resume", "codec", "drop", "end"):
        assert formats.event("vonage", {"type": kind, "offset": 0}) is None


@pytest.mark.parametrize("fmt, subprotocol", [("audiofork", "audio.drachtio.org"), ("jambonz", "audio.jambonz.org")])
def test_audiofork_and_jambonz_send_listen_metadata_and_no_event(fmt, subprotocol):
    f = formats.spec(fmt)
    assert f.subprotocol == subprotocol and not f.resumes and not f.whole_frames and f.stereo
    assert formats.first_message(fmt, START, resumed=True, offset=320) == {
        "callSid": "9f0c", "callId": "a84b4c76e66710@pc33", "from": "alice", "to": "+15083728299",
        "sampleRate": 16000, "mixType": "mono", "tag": "caller", "X-Customer-Id": "42"}
    stereo = formats.first_message(fmt, dict(START, tag="stereo", channels=2, **{"from": "anonymous"}))
    assert (stereo["mixType"], stereo["tag"], stereo["from"]) == ("stereo", "stereo", "anonymous")
    mixed = formats.first_message(fmt, dict(START, tag="mixed", sample_rate=8000))
    assert (mixed["mixType"], mixed["tag"], mixed["sampleRate"]) == ("mixed", "mixed", 8000)
    for kind in ("dtmf", "hold", "resume", "codec"):
        assert formats.event(fmt, {"type": kind, "digit": "1", "duration_ms": 100}) is None


def test_options_a_format_contradicts_are_refused_saying_why():
    formats.check_options("vonage", frame_ms=20, sip_headers=["X-Customer-Id"], headers=["Authorization"])
    with pytest.raises(ValueError, match=r"--ws-format vonage sends 20 ms frames.*--frame-ms 100 contradicts"):
        formats.check_options("vonage", frame_ms=100)
    with pytest.raises(ValueError, match="--ws-format vonage carries one channel.*--stereo"):
        formats.check_options("vonage", stereo=True)
    formats.check_options("audiofork", frame_ms=100, stereo=True)
    with pytest.raises(ValueError, match="--sip-header From: .*vonage.*would take the place of one"):
        formats.check_options("vonage", sip_headers=["From"])
    with pytest.raises(ValueError, match="--sip-header callsid: .*jambonz"):
        formats.check_options("jambonz", sip_headers=["callsid"])
    formats.check_options("rtp2ws", sip_headers=["From"])
    # audiohook: one session per call (--stereo or not), its per-connection headers its own
    formats.check_options("audiohook", frame_ms=100, stereo=True, headers=["X-API-KEY", "Audiohook-Organization-Id"])
    for name in ("Audiohook-Session-Id", "audiohook-correlation-id"):
        with pytest.raises(ValueError, match=f"--header {name}: with --ws-format audiohook every connection has its "
                                             f"own \\(Audiohook-Session-Id, Audiohook-Correlation-Id: rtp2ws sets"):
            formats.check_options("audiohook", headers=[name])
    for fmt in formats.FORMATS:
        with pytest.raises(ValueError, match="--header Sec-WebSocket-Protocol: the WebSocket subprotocol comes "
                                             "from --ws-format .*audiofork offers audio.drachtio.org"):
            formats.check_options(fmt, headers=["Sec-WebSocket-Protocol"])


@pytest.mark.parametrize("fmt, rates", [("vonage", (8000, 16000)), ("audiofork", (8000, 16000)),
                                        ("jambonz", (8000, 16000, 24000, 48000)),
                                        ("rtp2ws", (8000, 16000, 24000, 48000)),
                                        ("seed", (8000, 16000, 24000, 48000))])
def test_the_audio_a_format_cannot_carry_is_refused_saying_why(fmt, rates):
    """Vonage's content-type is audio/l16 at 8 or 16 kHz; mod_audio_fork streams L16 at
    8k or 16k, jambonz's listen also at 24 and 48 kHz; rtp2ws's own start message names
    any rate and codec.  Vonage carries one channel: a mixed stream, not a stereo one."""
    own = fmt in ("rtp2ws", "seed")
    for rate in (8000, 16000, 24000, 48000):
        for encoding in ("l16", "mulaw", "alaw"):
            for mix in ("per-leg", "stereo", "mixed"):
                audio = AudioFormat(rate, encoding, mix)
                if encoding != "l16" and not own:
                    why = f"--ws-format {fmt} carries l16 audio only.*--encoding {encoding} cannot go with it"
                elif rate not in rates:
                    why = f"--ws-format {fmt} carries audio at {' or '.join(map(str, rates))} Hz only.*--rate {rate}"
                elif mix == "stereo" and fmt == "vonage":
                    why = "--ws-format vonage carries one channel"
                else:
                    formats.check_options(fmt, audio=audio)
                    continue
                with pytest.raises(ValueError, match=why):
                    formats.check_options(fmt, audio=audio)


# what websockets' server (15+) and Node's ws (8.x) answer a client without the subprotocol they want
WEBSOCKETS_MISSING = b"Failed to open a WebSocket connection: missing subprotocol.\n"
WEBSOCKETS_INVALID = b"Failed to open a WebSocket connection: invalid subprotocol; expected one of audio.drachtio.org.\n"
NODE_WS_INVALID = b"Invalid Sec-WebSocket-Protocol header"


@pytest.mark.parametrize("body", [WEBSOCKETS_MISSING, WEBSOCKETS_INVALID, NODE_WS_INVALID])
def test_a_400_about_the_subprotocol_says_which_format_offers_which(body):
    hint = formats.refusal_hint("rtp2ws", 400, body)
    assert hint.startswith("the server refuses the WebSocket subprotocol: --ws-format rtp2ws offered none")
    assert "audiofork offers audio.drachtio.org; jambonz offers audio.jambonz.org" in hint
    assert "offered audio.jambonz.org" in formats.refusal_hint("jambonz", 400, body)


def test_other_refusals_are_not_about_the_subprotocol():
    assert formats.refusal_hint("rtp2ws", 400, b"Failed to open a WebSocket connection: missing Upgrade header.\n") \
        is None
    assert formats.refusal_hint("rtp2ws", 400, None) is None
    assert formats.refusal_hint("rtp2ws", 401, WEBSOCKETS_MISSING) is None


def test_twilio_is_one_text_stream_per_call_of_20_ms_and_refuses_what_contradicts_it():
    f = formats.spec("twilio")
    assert f.call_stream and f.text_media and not f.resumes and f.subprotocol is None and f.frame_ms == 20
    formats.check_options("twilio", frame_ms=20, sip_headers=["From", "X-Customer-Id"])   # customParameters
    with pytest.raises(ValueError, match="--ws-format twilio sends 20 ms frames, as its protocol fixes; "
                                         "--frame-ms 40 contradicts it"):
        formats.check_options("twilio", frame_ms=40)
    # the stream is the format's own (both legs, µ-law at 8 kHz): --rate, --encoding, --mix set the WAVs only
    for fmt in ("twilio", "audiohook"):
        formats.check_options(fmt, stereo=True, audio=AudioFormat(48000, "alaw", "mixed"))
    with pytest.raises(ValueError, match="carries l16 audio only"):
        formats.check_options("vonage", audio=AudioFormat(16000, "alaw", "per-leg"))
    # DTMF and the tracks' places go to ws.twilio, which makes Twilio's messages; the rest is not sent
    assert formats.event("twilio", {"type": "dtmf", "digit": "5", "leg": "caller"}) == \
        {"type": "dtmf", "digit": "5", "leg": "caller"}
    assert formats.event("twilio", {"type": "track", "leg": "callee", "offset": 800})["offset"] == 800
    for kind in ("hold", "resume", "codec"):
        assert formats.event("twilio", {"type": kind}) is None
    assert [s.name for s in formats.SPECS.values() if s.call_stream] == ["twilio"]
