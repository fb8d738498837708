import socket

from rtp2ws.signalling.correlator import Correlator, format_addr, pack_ip


def A(text, port):
    return (pack_ip(text), port)


def test_match_by_destination_and_bind_nat_source():
    c = Correlator()
    c.expect("L1", dst=A("10.0.0.2", 5000), src=A("10.0.0.1", 4000))
    # NAT rewrote the source port: still matched through the destination, then bound
    hit = c.lookup(pack_ip("203.0.113.9"), 61000, pack_ip("10.0.0.2"), 5000)
    assert hit == ("L1", False)
    assert (pack_ip("203.0.113.9"), 61000, pack_ip("10.0.0.2"), 5000) in c.flows


def test_same_sdp_address_two_calls_kept_apart_by_source():
    c = Correlator()
    c.expect("call1", dst=A("10.0.0.9", 30000), src=A("10.0.0.1", 4000))
    c.expect("call2", dst=A("10.0.0.9", 30000), src=A("10.0.0.2", 4000))
    assert c.lookup(pack_ip("10.0.0.1"), 4000, pack_ip("10.0.0.9"), 30000)[0] == "call1"
    assert c.lookup(pack_ip("10.0.0.2"), 4000, pack_ip("10.0.0.9"), 30000)[0] == "call2"
    assert c.lookup(pack_ip("10.0.0.1"), 4000, pack_ip("10.0.0.9"), 30000)[0] == "call1"


def test_symmetric_rtp_towards_natted_receiver():
    c = Correlator()
    c.expect("L", dst=A("192.168.1.10", 4000), src=A("10.0.0.5", 20000))
    hit = c.lookup(pack_ip("10.0.0.5"), 20000, pack_ip("198.51.100.7"), 33333)
    assert hit == ("L", False)


def test_rtcp_port_and_remove():
    c = Correlator()
    c.expect("L", dst=A("10.0.0.2", 5000), src=None, rtcp=A("10.0.0.2", 5001))
    assert c.lookup(pack_ip("10.0.0.1"), 4001, pack_ip("10.0.0.2"), 5001) == ("L", True)
    c.remove("L")
    assert c.flows == {}
    assert c.lookup(pack_ip("10.0.0.1"), 4000, pack_ip("10.0.0.2"), 5000) is None


def test_new_claim_on_address_rebinds():
    c = Correlator()
    c.expect("old", dst=A("10.0.0.2", 5000), src=A("10.0.0.1", 4000))
    assert c.lookup(pack_ip("10.0.0.1"), 4000, pack_ip("10.0.0.2"), 5000)[0] == "old"
    c.remove("old")
    c.expect("new", dst=A("10.0.0.2", 5000), src=A("10.0.0.1", 4000))
    assert c.lookup(pack_ip("10.0.0.1"), 4000, pack_ip("10.0.0.2"), 5000)[0] == "new"


def test_format_addr():
    assert format_addr(pack_ip("10.1.2.3"), 5060) == "10.1.2.3:5060"
    assert format_addr(socket.inet_pton(socket.AF_INET6, "2001:db8::1"), 5060) == "[2001:db8::1]:5060"
    assert pack_ip("not an ip") is None


def test_assigned_flow_stays_with_its_leg_until_removed():
    """A second concurrent flow of an SDP leg, given a leg of its own (``caller#2``),
    is not re-resolved by SDP when expectations change; ``remove`` releases it."""
    c = Correlator()
    c.expect("caller", dst=A("10.0.0.2", 5000), src=A("10.0.0.1", 4000))
    relay = (pack_ip("10.0.0.9"), 7002, pack_ip("10.0.0.2"), 5000)
    unbound = []
    c.on_unbind = unbound.append
    assert c.lookup(*relay) == ("caller", False)
    c.assign(relay, "caller#2")
    assert unbound == [relay]                     # the fast path is told the old binding went
    assert c.lookup(*relay) == ("caller#2", False)
    assert c.expected("caller#2") == (None, None)
    assert c.expected("caller") == (A("10.0.0.2", 5000), A("10.0.0.1", 4000))
    assert c.expected("nobody") is None
    # a re-INVITE claims the same address again: SDP flows are re-resolved, the assigned one is not
    c.lookup(pack_ip("10.0.0.1"), 4000, pack_ip("10.0.0.2"), 5000)
    c.expect("caller", dst=A("10.0.0.2", 5000), src=A("10.0.0.1", 4000))
    assert relay in c.flows and c.flows[relay] == ("caller#2", False)
    assert (pack_ip("10.0.0.1"), 4000, pack_ip("10.0.0.2"), 5000) not in c.flows
    c.remove("caller#2")
    assert relay not in c.flows and c._assigned == {}
    assert c.lookup(*relay) == ("caller", False)   # back to matching by SDP
