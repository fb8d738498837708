"""ws.audiohook.Session, the AudioHook client's state machine, fed whatever a server
sends, between whatever the stream does."""

from __future__ import annotations

import json

import atheris

from rtp2ws.ws import audiohook as ah

from ..common import check, entry

INVARIANT = """\
Session.receive(text or bytes, now) never raises: it returns a list of the Out types,
and a message that is not an AudioHook server message of this session is a Malformed
out and counted (malformed == the Malformed outs).  Every message the session sends is
JSON-serialisable with version "2", the session's id, a seq one more than the last it
sent, a serverseq no later than the last seq received, and a position that is a
duration (PT<n>S); its position never goes back.  tick(now) called again at the same
now leaves nothing due by then within 3 calls (no timer spins).  No call takes more
than the per-call limit."""

SID = "00000000-0000-4000-8000-000000000001"
KINDS = ("opened", "pong", "pause", "resume", "disconnect", "reconnect", "closed", "event", "update", "updated",
         "error", "ping", "open", "x")
OUTS = (ah.Send, ah.Opened, ah.Closed, ah.Disconnect, ah.Reconnect, ah.Failed, ah.Malformed, ah.ServerEvent)
STATES = (None, ah.OPENING, ah.OPEN, ah.CLOSING, ah.CLOSED)


def _params(fdp: atheris.FuzzedDataProvider, kind: str) -> object:
    if fdp.ConsumeIntInRange(0, 7) == 0:
        return fdp.PickValueInList([None, [], "x", 1, {"media": "x"}])
    p: dict[str, object] = {}
    if kind == "opened":
        pick = fdp.ConsumeIntInRange(0, 4)
        p["media"] = [] if pick == 0 else [ah.media(("external", "internal"))] if pick == 1 else \
            [ah.media((fdp.PickValueInList(["external", "internal", "x"]),))] if pick == 2 else \
            [ah.media(("external",)), ah.media(("internal",))] if pick == 3 else [{"type": "audio"}]
        if fdp.ConsumeBool():
            p["startPaused"] = fdp.ConsumeBool()
        if fdp.ConsumeBool():
            p["discardTo"] = fdp.PickValueInList(["PT0S", "PT1.5S", "PT" + "9" * 400 + "S", "1", 5, "PT-1S",
                                                  ah.duration(fdp.ConsumeIntInRange(0, 10 ** 7))])
    elif kind in ("disconnect", "error"):
        p["reason"] = fdp.PickValueInList(["completed", "error", "unauthorized", 7])
        if fdp.ConsumeBool():
            p["info"] = fdp.ConsumeUnicodeNoSurrogates(20)
    elif kind == "reconnect" and fdp.ConsumeBool():
        p["info"] = fdp.ConsumeUnicodeNoSurrogates(20)
    elif kind == "event":
        p["entities"] = [{"type": "transcript", "data": {}}] if fdp.ConsumeBool() else "x"
    return p


def _server_message(fdp: atheris.FuzzedDataProvider, s: ah.Session, sent_seq: int) -> str | bytes:
    how = fdp.ConsumeIntInRange(0, 15)
    if how == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    if how == 1:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64))
    kind = fdp.PickValueInList(list(KINDS))
    msg: dict[str, object] = {
        "version": ah.VERSION if how != 2 else fdp.PickValueInList(["1", 2, None]),
        "id": s.id if how != 3 else fdp.PickValueInList([SID[:-1] + "2", None, 7]),
        "type": kind if how != 4 else fdp.PickValueInList([None, 3, ""]),
        "seq": s.serverseq + 1 if how < 12 else fdp.PickValueInList([0, s.serverseq, s.serverseq + 5, -1, True, "1"]),
        "clientseq": fdp.ConsumeIntInRange(0, sent_seq + 2) if how != 5 else fdp.PickValueInList([-1, 1.5, None]),
        "parameters": _params(fdp, kind),
    }
    if how == 6:
        del msg[fdp.PickValueInList(list(msg))]
    text = json.dumps(msg)
    return text if how != 7 else text + " " * ah.MAX_TEXT


def run(data: bytes, clock) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    offered = [("external", "internal"), ("external",), ("internal",)]
    ident = ah.Identity(SID, SID, {"id": SID, "ani": "1", "aniName": "", "dnis": "2"}, offered)
    s = ah.Session(ident, id=SID, position=fdp.ConsumeIntInRange(0, 10 ** 6))
    now = 0.0
    sent_seq = 0
    malformed = 0
    position = s.position

    def look(outs: object) -> None:
        nonlocal sent_seq, malformed, position
        check(isinstance(outs, list), "not a list")
        assert isinstance(outs, list)
        for o in outs:
            check(isinstance(o, OUTS), f"out {o!r}")
            if isinstance(o, ah.Malformed):
                malformed += 1
            if isinstance(o, ah.Send):
                m = o.message
                clock.call(json.dumps, m)
                check(m.get("version") == ah.VERSION and m.get("id") == s.id, f"envelope {m}")
                check(m.get("seq") == sent_seq + 1, f"seq {m.get('seq')} after {sent_seq}")
                sent_seq = m["seq"]
                check(type(m.get("serverseq")) is int and 0 <= m["serverseq"] <= s.serverseq, f"serverseq {m}")
                check(isinstance(m.get("position"), str) and ah.parse_duration(m["position"]) >= 0, f"position {m}")
        check(s.state in STATES, f"state {s.state}")
        check(s.position >= position, f"position went back: {s.position} < {position}")
        position = s.position
        check(s.malformed == malformed, f"malformed {s.malformed}, {malformed} Malformed outs")

    look(clock.call(s.open, now))
    for _ in range(fdp.ConsumeIntInRange(0, 48)):
        now += fdp.PickValueInList([0.0, 0.02, 1.0, 6.0, 11.0])
        op = fdp.ConsumeIntInRange(0, 9)
        if op < 5:
            look(clock.call(s.receive, _server_message(fdp, s, sent_seq), now))
        elif op == 5:
            if s.streaming:
                clock.call(s.sent, fdp.ConsumeIntInRange(0, 8000))
        elif op == 6:
            look(clock.call(s.discard, fdp.ConsumeIntInRange(-5, 8000)))
        elif op == 7:
            look(clock.call(s.hold, fdp.ConsumeBool()))
        elif op == 8:
            look(clock.call(s.close, fdp.PickValueInList(list(ah.CLOSE_REASONS)), now))
        for _ in range(3):
            look(clock.call(s.tick, now))
        due = s.timer()
        check(due is None or due > now, f"a timer due at {due} still due after 3 ticks at {now}")


TestOneInput = entry("audiohook", run)
