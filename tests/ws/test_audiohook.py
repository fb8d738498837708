"""ws.audiohook: the AudioHook client session, sans I/O (messages and a ``now`` in,
messages and events out), against the protocol's description: the envelope of
every message, open/opened, no audio before it, ping/pong and rtt, pause/resume
and hold with positions, discarded, close/closed, disconnect, reconnect, the
time-outs, and malformed server messages counted and skipped."""

import json

import pytest

from rtp2ws.ws import audiohook as ah

ORG = "d7934305-0972-4844-938e-9060eef73d05"
IDENT = ah.Identity(ORG, ah.derived_id("call@x"), {"id": ah.derived_id("call@x", "sip:1@x"), "ani": "1",
                                                   "aniName": "Al", "dnis": "2"},
                    ah.offered_channels(2), custom_config={"X-Customer-Id": "c-1"})


def sends(outs):
    return [o.message for o in outs if isinstance(o, ah.Send)]


def server(s, kind, seq, params=None, clientseq=None):
    """A server message of session ``s`` as the description has it."""
    return json.dumps({"version": "2", "id": s.id, "type": kind, "seq": seq,
                       "clientseq": s.seq if clientseq is None else clientseq, "parameters": params or {}})


def opened(s, channels=("external", "internal"), seq=1, **extra):
    media = [ah.media(tuple(channels))] if channels is not None else []
    return s.receive(server(s, "opened", seq, {"media": media, **extra}), 1.0)


def test_durations_are_exact_seconds():
    assert [ah.duration(n) for n in (0, 1, 8000, 12000, 8001, 800)] == \
        ["PT0S", "PT0.000125S", "PT1S", "PT1.5S", "PT1.000125S", "PT0.1S"]
    assert ah.parse_duration("PT1.5S") == 12000 and ah.parse_duration("PT0S") == 0
    with pytest.raises(ValueError, match="not a duration"):
        ah.parse_duration("1.5")
    with pytest.raises(ValueError, match="out of range"):        # infinity as a float: not OverflowError
        ah.parse_duration("PT" + "9" * 400 + "S")


def test_open_has_the_call_and_the_offered_media_and_no_audio_goes_before_opened():
    s = ah.Session(IDENT)
    (msg,) = sends(s.open(0.0))
    assert msg == {"version": "2", "id": s.id, "type": "open", "seq": 1, "serverseq": 0, "position": "PT0S",
                   "parameters": {"organizationId": ORG, "conversationId": IDENT.conversation_id,
                                  "participant": IDENT.participant,
                                  "media": [{"type": "audio", "format": "PCMU", "channels": ["external", "internal"],
                                             "rate": 8000},
                                            {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000},
                                            {"type": "audio", "format": "PCMU", "channels": ["internal"], "rate": 8000}],
                                  "customConfig": {"X-Customer-Id": "c-1"}}}
    assert not s.streaming and s.state == ah.OPENING
    outs = opened(s, ("internal",))
    assert ah.Opened(("internal",)) in outs and s.streaming and s.channels == ("internal",)
    # a ping at once, with the envelope: seq 2, serverseq 1 (opened's)
    (ping,) = sends(outs)
    assert ping == {"version": "2", "id": s.id, "type": "ping", "seq": 2, "serverseq": 1, "position": "PT0S",
                    "parameters": {}}
    assert ah.offered_channels(1, "callee#2") == [("internal",)] and ah.offered_channels(1, "caller#2") == [
        ("external",)]


def test_pings_measure_the_round_trip_and_say_it():
    s = ah.Session(IDENT)
    s.open(0.0)
    opened(s)                              # ping seq 2 at t=1.0
    assert s.receive(server(s, "pong", 2, clientseq=2), 1.25) != []     # the second ping at once, with rtt
    assert s.rtt == 0.25 and (s.pongs, s.rtt_max) == (1, 0.25)     # what the session log line says
    ping = sends(s.receive(server(s, "pong", 2, clientseq=2), 1.25))
    assert ping == [] and s.malformed == 2     # a repeated seq, and a pong of no ping: counted, no ping
    s2 = ah.Session(IDENT)
    s2.open(0.0)
    opened(s2)
    (p2,) = sends(s2.receive(server(s2, "pong", 2, clientseq=2), 1.5))
    assert p2["type"] == "ping" and p2["parameters"] == {"rtt": "PT0.5S"} and p2["seq"] == 3
    assert sends(s2.receive(server(s2, "pong", 3, clientseq=3), 1.6)) == []
    assert s2.timer() == pytest.approx(1.6 + ah.PING_INTERVAL_S)
    assert sends(s2.tick(1.6 + ah.PING_INTERVAL_S))[0]["parameters"] == {"rtt": "PT0.1S"}


def test_pause_resume_and_hold_keep_the_position_counting():
    s = ah.Session(IDENT)
    s.open(0.0)
    opened(s)
    s.sent(8000)
    (paused,) = sends(s.receive(server(s, "pause", 2), 2.0))
    assert paused["type"] == "paused" and paused["position"] == "PT1S" and not s.streaming
    assert sends(s.discard(4000)) == []                   # not sent while paused: counted into the pause
    (again,) = sends(s.receive(server(s, "pause", 3), 2.1))
    assert again["type"] == "paused"                      # idempotent: said again
    (resumed,) = sends(s.receive(server(s, "resume", 4), 2.5))
    assert resumed["type"] == "resumed" and resumed["parameters"] == {"start": "PT1S", "discarded": "PT0.5S"}
    assert resumed["position"] == "PT1.5S" and s.streaming
    # the call on hold: the client pauses on its own; the server's resume does not end a hold
    assert sends(s.hold(True))[0]["type"] == "paused"
    s.discard(800)
    assert sends(s.receive(server(s, "resume", 5), 3.0))[0]["type"] == "paused"
    (back,) = sends(s.hold(False))
    assert back["parameters"] == {"start": "PT1.5S", "discarded": "PT0.1S"} and back["position"] == "PT1.6S"
    # seq one more every message, serverseq the last server seq seen
    assert back["seq"] == 8 and back["serverseq"] == 5


