"""Call registry: life cycle, sides, SDP updates, duplicates, hold, end reasons."""

import pytest

from rtp2ws.signalling.calls import CallRegistry, CallStarted, HoldChanged, MediaUpdated
from rtp2ws.signalling.sip import parse_message

from callgen import Call, Party, sdp
from timelimit import within

A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")


def sip_of(frames):
    """The SIP payloads of callgen frames (IPv4/UDP packets)."""
    out = []
    for t, ip in frames:
        ihl = (ip[0] & 0x0F) * 4
        out.append((t, parse_message(ip[ihl + 8:])))
    return out


def feed(reg, frames):
    events = []
    for t, msg in sip_of(frames):
        events += reg.on_message(msg, t)
    return events


def kinds(events):
    return [type(e).__name__ for e in events]


def test_basic_call_and_bye():
    c = Call("c1@x", A, B)
    reg = CallRegistry()
    ev = feed(reg, c.setup(10.0))
    assert kinds(ev) == ["CallStarted", "MediaUpdated", "MediaUpdated"]
    call = ev[0].call
    assert (call.from_uri, call.to_uri) == ("sip:1000@10.0.0.1", "sip:2000@10.0.0.2")
    assert ev[1].side == "caller" and ev[1].offer.port == 4000
    assert ev[2].side == "callee" and ev[2].offer.port == 5000 and ev[2].offer.address == "10.0.0.2"
    assert call.state == "confirmed"
    ev = feed(reg, c.bye(20.0, from_a=False))
    assert kinds(ev) == ["CallEnded"] and call.end_reason == "bye" and call.end == 20.0
    assert call.sip_messages == 7


def test_retransmissions_and_proxy_hops_counted_once():
    c = Call("c2@x", A, B)
    frames = c.setup(0.0)
    again = [(t + 0.5, ip) for t, ip in frames]
    reg = CallRegistry()
    ev = feed(reg, frames + again)
    assert kinds(ev) == ["CallStarted", "MediaUpdated", "MediaUpdated"]
    call = ev[0].call
    assert call.sip_messages == 5 and call.sip_duplicates == 5
    # the INVITE seen again on a second hop (another Via on top, another branch)
    t, invite = sip_of(frames[:1])[0]
    hop = parse_message(invite_bytes_with_extra_via(frames[0][1]))
    assert reg.on_message(hop, 1.0) == []
    assert call.sip_duplicates == 6


def invite_bytes_with_extra_via(ip):
    ihl = (ip[0] & 0x0F) * 4
    data = ip[ihl + 8:]
    i = data.index(b"\r\n") + 2
    return data[:i] + b"Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKproxyhop\r\n" + data[i:]


def test_cancel_and_rejected_and_auth_retry():
    c = Call("c3@x", A, B)
    reg = CallRegistry()
    f = c.request(0, "INVITE", body=sdp(A.ip, A.rtp_port), to_tag=False) + c.response(0.1, 180, "Ringing", "INVITE")
    f += c.request(1.0, "CANCEL", to_tag=False) + c.response(1.01, 200, "OK", "CANCEL", to_tag=False)
    f += c.response(1.02, 487, "Request Terminated", "INVITE")
    ev = feed(reg, f)
    assert kinds(ev) == ["CallStarted", "MediaUpdated", "CallEnded"]
    assert ev[-1].call.end_reason == "cancel" and ev[-1].call.end == 1.0

    c = Call("c4@x", A, B)
    ev = feed(reg, c.request(0, "INVITE", to_tag=False) + c.response(0.1, 486, "Busy Here", "INVITE"))
    assert ev[-1].call.end_reason == "rejected 486"

    # 407 then the retried INVITE with credentials continues the same call
    c = Call("c5@x", A, B)
    f = c.request(0, "INVITE", body=sdp(A.ip, A.rtp_port), to_tag=False)
    f += c.response(0.01, 407, "Proxy Authentication Required", "INVITE")
    f += c.request(0.02, "ACK")
    c.cseq = 2
    f += c.request(0.1, "INVITE", body=sdp(A.ip, A.rtp_port), to_tag=False)
    f += c.response(0.2, 200, "OK", "INVITE", body=sdp(B.ip, B.rtp_port))
    ev = feed(reg, f)
    assert kinds(ev).count("CallStarted") == 1
    call = ev[0].call
    assert call.state == "confirmed" and not call.ended
    # a 407 never retried ends as rejected after the retry window
    c = Call("c6@x", A, B)
    ev = feed(reg, c.request(0, "INVITE", to_tag=False) + c.response(0.01, 407, "Proxy Auth", "INVITE"))
    call = ev[0].call
    ev = reg.expire(40.0)
    assert call.end_reason == "rejected 407" and call.end == 0.01


