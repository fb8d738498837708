"""rtcp.parse_compound (and serialize as its oracle), then quality.apply_rtcp and report."""

from __future__ import annotations

import json
import struct

import atheris
import jsonschema

from rtp2ws.media import rtcp
from rtp2ws.media.quality import LegQuality, apply_rtcp, pair
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
)
from rtp2ws.ws.protocol import SCHEMAS

from ..common import check, entry

INVARIANT = """\
parse_compound(data) returns a tuple of RTCP packets or raises RtcpError (exactly: the
pipeline catches only that), on raw bytes and on compounds built from the input (SR,
RR, SDES, BYE, APP, XR RRTR/DLRR/VoIP Metrics/other, feedback) with one field off
(version, type, count, a length that lies, an XR block's or SDES item's length, padding
bits and counts, truncation, trailing bytes).  What parses serialises back
(serialize, packet by packet) to a compound that parses to the same packets, but for
an APP's data or another type's body that padding left short of a 32-bit word, which
serialize refuses with ValueError.  apply_rtcp of what parses into a pair of
LegQuality (media.quality.pair; RTP fed too, with any finite capture times in any
order) never raises, and report() of each, for PCMU, G729, an unrated codec and none,
at clocks 8000 and 48000, is JSON without NaN or infinities and valid by the end
message's quality schema (ws.protocol.SCHEMAS: what a sink checks; MOS in 1..4.5,
delays and round trips not negative).
No call takes more than the per-call limit."""

SSRC_A, SSRC_B = 0x1111, 0x2222            # the two legs' SSRCs, named by reports
SSRCS = [SSRC_A, SSRC_B, 0, 0xFFFFFFFF, 7]
# capture times: any finite float, in any order (fuzz/README.md)
TIMES = [0.0, 1000.0, 1000.02, 999.0, -5.0, 1e9, 1e300, -1e300, 1.7976931348623157e308, -1.7976931348623157e308,
         5e-324]
CODECS = ["PCMU", "G729", "opus", None]
QUALITY = jsonschema.Draft202012Validator(SCHEMAS["end"]["properties"]["quality"])
RAW = 0x40          # first byte below: the rest is a datagram as is


def _u32(fdp) -> int:
    return fdp.ConsumeIntInRange(0, 0xFFFFFFFF) if fdp.ConsumeBool() else fdp.PickValueInList([0, 1, 0xFFFFFFFF])


def _time(fdp, prev: float) -> float:
    how = fdp.ConsumeIntInRange(0, 7)
    if how == 0:
        return fdp.PickValueInList(TIMES)
    if how == 1:
        return fdp.ConsumeRegularFloat()
    return prev + fdp.PickValueInList([0.0, 0.02, 0.5, 5.0, -0.02, 301.0])


def _words(fdp, most: int) -> bytes:
    """Up to ``most`` 32-bit words of fuzz bytes (whole words even when the input runs out)."""
    data = fdp.ConsumeBytes(4 * fdp.ConsumeIntInRange(0, most))
    return data + bytes(-len(data) % 4)


def _block(fdp, ntps: list[int]) -> ReportBlock:
    lsr = fdp.PickValueInList(ntps) if ntps and fdp.ConsumeBool() else _u32(fdp)
    return ReportBlock(fdp.PickValueInList(SSRCS), fdp.ConsumeIntInRange(0, 255),
                       fdp.ConsumeIntInRange(-(1 << 23), (1 << 23) - 1), _u32(fdp), _u32(fdp), lsr, _u32(fdp))


