"""Compound RTCP (``rtp2ws.media.rtcp``): vectors packed here by hand from the RFC 3550 and
RFC 3611 layouts (``struct``, not the serializers under test), read field by field;
tshark's RTCP dissector reads the same datagrams the same way; every malformed or
truncated datagram, SRTCP among them, raises ``RtcpError`` with its exact reason, and
random bytes raise nothing else."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess

import pytest

from rtp2ws.media.rtcp import (
    App,
    Bye,
    Dlrr,
    DlrrItem,
    Other,
    ReceiverReport,
    ReportBlock,
    Rrtr,
    RtcpError,
    Sdes,
    SenderReport,
    VoipMetrics,
    Xr,
    XrBlock,
    parse_compound,
    serialize,
)

import callgen
import netgen

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (install.sh installs it)")


def hdr(count: int, pt: int, body: bytes, padding: bool = False) -> bytes:
    """RFC 3550 6.4.1: V=2, P, RC/SC (5 bits), PT, length in 32-bit words minus one."""
    return struct.pack("!BBH", 0x80 | (0x20 if padding else 0) | count, pt, (len(body) + 4) // 4 - 1) + body


def block(ssrc, fraction, cumulative, highest, jitter, lsr, dlsr) -> bytes:
    return struct.pack("!IB", ssrc, fraction) + (cumulative & 0xFFFFFF).to_bytes(3, "big") + struct.pack(
        "!IIII", highest, jitter, lsr, dlsr)


SR_NTP = (0xE1A2B3C4 << 32) | 0x80000000       # 2019-ish, half a second
SR = hdr(2, 200, struct.pack("!IIIIII", 0x11111111, SR_NTP >> 32, SR_NTP & 0xFFFFFFFF, 123456, 250, 40000)
         + block(0x22222222, 64, 12, 0x0001_0010, 80, 0x12345678, 0x00018000)
         + block(0x33333333, 0, -3, 500, 0, 0, 0))
RR = hdr(1, 201, struct.pack("!I", 0x22222222) + block(0x11111111, 3, 1, 1300, 44, 0xB3C48000, 0x00008000))
SDES = hdr(1, 202, struct.pack("!I", 0x11111111) + b"\x01\x0dalice@example" + b"\x02\x05alice" + b"\x00"
           + b"\x00" * ((-(4 + 15 + 7 + 1)) % 4))
BYE = hdr(1, 203, struct.pack("!I", 0x11111111) + b"\x07goodbye")
APP = hdr(3, 204, struct.pack("!I", 0x11111111) + b"TEST" + b"\x01\x02\x03\x04")
VOIP = struct.pack("!IBBBBHHHHbbBBBBBBBBHHH", 0x22222222, 13, 2, 40, 1, 120, 4000, 55, 70, -20, -60, 30, 16,
                   82, 127, 41, 39, 0xB0, 0, 60, 80, 200)
XR = hdr(0, 207, struct.pack("!I", 0x11111111)
         + struct.pack("!BBHII", 4, 0, 2, 0xE1A2B3C5, 0x40000000)                    # RRTR
         + struct.pack("!BBH", 5, 0, 3) + struct.pack("!III", 0x22222222, 0xB3C48000, 0x4000)   # DLRR
         + struct.pack("!BBH", 7, 0, 8) + VOIP                                         # VoIP Metrics
         + struct.pack("!BBHI", 42, 9, 1, 0xDEADBEEF))                                 # a type not parsed here
FEEDBACK = hdr(1, 205, struct.pack("!II", 0x22222222, 0x11111111))                  # RTPFB generic NACK, no FCI


def test_sender_report_with_two_blocks():
    (sr,) = parse_compound(SR)
    assert sr == SenderReport(0x11111111, SR_NTP, 123456, 250, 40000, (
        ReportBlock(0x22222222, 64, 12, 0x00010010, 80, 0x12345678, 0x18000),
        ReportBlock(0x33333333, 0, -3, 500, 0, 0, 0)))
    assert sr.ntp_middle == 0xB3C48000          # what a report block's LSR names
    assert serialize(sr) == SR


def test_a_compound_packet_of_every_type():
    data = RR + SDES + BYE + APP + XR + FEEDBACK
    rr, sdes, bye, app, xr, fb = parse_compound(data)
    assert rr == ReceiverReport(0x22222222, (ReportBlock(0x11111111, 3, 1, 1300, 44, 0xB3C48000, 0x8000),))
    assert sdes == Sdes(((0x11111111, ((1, b"alice@example"), (2, b"alice"))),))
    assert bye == Bye((0x11111111,), b"goodbye")
    assert app == App(3, 0x11111111, b"TEST", b"\x01\x02\x03\x04")
    assert xr.ssrc == 0x11111111
    rrtr, dlrr, voip, other = xr.blocks
    assert rrtr == Rrtr(0xE1A2B3C5_40000000) and rrtr.ntp_middle == 0xB3C54000
    assert dlrr == Dlrr((DlrrItem(0x22222222, 0xB3C48000, 0x4000),))
    assert voip == VoipMetrics(0x22222222, 13, 2, 40, 1, 120, 4000, 55, 70, -20, -60, 30, 16, 82, 127, 41, 39,
                               0xB0, 60, 80, 200)
    assert other == XrBlock(42, 9, struct.pack("!I", 0xDEADBEEF))
    assert fb == Other(205, 1, struct.pack("!II", 0x22222222, 0x11111111))
    assert b"".join(serialize(p) for p in (rr, sdes, bye, app, xr, fb)) == data


def test_padding_on_the_last_packet():
    body = struct.pack("!I", 0x22222222) + b"\x00\x00\x00\x04"        # 4 bytes of padding, the last says 4
    (rr,) = parse_compound(SR[:0] + hdr(0, 201, body, padding=True))
    assert rr == ReceiverReport(0x22222222, ())


@pytest.mark.parametrize("data,msg", [
    (b"\x80\xc9\x00", "RTCP packet is shorter than 4 bytes"),
    (b"\x40\xc9\x00\x01" + b"\x00" * 4, "RTCP packet has invalid version 1"),
    (SR[:-4], "RTCP lengths do not add up to the datagram's"),
    (SR + b"\x00\x00", "RTCP lengths do not add up to the datagram's"),
    (RR + b"\x80\x00\x00\x01", "RTCP packet type 0 is outside 192-223"),
    (hdr(2, 201, struct.pack("!I", 1) + block(2, 0, 0, 0, 0, 0, 0)), "RTCP RR has truncated report blocks"),
    (hdr(1, 200, b"\x00" * 20), "RTCP SR is shorter than its sender info"),
    (hdr(0, 201, b""), "RTCP RR has no SSRC"),
    (hdr(0, 201, struct.pack("!I", 2) + b"\x00\x00\x00\x04", padding=True) + RR,
     "RTCP padding on a packet that is not the last"),
    (hdr(0, 201, struct.pack("!I", 2) + b"\x00\x00\x00\x09", padding=True), "RTCP padding length is invalid"),
    (hdr(1, 202, struct.pack("!I", 1) + b"\x01\x09abc\x00"), "RTCP SDES item is truncated"),
    (hdr(1, 202, struct.pack("!I", 1) + b"\x01\x02ab"), "RTCP SDES chunk has no end item"),
    (hdr(2, 203, struct.pack("!I", 1)), "RTCP BYE has truncated SSRCs"),
    (hdr(1, 203, struct.pack("!I", 1) + b"\x09abc"), "RTCP BYE reason is truncated"),
    (hdr(0, 204, struct.pack("!I", 1)), "RTCP APP is shorter than its SSRC and name"),
    (hdr(0, 207, struct.pack("!I", 1) + struct.pack("!BBH", 4, 0, 1) + b"\x00" * 4),
     "RTCP XR RRTR block length is not 2"),
    (hdr(0, 207, struct.pack("!I", 1) + struct.pack("!BBH", 5, 0, 2) + b"\x00" * 8),
     "RTCP XR DLRR block length is not a multiple of 3"),
    (hdr(0, 207, struct.pack("!I", 1) + struct.pack("!BBH", 7, 0, 2) + b"\x00" * 8),
     "RTCP XR VoIP Metrics block length is not 8"),
    (hdr(0, 207, struct.pack("!I", 1) + struct.pack("!BBH", 7, 0, 8) + b"\x00" * 8), "RTCP XR block 7 is truncated"),
])
def test_malformed_datagrams_raise_their_reason(data, msg):
    with pytest.raises(RtcpError) as e:
        parse_compound(data)
    assert str(e.value) == msg


def test_srtcp_is_refused():
    """SRTCP (RFC 3711 3.4): the RTCP (encrypted past its first 8 bytes, or with E = 0 in
    clear), then E flag and SRTCP index, then an authentication tag (80 or 32 bits) that
    no RTCP length covers: never parsed as reports, whatever the index and the tag."""
    rng = random.Random(11)
    clear = RR + SDES
    refused = 0
    for index in (0, 1, 2, 3, 255, 0x7FFF, 0x10000, 0x7FFFFFFF):
        for e_bit in (0, 1):
            for tag_len in (10, 4):
                for _ in range(20):
                    body = clear if not e_bit else clear[:8] + rng.randbytes(len(clear) - 8)
                    data = body + struct.pack("!I", e_bit << 31 | index) + rng.randbytes(tag_len)
                    with pytest.raises(RtcpError):
                        parse_compound(data)
                    refused += 1
    assert refused == 8 * 2 * 2 * 20


def test_random_and_cut_datagrams_raise_rtcp_error_only():
    rng = random.Random(5)
    good = SR + RR + SDES + BYE + APP + XR
    inputs = [good[:n] for n in range(len(good))]
    for _ in range(3000):
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        inputs.append(bytes(b))
        inputs.append(bytes([0x80 | rng.randrange(64), rng.choice((200, 201, 202, 203, 204, 207))])
                      + rng.randbytes(rng.randrange(60)))
    parsed = 0
    for data in inputs:
        try:
            parse_compound(data)
            parsed += 1
        except RtcpError:
            pass
    assert parsed > 100       # some mutations keep the lengths: they parse, into whatever they say


# -- tshark reads the vectors the same way ------------------------------------------------------

FIELDS = ("rtcp.pt", "rtcp.senderssrc", "rtcp.timestamp.ntp.msw", "rtcp.timestamp.ntp.lsw", "rtcp.timestamp.rtp",
          "rtcp.sender.packetcount", "rtcp.sender.octetcount", "rtcp.ssrc.identifier", "rtcp.ssrc.fraction",
          "rtcp.ssrc.cum_nr", "rtcp.ssrc.discarded", "rtcp.ssrc.ext_high", "rtcp.ssrc.jitter", "rtcp.ssrc.lsr", "rtcp.ssrc.dlsr",
          "rtcp.sdes.type", "rtcp.sdes.text", "rtcp.app.subtype", "rtcp.app.name", "rtcp.xr.bt", "rtcp.xr.lrr",
          "rtcp.xr.dlrr", "rtcp.xr.voipmetrics.burstdensity", "rtcp.xr.voipmetrics.gapdensity",
          "rtcp.xr.voipmetrics.burstduration", "rtcp.xr.voipmetrics.gapduration", "rtcp.xr.voipmetrics.rtdelay",
          "rtcp.xr.voipmetrics.esdelay", "rtcp.xr.voipmetrics.signallevel", "rtcp.xr.voipmetrics.noiselevel",
          "rtcp.xr.voipmetrics.rerl", "rtcp.xr.voipmetrics.gmin", "rtcp.xr.voipmetrics.rfactor",
          "rtcp.xr.voipmetrics.moslq", "rtcp.xr.voipmetrics.moscq", "rtcp.xr.voipmetrics.jbnominal",
          "rtcp.xr.voipmetrics.jbmax", "rtcp.xr.voipmetrics.jbabsmax", "_ws.malformed", "_ws.expert.message")


def tshark_fields(path) -> list[dict[str, list[str]]]:
    """Per datagram, tshark's values of ``FIELDS`` (the RTCP port decoded as RTCP)."""
    out = subprocess.run([TSHARK, "-n", "-r", str(path), "-d", "udp.port==7001,rtcp", "-T", "fields", "-E",
                          "separator=\t", "-E", "occurrence=a", "-E", "aggregator=|",
                          *[x for f in FIELDS for x in ("-e", f)]],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    rows = []
    for line in out.splitlines():
        values = line.split("\t")
        rows.append({f: (v.split("|") if v else []) for f, v in zip(FIELDS, values, strict=True)})
    return rows


def ours(packets) -> dict[str, list[str]]:
    """The same fields from our parse, as tshark prints them (decimal; hex for SSRCs)."""
    got: dict[str, list[str]] = {f: [] for f in FIELDS}

    def add(field, value):
        got[field].append(value if isinstance(value, str) else str(value))

    for p in packets:
        pt = {SenderReport: 200, ReceiverReport: 201, Sdes: 202, Bye: 203, App: 204, Xr: 207}.get(type(p))
        add("rtcp.pt", pt if pt is not None else p.packet_type)
        if isinstance(p, SenderReport | ReceiverReport):
            add("rtcp.senderssrc", f"0x{p.ssrc:08x}")
            if isinstance(p, SenderReport):
                add("rtcp.timestamp.ntp.msw", p.ntp >> 32)
                add("rtcp.timestamp.ntp.lsw", p.ntp & 0xFFFFFFFF)
                add("rtcp.timestamp.rtp", p.rtp_timestamp)
                add("rtcp.sender.packetcount", p.packets)
                add("rtcp.sender.octetcount", p.octets)
            for b in p.reports:
                add("rtcp.ssrc.identifier", f"0x{b.ssrc:08x}")
                add("rtcp.ssrc.fraction", b.fraction_lost)
                add("rtcp.ssrc.cum_nr", b.cumulative_lost)
                add("rtcp.ssrc.ext_high", b.highest_seq)
                add("rtcp.ssrc.jitter", b.jitter)
                add("rtcp.ssrc.lsr", b.lsr)
                add("rtcp.ssrc.dlsr", b.dlsr)
        elif isinstance(p, Sdes):
            for ssrc, items in p.chunks:
                add("rtcp.ssrc.identifier", f"0x{ssrc:08x}")
                for kind, value in items:
                    add("rtcp.sdes.type", kind)
                    add("rtcp.sdes.text", value.decode())
                add("rtcp.sdes.type", 0)          # the chunk's end item
        elif isinstance(p, App):
            add("rtcp.app.subtype", p.subtype)
            add("rtcp.app.name", p.name.decode())
        elif isinstance(p, Bye):
            for ssrc in p.ssrcs:
                add("rtcp.ssrc.identifier", f"0x{ssrc:08x}")
            if p.reason:
                add("rtcp.sdes.text", p.reason.decode())     # tshark's field for a BYE's reason
        elif isinstance(p, Xr):
            add("rtcp.senderssrc", f"0x{p.ssrc:08x}")
            for b in p.blocks:
                add("rtcp.xr.bt", b.block_type if isinstance(b, XrBlock) else {Rrtr: 4, Dlrr: 5, VoipMetrics: 7}[
                    type(b)])
                if isinstance(b, Dlrr):      # (an RRTR's time tshark prints as a date: checked above)
                    for item in b.items:
                        add("rtcp.ssrc.identifier", f"0x{item.ssrc:08x}")
                        add("rtcp.xr.lrr", item.lrr)
                        add("rtcp.xr.dlrr", item.dlrr)
                elif isinstance(b, VoipMetrics):
                    add("rtcp.ssrc.identifier", f"0x{b.ssrc:08x}")
                    add("rtcp.ssrc.fraction", b.loss_rate)         # tshark's field for the loss rate
                    add("rtcp.ssrc.discarded", b.discard_rate)
                    for name, value in (("burstdensity", b.burst_density), ("gapdensity", b.gap_density),
                                        ("burstduration", b.burst_duration), ("gapduration", b.gap_duration),
                                        ("rtdelay", b.round_trip_delay), ("esdelay", b.end_system_delay),
                                        ("signallevel", b.signal_level), ("noiselevel", b.noise_level),
                                        ("rerl", b.rerl), ("gmin", b.gmin), ("rfactor", b.r_factor),
                                        ("moslq", f"{b.mos_lq / 10:g}" if b.mos_lq != 127 else None),
                                        ("moscq", f"{b.mos_cq / 10:g}" if b.mos_cq != 127 else None),
                                        ("jbnominal", b.jb_nominal), ("jbmax", b.jb_maximum),
                                        ("jbabsmax", b.jb_abs_max)):
                        if value is not None:
                            add(f"rtcp.xr.voipmetrics.{name}", value)
    return got


@needs_tshark
def test_tshark_reads_the_vectors_as_we_do(tmp_path):
    """Each datagram in a pcap to UDP port 7001 (decoded as RTCP): tshark's fields (every
    occurrence, in order) are ours, and it finds nothing malformed."""
    datagrams = [SR, RR + SDES + BYE, RR + APP, RR + XR, SR + SDES + BYE + APP + XR + FEEDBACK]
    a = callgen.Party("10.0.0.1", 5060, 7000, "a")
    b = callgen.Party("10.0.0.2", 5060, 7000, "b")
    frames = [(1.0 + i, netgen.udp(a.ip, 7001, b.ip, 7001, d)) for i, d in enumerate(datagrams)]
    path = callgen.write(tmp_path / "rtcp.pcap", frames)
    theirs = tshark_fields(path)
    assert len(theirs) == len(datagrams)
    compared = 0
    for data, row in zip(datagrams, theirs, strict=True):
        assert row["_ws.malformed"] == [], row["_ws.expert.message"]
        mine = ours(parse_compound(data))
        for field in FIELDS[:-2]:
            if field in ("rtcp.ssrc.identifier", "rtcp.senderssrc", "rtcp.timestamp.ntp.msw",
                         "rtcp.timestamp.ntp.lsw"):
                # tshark also lists these for packets we keep elsewhere (the SSRC of a BYE,
                # an XR's, the RRTR's time): ours must be among its, in order
                it = iter(row[field])
                assert all(v in it for v in mine[field]), (field, mine[field], row[field])
            else:
                assert mine[field] == row[field], (field, mine[field], row[field])
            compared += len(mine[field])
    assert compared > 80