def test_late_offer_early_media_prack_update():
    c = Call("c7@x", A, B)
    reg = CallRegistry()
    f = c.request(0, "INVITE", to_tag=False)                       # no SDP: late offer
    f += c.response(0.1, 183, "Session Progress", "INVITE", body=sdp(B.ip, 6000))   # early media
    f += c.request(0.2, "PRACK", cseq=2, body=sdp(A.ip, 4002))
    f += c.response(0.5, 200, "OK", "INVITE", body=sdp(B.ip, 6002))
    f += c.request(0.6, "ACK", body=sdp(A.ip, 4004))
    c.cseq = 3
    f += c.request(5.0, "UPDATE", from_a=False, body=sdp(B.ip, 6100))
    ev = feed(reg, f)
    ups = [(e.side, e.offer.port) for e in ev if isinstance(e, MediaUpdated)]
    assert ups == [("callee", 6000), ("caller", 4002), ("callee", 6002), ("caller", 4004), ("callee", 6100)]


def test_hold_and_resume_and_reinvite():
    c = Call("c8@x", A, B)
    reg = CallRegistry()
    ev = feed(reg, c.setup(0))
    c.cseq = 2
    f = c.request(10, "INVITE", body=sdp(A.ip, A.rtp_port, direction="sendonly"))
    f += c.response(10.1, 200, "OK", "INVITE", body=sdp(B.ip, B.rtp_port, direction="recvonly"))
    c.cseq = 3
    f += c.request(20, "INVITE", body=sdp("0.0.0.0", A.rtp_port))
    c.cseq = 4
    f += c.request(30, "INVITE", body=sdp(A.ip, 4010, pts=(0, 101)))
    ev = feed(reg, f)
    holds = [(e.side, e.on_hold, e.at) for e in ev if isinstance(e, HoldChanged)]
    assert holds == [("caller", True, 10)] + [("caller", False, 30)]
    ups = [e for e in ev if isinstance(e, MediaUpdated)]
    # c=0.0.0.0 keeps the previous address; the last re-INVITE moves media and changes codec
    assert ups[-1].offer.port == 4010 and ups[-1].offer.payload_map[0][0] == "PCMU"
    assert all(e.offer.address != "0.0.0.0" for e in ups)


def test_call_id_reused_after_end_is_a_new_call():
    c = Call("reuse@x", A, B)
    reg = CallRegistry()
    ev = feed(reg, c.setup(0) + c.bye(5))
    first = ev[0].call
    c2 = Call("reuse@x", A, B, from_tag="other", cseq=100)
    ev = feed(reg, c2.setup(6))
    assert isinstance(ev[0], CallStarted) and ev[0].call is not first
    assert ev[0].call.key == "reuse@x#2"


def test_timeout_and_capture_end():
    reg = CallRegistry(rtp_timeout=30)
    c = Call("t@x", A, B)
    call = feed(reg, c.setup(0))[0].call
    reg.touch(call, 20.0)
    assert reg.expire(49.0) == []
    ev = reg.expire(50.5)
    assert kinds(ev) == ["CallEnded"] and call.end_reason == "timeout" and call.end == 20.0
    c = Call("t2@x", A, B)
    call = feed(reg, c.setup(100))[0].call
    ev = reg.finish(101.0)
    assert call.end_reason == "capture_end" and call.end == 101.0