def _packet(fdp, ntps: list[int]):
    kind = fdp.ConsumeIntInRange(0, 7)
    if kind == 0:
        ntp = fdp.ConsumeIntInRange(0, (1 << 64) - 1)
        ntps.append((ntp >> 16) & 0xFFFFFFFF)
        return SenderReport(fdp.PickValueInList(SSRCS), ntp, _u32(fdp), _u32(fdp), _u32(fdp),
                            tuple(_block(fdp, ntps) for _ in range(fdp.ConsumeIntInRange(0, 3))))
    if kind == 1:
        return ReceiverReport(fdp.PickValueInList(SSRCS), tuple(_block(fdp, ntps)
                                                                for _ in range(fdp.ConsumeIntInRange(0, 3))))
    if kind == 2:
        return Sdes(tuple((_u32(fdp), tuple((fdp.ConsumeIntInRange(1, 9), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40)))
                                             for _ in range(fdp.ConsumeIntInRange(0, 3))))
                          for _ in range(fdp.ConsumeIntInRange(0, 3))))
    if kind == 3:
        return Bye(tuple(_u32(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))),
                   fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 30)))
    if kind == 4:
        return App(fdp.ConsumeIntInRange(0, 31), _u32(fdp), fdp.ConsumeBytes(4).ljust(4, b"x"), _words(fdp, 6))
    if kind == 5:
        return Other(fdp.PickValueInList([205, 206, 192, 223]), fdp.ConsumeIntInRange(0, 31),
                     _words(fdp, 4))
    blocks = []
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        bt = fdp.ConsumeIntInRange(0, 3)
        if bt == 0:
            ntp = fdp.ConsumeIntInRange(0, (1 << 64) - 1)
            ntps.append((ntp >> 16) & 0xFFFFFFFF)
            blocks.append(Rrtr(ntp))
        elif bt == 1:
            blocks.append(Dlrr(tuple(DlrrItem(fdp.PickValueInList(SSRCS),
                                              fdp.PickValueInList(ntps) if ntps and fdp.ConsumeBool() else _u32(fdp),
                                              _u32(fdp)) for _ in range(fdp.ConsumeIntInRange(0, 2)))))
        elif bt == 2:
            v = [fdp.PickValueInList(SSRCS)] + [fdp.ConsumeIntInRange(0, 255) for _ in range(4)] \
                + [fdp.ConsumeIntInRange(0, 0xFFFF) for _ in range(4)] + [fdp.ConsumeIntInRange(-128, 127)
                                                                          for _ in range(2)] \
                + [fdp.ConsumeIntInRange(0, 255) for _ in range(7)] + [fdp.ConsumeIntInRange(0, 0xFFFF)
                                                                       for _ in range(3)]
            blocks.append(VoipMetrics(*v))
        else:
            blocks.append(XrBlock(fdp.ConsumeIntInRange(0, 255) if fdp.ConsumeBool() else 6,
                                  fdp.ConsumeIntInRange(0, 255), _words(fdp, 3)))
            if blocks[-1].block_type in (rtcp.XR_RRTR, rtcp.XR_DLRR, rtcp.XR_VOIP_METRICS):
                blocks[-1] = XrBlock(8, 0, b"")
    return Xr(fdp.PickValueInList(SSRCS), tuple(blocks))


def _off(fdp, pkt: bytes) -> bytes:
    """``pkt`` (one serialised packet) with one field off, or as it is."""
    how = fdp.ConsumeIntInRange(0, 15)
    b = bytearray(pkt)
    if how == 1:                                       # version
        b[0] = (b[0] & 0x3F) | fdp.PickValueInList([0x00, 0x40, 0xC0])
    elif how == 2:                                     # type
        b[1] = fdp.ConsumeIntInRange(0, 255)
    elif how == 3:                                     # count
        b[0] = (b[0] & 0xE0) | fdp.ConsumeIntInRange(0, 31)
    elif how == 4:                                     # a length that lies
        words = (len(b) // 4 - 1 + fdp.PickValueInList([-2, -1, 1, 2, 0x7FFF])) & 0xFFFF
        struct.pack_into("!H", b, 2, words)
    elif how == 5:                                     # truncated
        return bytes(b[:fdp.ConsumeIntInRange(0, max(0, len(b) - 1))])
    elif how == 6 or how == 7:                         # padding: right (how 6) or wrong counts
        n = 4 * fdp.ConsumeIntInRange(1, 3)
        count = n if how == 6 else fdp.PickValueInList([0, 1, 2, 3, n - 1, n + 1, n + 4, 255])
        b[0] |= 0x20
        b += bytes(n - 1) + bytes([count])
        struct.pack_into("!H", b, 2, len(b) // 4 - 1)
    elif how == 8:                                     # padding bit, no padding
        b[0] |= 0x20
    elif how == 9 and b[1] == rtcp.RTCP_XR and len(b) >= 12:      # an XR block's length lies
        struct.pack_into("!H", b, 10, fdp.ConsumeIntInRange(0, 0xFFFF))
    elif how == 10 and b[1] == rtcp.RTCP_SDES and len(b) >= 10:   # an SDES item's length lies
        b[9] = fdp.ConsumeIntInRange(0, 255)
    elif how == 11 and b[1] == rtcp.RTCP_BYE:                    # a BYE reason's length lies
        i = 4 + 4 * (b[0] & 0x1F)
        if i < len(b):
            b[i] = fdp.ConsumeIntInRange(0, 255)
    elif how == 12 and len(b) > 4:                      # any byte of the body
        b[fdp.ConsumeIntInRange(4, len(b) - 1)] = fdp.ConsumeIntInRange(0, 255)
    elif how == 13:                                     # trailing bytes (the last packet's: lengths don't add up)
        b += fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 14))
    return bytes(b)


def _compound(fdp, ntps: list[int]) -> bytes:
    n = fdp.ConsumeIntInRange(1, 4)
    return b"".join(_off(fdp, rtcp.serialize(_packet(fdp, ntps))) for _ in range(n))