def test_discarded_says_what_was_dropped_and_moves_the_position():
    s = ah.Session(IDENT, position=800)
    s.open(0.0)
    opened(s, discardTo="PT0.2S")
    assert s.discard_to == 1600
    (d,) = sends(s.discard(800))
    assert d["type"] == "discarded" and d["parameters"] == {"start": "PT0.1S", "discarded": "PT0.1S"}
    assert d["position"] == "PT0.2S" and s.position == 1600      # as resumed: after what it tells


def test_close_waits_for_closed_and_acknowledges_everything():
    s = ah.Session(IDENT)
    s.open(0.0)
    opened(s)
    s.sent(16000)
    (c,) = sends(s.close("end", 5.0))
    assert c["type"] == "close" and c["parameters"] == {"reason": "end"} and c["position"] == "PT2S"
    assert s.acked == 0 and s.timer() == 5.0 + s.close_timeout_s
    assert s.receive(server(s, "closed", 2), 5.1) == [ah.Closed()] and s.acked == 16000 and s.state == ah.CLOSED


def test_the_server_asks_to_disconnect_or_reconnect():
    s = ah.Session(IDENT)
    s.open(0.0)
    opened(s)
    outs = s.receive(server(s, "disconnect", 2, {"reason": "completed", "info": "done"}), 2.0)
    assert ah.Disconnect("completed", "done") in outs and sends(outs)[0]["parameters"] == {"reason": "disconnect"}
    r = ah.Session(IDENT, position=4000, continued=[{"id": s.id, "serverseq": 3, "clientseq": 3}])
    (o,) = sends(r.open(0.0))
    assert o["position"] == "PT0.5S" and o["parameters"]["continuedSessions"] == [
        {"id": s.id, "serverseq": 3, "clientseq": 3}]
    opened(r)
    outs = r.receive(server(r, "reconnect", 2, {"info": "maintenance"}), 2.0)
    assert ah.Reconnect("maintenance") in outs and sends(outs)[0]["parameters"] == {"reason": "reconnect"}


def test_time_outs():
    s = ah.Session(IDENT)
    s.open(0.0)
    assert s.timer() == ah.OPEN_TIMEOUT_S
    assert s.tick(ah.OPEN_TIMEOUT_S - 0.01) == []
    outs = s.tick(ah.OPEN_TIMEOUT_S)
    assert sends(outs)[0]["parameters"] == {"code": 408, "message": "Open transaction timeout"}
    assert outs[-1] == ah.Failed(f"the server did not answer 'open' with 'opened' within {ah.OPEN_TIMEOUT_S:g} s",
                                 refused=True)
    c = ah.Session(IDENT, close_timeout_s=2.0)
    c.open(0.0)
    opened(c)
    c.close("end", 3.0)
    assert c.tick(5.0) == [ah.Failed("the server did not answer 'close' with 'closed' within 2 s")]


def test_a_medium_not_offered_fails_the_session():
    s = ah.Session(IDENT)
    s.open(0.0)
    outs = s.receive(server(s, "opened", 1, {"media": [{"type": "audio", "format": "L16", "channels": ["external"],
                                                         "rate": 8000}]}), 1.0)
    assert [m["type"] for m in sends(outs)] == ["error", "close"] and isinstance(outs[-1], ah.Failed)
    assert outs[-1].refused and not s.streaming
    # none: open, but no audio goes out (discarded as it comes)
    t = ah.Session(IDENT)
    t.open(0.0)
    assert ah.Opened(()) in opened(t, None) and not t.streaming


@pytest.mark.parametrize("raw, why", [
    ("not json", "not JSON"), ("[1]", "not a JSON object"), (b"\x00", "binary message"),
    ('{"version": "1"}', "version '1'"),
    ('{"version": "2", "id": "other", "type": "pong", "seq": 1, "clientseq": 1, "parameters": {}}', "is not this"),
])
def test_malformed_server_messages_are_counted_and_skipped(raw, why):
    s = ah.Session(IDENT)
    s.open(0.0)
    (out,) = s.receive(raw, 1.0)
    assert isinstance(out, ah.Malformed) and why in out.why and s.malformed == 1 and s.serverseq == 0
    assert s.state == ah.OPENING
    assert ah.Opened(("external", "internal")) in opened(s)       # and the session goes on


def test_events_and_updates_are_tolerated_and_unknown_types_counted():
    s = ah.Session(IDENT)
    s.open(0.0)
    opened(s)
    assert s.receive(server(s, "event", 2, {"entities": []}), 1.0) == [ah.ServerEvent("event", {"entities": []})]
    (bad,) = s.receive(server(s, "frobnicate", 3), 1.0)
    assert isinstance(bad, ah.Malformed) and s.serverseq == 3
    gap = s.receive(server(s, "updated", 9), 1.0)
    assert isinstance(gap[0], ah.Malformed) and "seq 9 after 3" in gap[0].why and s.serverseq == 9


def test_display_names():
    assert ah.display_name('"Alice \\"A\\" Smith" <sip:1@x>;tag=1') == 'Alice "A" Smith'
    assert ah.display_name("Bob <sip:2@x>") == "Bob"
    assert ah.display_name("<sip:2@x>") == "" and ah.display_name(None) == "" and ah.display_name("sip:2@x") == ""