def test_a_sip_message_stamped_earlier_than_the_last_media_does_not_move_activity_back():
    """Capture time can step back (two capture points, a mirror's queueing): a call's
    last activity is the latest time anything was seen on it, whatever the order the
    SIP and the media were seen in, so the fast path (which hands the registry a leg's
    latest arrival in one go) and packet-at-a-time end a call at the same time."""
    reg = CallRegistry(rtp_timeout=30)
    c = Call("back@x", A, B)
    call = feed(reg, c.setup(0))[0].call
    reg.touch(call, 20.0)
    feed(reg, c.request(19.5, "INFO", body=""))       # stamped before the media
    assert call.last_activity == 20.0
    assert reg.expire(49.9) == []
    ev = reg.expire(50.0)
    assert kinds(ev) == ["CallEnded"] and call.end_reason == "timeout" and call.end == 20.0


def test_compact_headers():
    c = Call("compact@x", A, B, compact=True)
    reg = CallRegistry()
    ev = feed(reg, c.setup(0) + c.bye(3))
    assert kinds(ev) == ["CallStarted", "MediaUpdated", "MediaUpdated", "CallEnded"]


def test_ended_calls_are_forgotten_after_linger():
    reg = CallRegistry()
    for i in range(50):
        c = Call(f"gone{i}@x", A, B)
        feed(reg, c.setup(i) + c.bye(i + 1))
    assert len(reg._ended) == 50 and len(reg._reuse) == 50
    assert reg.next_deadline() == 1 + 32.0
    reg.expire(200.0)
    assert reg._ended == {} and reg._reuse == {} and reg.active == {}


# -- every timer makes progress (issue 10, item 2) -------------------------------------

def progresses(reg, now):
    """expire(now) returns, and whatever is still armed is due strictly after now."""
    with within(2.0):
        events = reg.expire(now)
    dl = reg.next_deadline()
    assert dl is None or dl > now, (dl, now)
    return events


def test_a_call_idle_exactly_the_timeout_ends_and_never_spins():
    reg = CallRegistry(rtp_timeout=300)
    c = Call("exact@x", A, B)
    call = feed(reg, c.request(1000.0, "INVITE", to_tag=False) +
                c.response(1000.0, 100, "Trying", "INVITE", to_tag=False))[0].call
    assert reg.next_deadline() == 1000.0 + 300
    assert progresses(reg, 1299.999) == []
    ev = progresses(reg, 1300.0)                     # a packet exactly rtp_timeout later
    assert kinds(ev) == ["CallEnded"] and call.end_reason == "timeout" and call.end == 1000.0


def test_an_invite_nobody_answers_ends_after_timer_b():
    """Not even a 100 Trying: the caller's own stack gives up after Timer B (32 s), and so
    does the registry, so that an INVITE flood holds each call 32 s, not rtp_timeout."""
    reg = CallRegistry(rtp_timeout=300)
    c = Call("unanswered@x", A, B)
    call = feed(reg, c.request(1000.0, "INVITE", to_tag=False))[0].call
    assert reg.next_deadline() == 1032.0
    reg.touch(call, 1010.0)                          # media keeps it: 32 s from the last activity
    assert progresses(reg, 1032.0) == []
    ev = progresses(reg, 1042.0)
    assert kinds(ev) == ["CallEnded"] and call.end_reason == "no_response" and call.end == 1010.0
    answered = Call("answered@x", A, B)
    call = feed(reg, answered.request(2000.0, "INVITE", to_tag=False) +
                answered.response(2001.0, 100, "Trying", "INVITE", to_tag=False))[0].call
    assert reg.next_deadline() == 2301.0             # a response: rtp_timeout again, nothing stale
    assert progresses(reg, 2100.0) == [] and not call.ended


def test_a_challenge_unanswered_exactly_32_s_ends_as_rejected():
    reg = CallRegistry()
    c = Call("auth@x", A, B)
    call = feed(reg, c.request(5.0, "INVITE", to_tag=False) + c.response(5.5, 401, "Unauthorized", "INVITE"))[0].call
    assert progresses(reg, 5.5 + 31.999) == []
    ev = progresses(reg, 5.5 + 32.0)
    assert kinds(ev) == ["CallEnded"] and call.end_reason == "rejected 401"