def _parse(data: bytes, clock):
    try:
        pkts = clock.call(rtcp.parse_compound, data)
    except RtcpError as e:
        check(type(e) is RtcpError, "error class")
        return None
    check(type(pkts) is tuple and len(pkts) >= 1, "parse_compound returned no packets")
    for p in pkts:
        check(type(p) in (SenderReport, ReceiverReport, Sdes, Bye, App, Xr, Other), f"packet type {type(p)}")
    # the oracle: serialise, parse again
    try:
        again = b"".join(clock.call(rtcp.serialize, p) for p in pkts)
    except ValueError:
        check(any(isinstance(p, App) and len(p.data) % 4 or isinstance(p, Other) and len(p.body) % 4 for p in pkts),
              "serialize refused a packet parse_compound gave")
        return pkts
    back = clock.call(rtcp.parse_compound, again)
    check(back == pkts and repr(back) == repr(pkts), f"round trip {pkts!r} -> {back!r}")
    return pkts


def _ssrcs(pkts) -> list[int]:
    """The SSRCs a raw compound's reports name (raw mode: they are the legs')."""
    out = []
    for p in pkts:
        if isinstance(p, SenderReport | ReceiverReport):
            out += [b.ssrc for b in p.reports]
        elif isinstance(p, Xr):
            for b in p.blocks:
                if isinstance(b, Dlrr):
                    out += [i.ssrc for i in b.items]
                elif isinstance(b, VoipMetrics):
                    out.append(b.ssrc)
    return out


def _check_report(r: dict, schema: bool) -> None:
    try:
        json.dumps(r, allow_nan=False)
    except ValueError as e:
        check(False, f"report is not JSON ({e}): {r!r}")
    if schema:      # jsonschema takes a millisecond: one report of each leg per input
        err = jsonschema.exceptions.best_match(QUALITY.iter_errors(r))
        check(err is None, f"report breaks the quality schema: {err.message if err else ''}: {r!r}")
    else:           # what the schema says of what differs between codecs and clocks
        check(r["mos"] is None or 1.0 <= r["mos"] <= 4.5, f"mos {r['mos']}")
        check(r["remote"] is None or r["remote"]["jitter_ms"] >= 0, "remote jitter")


def run(data: bytes, clock) -> None:
    if not data:
        return
    qa, qb = LegQuality(), LegQuality()
    pair(qa, qb)
    by_ssrc = {SSRC_A: qa, SSRC_B: qb}
    if data[0] < RAW:
        pkts = _parse(data[1:], clock)
        if pkts is not None:
            for i, s in enumerate(_ssrcs(pkts)):
                by_ssrc.setdefault(s, (qa, qb)[i % 2])
                qa.on_rtp(s, 100, 0, False, 0, 1000.0)
            check(type(clock.call(apply_rtcp, pkts, qa, by_ssrc, 1000.5)) is int, "apply_rtcp's count")
        fdp = atheris.FuzzedDataProvider(b"")
    else:
        fdp = atheris.FuzzedDataProvider(data[1:])
        ntps: list[int] = []
        now = 1000.0
        seqs = {SSRC_A: 0, SSRC_B: 0}
        for _ in range(fdp.ConsumeIntInRange(1, 8)):
            now = _time(fdp, now)
            q, s = (qa, SSRC_A) if fdp.ConsumeBool() else (qb, SSRC_B)
            if fdp.ConsumeIntInRange(0, 2) == 0:       # RTP on the leg
                for _ in range(fdp.ConsumeIntInRange(1, 4)):
                    seqs[s] = (seqs[s] + fdp.PickValueInList([1, 1, 2, 0, -1, 5000])) & 0xFFFF
                    clock.call(q.on_rtp, s, seqs[s], fdp.ConsumeIntInRange(0, 0xFFFFFFFF),
                               fdp.ConsumeBool(), fdp.PickValueInList([0, 18, 13, 101]), now)
                    now = _time(fdp, now)
                continue
            raw = _compound(fdp, ntps) if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
            pkts = _parse(raw, clock)
            if pkts is None:
                q.malformed += 1
                continue
            check(type(clock.call(apply_rtcp, pkts, q, by_ssrc, now)) is int, "apply_rtcp's count")
    depth = fdp.PickValueInList([0.06, 0.0, 1.0])
    jitter = fdp.PickValueInList([None, 2.5, 0.0])
    validate = fdp.ConsumeIntInRange(0, 2 * len(CODECS) - 1)
    for q in (qa, qb):
        for i, codec in enumerate(CODECS):
            for k, rate in enumerate((8000, 48000)):
                _check_report(clock.call(q.report, codec, depth, jitter, jitter, rate), 2 * i + k == validate)


TestOneInput = entry("rtcp", run)