def test_an_evenly_paced_invite_flood_expires_in_one_pass():
    reg = CallRegistry(rtp_timeout=300)
    for i in range(2000):
        c = Call(f"flood{i}@x", A, B)
        reg.on_message(sip_of(c.request(0, "INVITE", to_tag=False))[0][1], 1000.0 + i * 0.25)
    ended = 0
    for i in range(0, 2000, 97):                    # expire exactly at some calls' due time
        ev = progresses(reg, 1032.0 + i * 0.25)
        ended += len(ev)
        assert len(reg.active) == 2000 - ended == 2000 - (i + 1)
    ended += len(progresses(reg, 1032.0 + 2000 * 0.25))
    assert reg.active == {} and ended == reg.stats["calls"] == 2000


@pytest.mark.parametrize("t0", [2.0 ** 62, 1e20, 1.7e308 / 2])
def test_timestamps_so_large_that_t_plus_timeout_is_t(t0):
    """pcapng's if_tsoffset can make capture times where ``t + 300 == t``."""
    assert t0 + 300 == t0
    reg = CallRegistry(rtp_timeout=300)
    c = Call("huge@x", A, B)
    for t, msg in sip_of(c.setup(0.0)):
        reg.on_message(msg, t0)
    ev = progresses(reg, t0)
    assert kinds(ev) == ["CallEnded"]                 # due at once: it cannot be kept for "later"
    assert progresses(reg, t0) == []
    assert progresses(reg, t0 * 1.5) == [] and reg._ended == {}


def test_ended_calls_linger_exactly_32_s():
    reg = CallRegistry()
    c = Call("linger@x", A, B)
    feed(reg, c.setup(0) + c.bye(10.0))
    assert reg.next_deadline() == 42.0
    progresses(reg, 42.0)
    assert reg._ended == {}


def test_message_identities_a_call_remembers_are_bounded():
    """Thousands of distinct in-dialog requests on one call (an INFO flood): the
    identities kept to spot retransmissions stay at MAX_SEEN, and a retransmission
    of a recent one is still a duplicate."""
    from rtp2ws.signalling.calls import MAX_SEEN

    reg = CallRegistry()
    c = Call("info@x", A, B)
    call = feed(reg, c.setup(0.0))[0].call
    for i in range(5000):
        c.cseq = 10 + i
        feed(reg, c.request(1.0 + i * 0.001, "INFO"))
    assert len(call._seen) == MAX_SEEN and call.sip_messages == 5 + 5000
    assert feed(reg, c.request(7.0, "INFO")) == [] and call.sip_duplicates == 1


def test_each_sides_crypto_keys_are_its_own_and_a_key_change_is_an_update():
    """The a=crypto lines of a side's SDP are the keys that side sends with (RFC 4568
    section 6.1): the caller's offer's on the caller's MediaOffer, the callee's answer's
    on the callee's; new keys in a re-INVITE are a MediaUpdated, the same ones are not."""
    key = "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
    c = Call("srtp@x", A, B)
    offer = sdp(A.ip, A.rtp_port, proto="RTP/SAVP", extra=f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {key}\na=crypto:x")
    answer = sdp(B.ip, B.rtp_port, proto="RTP/SAVP", extra=f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {key[:-4]}AAAA")
    reg = CallRegistry()
    frames = c.request(0.0, "INVITE", body=offer, to_tag=False) + c.response(0.1, 200, "OK", "INVITE", body=answer)
    ev = feed(reg, frames)
    call = ev[0].call
    caller, callee = call.media["caller"].crypto, call.media["callee"].crypto
    assert len(caller) == len(callee) == 1 and caller[0].keys != callee[0].keys
    assert reg.stats["sdp_crypto_errors"] == 1
    c.cseq += 1
    same = c.request(1.0, "INVITE", body=offer)
    assert kinds(feed(reg, same)) == []
    c.cseq += 1
    rekey = c.request(2.0, "INVITE", body=offer.replace("PS1u", "QS1u"))
    ev = feed(reg, rekey)
    assert kinds(ev) == ["MediaUpdated"] and ev[0].side == "caller" and ev[0].offer.crypto != caller
