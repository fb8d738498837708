"""The bench's capture generator: N concurrent G.711 calls in one pcap.

``make_capture`` writes SIP call set-up and tear-down (``sip_messages``, built
with ``sdp`` and ``sip``, which the tests' ``callgen`` shares) around RTP
streams of speech-like audio (``speech_like``) in both directions, with loss
and reordering on request; ``cached_capture`` keeps them by their parameters.
Packets are framed by ``netgen`` (Ethernet, IPv4, UDP, pcap records); the RTP
records are laid out as a numpy structured array, millions at a time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..net.packet import DLT_EN10MB
from .netgen import ethernet, pcap_header, pcap_record, udp

FORMAT_VERSION = 2            # bump when the generated captures change
EPOCH = 1_767_225_600         # 2026-01-01T00:00:00Z: capture time of the first call
RTP_FRAME_LEN = 14 + 20 + 8 + 12 + 160    # Ethernet + IPv4 + UDP + RTP + 20 ms of G.711


def speech_like(seconds: float = 8.0, rate: int = 8000, seed: int = 7) -> np.ndarray:
    """Deterministic speech-like int16 audio: a voiced source (harmonics of a
    gliding pitch) mixed with band-limited noise, shaped by syllables of
    120-300 ms separated by short pauses and the odd longer one, over a faint
    noise floor.  Enough for G.711 payloads whose bytes look like speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 150 + 35 * np.sin(2 * np.pi * 0.31 * t) + 12 * np.sin(2 * np.pi * 2.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = np.zeros(n)
    for h in range(1, 22):
        voiced += np.sin(h * phase + h * 0.7) / h
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spec[(freqs < 300) | (freqs > 3400)] = 0
    noise = np.fft.irfft(spec, n)
    noise /= np.abs(noise).max()
    env = np.zeros(n)
    pos = 0
    while pos < n:
        length = int(rate * rng.uniform(0.12, 0.30))
        seg = np.sin(np.pi * np.arange(length) / length) ** 1.5 * rng.uniform(0.4, 1.0)
        env[pos:pos + length] = seg[:max(0, min(length, n - pos))]
        pos += length + int(rate * (rng.uniform(0.6, 1.2) if rng.random() < 0.12 else rng.uniform(0.03, 0.12)))
    mix = env * (0.75 * voiced / np.abs(voiced).max() + 0.25 * noise) + 0.002 * noise
    return np.round(12000 * mix / np.abs(mix).max()).astype(np.int16)



def sdp(addr: str, port: int, *, pts=(8, 0, 101), direction: str | None = None, ptime: int | None = 20,
        session_c: bool = True, extra: str = "", proto: str = "RTP/AVP", origin: str = "- 1234 1",
        name: str = "-") -> str:
    """An SDP audio offer or answer: ``origin`` is the o= line's user, session id and
    version, ``name`` the s= line."""
    fam = "IP6" if ":" in addr else "IP4"
    lines = ["v=0", f"o={origin} IN {fam} {addr}", f"s={name}"]
    if session_c:
        lines.append(f"c=IN {fam} {addr}")
    lines.append("t=0 0")
    lines.append(f"m=audio {port} {proto} {' '.join(str(p) for p in pts)}")
    if not session_c:
        lines.append(f"c=IN {fam} {addr}")
    names = {0: "PCMU/8000", 8: "PCMA/8000", 101: "telephone-event/8000", 13: "CN/8000"}
    for p in pts:
        if p in names:
            lines.append(f"a=rtpmap:{p} {names[p]}")
    if 101 in pts:
        lines.append("a=fmtp:101 0-16")
    if ptime:
        lines.append(f"a=ptime:{ptime}")
    if direction:
        lines.append(f"a={direction}")
    if extra:
        lines.extend(extra.strip().splitlines())
    return "\r\n".join(lines) + "\r\n"


def sip(start: str, headers: list[tuple[str, str]], body: str = "", ctype: str = "application/sdp",
        compact: bool = False) -> bytes:
    """A SIP message: start line, ``headers``, then Content-Type (with a body) and Content-Length."""
    out = [start]
    for k, v in headers:
        out.append(f"{k}: {v}")
    if body:
        out.append(f"{'c' if compact else 'Content-Type'}: {ctype}")
    out.append(f"{'l' if compact else 'Content-Length'}: {len(body.encode())}")
    return ("\r\n".join(out) + "\r\n\r\n" + body).encode()


def _frame(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """Ethernet + IPv4 (DF, checksum set) + UDP (checksum 0, legal in IPv4) around ``payload``."""
    return ethernet(udp(src, sport, dst, dport, payload, df=True, udp_checksum=False))


def _headers(src: str, sport: int, dst: str, dport: int, payload_len: int) -> bytes:
    """``_frame``'s headers for a payload of ``payload_len`` bytes."""
    return _frame(src, sport, dst, dport, bytes(payload_len))[:-payload_len]


def _record(t_us: int, frame: bytes) -> bytes:
    return pcap_record(EPOCH * 1_000_000 + t_us, frame)


def _parties(i: int) -> tuple[str, str, int, int]:
    """Caller IP, callee IP, caller RTP port, callee RTP port of call ``i``."""
    hi = 2 * (i // 64000)
    j = i % 64000
    a = f"10.{1 + hi}.{j // 250}.{j % 250 + 1}"
    b = f"10.{2 + hi}.{j // 250}.{j % 250 + 1}"
    return a, b, 16384 + 2 * (i % 8000), 30000 + 2 * (i % 8000)


def _sdp(ip: str, port: int, pts: tuple, sess: int) -> str:
    return sdp(ip, port, pts=pts, direction="sendrecv", origin=f"bench {sess} {sess}", name="rtp2ws bench")


def sip_messages(i: int, call_id: str, t: int, bye_at: int, law_pt: str) -> list[tuple[int, bytes]]:
    """Call ``i``'s pcap records (µs, record): INVITE(SDP) / 100 / 180 / 200(SDP) / ACK
    at ``t`` and BYE / 200 at ``bye_at`` (µs after ``EPOCH``)."""
    a, b, pa, pb = _parties(i)
    ftag, ttag = f"f{i:x}a", f"t{i:x}b"
    frm = f"\"Caller {i}\" <sip:+4930{i:07d}@{a}>;tag={ftag}"
    to = f"<sip:+4940{i:07d}@{b}>"
    out = []

    def msg(at, first, src, dst, via_host, branch, cseq, to_hdr, from_hdr=frm, body="", contact=None):
        hdrs = [("Via", f"SIP/2.0/UDP {via_host}:5060;branch=z9hG4bK{branch}"), ("Max-Forwards", "70"),
                ("From", from_hdr), ("To", to_hdr), ("Call-ID", call_id), ("CSeq", cseq)]
        if contact:
            hdrs.append(("Contact", f"<sip:{contact}:5060>"))
        hdrs.append(("User-Agent", "rtp2ws-bench"))
        out.append((at, _record(at, _frame(src, 5060, dst, 5060, sip(first, hdrs, body)))))

    inv = f"{i:x}inv"
    ruri = f"sip:+4940{i:07d}@{b}:5060"
    offer = _sdp(a, pa, (8, 0, 101), 1000 + i)
    answer = _sdp(b, pb, (int(law_pt), 101), 2000 + i)
    msg(t, f"INVITE {ruri} SIP/2.0", a, b, a, inv, "1 INVITE", to, body=offer, contact=f"caller{i}@{a}")
    msg(t + 5_000, "SIP/2.0 100 Trying", b, a, a, inv, "1 INVITE", to)
    msg(t + 20_000, "SIP/2.0 180 Ringing", b, a, a, inv, "1 INVITE", f"{to};tag={ttag}", contact=f"callee{i}@{b}")
    msg(t + 80_000, "SIP/2.0 200 OK", b, a, a, inv, "1 INVITE", f"{to};tag={ttag}", body=answer,
        contact=f"callee{i}@{b}")
    msg(t + 90_000, f"ACK sip:callee{i}@{b}:5060 SIP/2.0", a, b, a, f"{i:x}ack", "1 ACK", f"{to};tag={ttag}")
    msg(bye_at, f"BYE sip:callee{i}@{b}:5060 SIP/2.0", a, b, a, f"{i:x}bye", "2 BYE", f"{to};tag={ttag}")
    msg(bye_at + 5_000, "SIP/2.0 200 OK", b, a, a, f"{i:x}bye", "2 BYE", f"{to};tag={ttag}")
    return out


_RTP_DTYPE = np.dtype([("sec", "<u4"), ("usec", "<u4"), ("incl", "<u4"), ("orig", "<u4"), ("head", "V42"),
                       ("b0", "u1"), ("mpt", "u1"), ("seq", ">u2"), ("ts", ">u4"), ("ssrc", ">u4"),
                       ("payload", "V160")])
assert _RTP_DTYPE.itemsize == 16 + RTP_FRAME_LEN


def make_capture(path, calls: int, seconds: float, *, loss: float = 0.0, reorder: float = 0.0, seed: int = 1,
                 law: str = "alaw", stagger: float = 1.0) -> dict:
    """Write a pcap of ``calls`` concurrent G.711 calls of ``seconds`` of audio each.

    Every call is a SIP INVITE(SDP offer)/100/180/200(SDP answer)/ACK, then RTP
    in both directions (20 ms packets of speech-like G.711, ``law`` "alaw" or
    "ulaw"), then BYE/200.  Calls start evenly over the first ``stagger``
    seconds; each has its own addresses and ports.  ``loss`` drops that share
    of RTP packets (never a leg's first or last); ``reorder`` delays that share
    by 25 ms, so the next packet overtakes them.  Returns the description
    stored beside cached captures: packet counts, the steady-state window and,
    per leg, the packets, losses and reorderings generated.
    """
    if calls < 1 or seconds <= 0:
        raise ValueError("calls and seconds must be positive")
    if law not in ("alaw", "ulaw"):
        raise ValueError("law is alaw or ulaw")
    from ..codec import g711

    rng = np.random.default_rng(seed)
    n = max(2, round(seconds * 50))
    law_pt = "8" if law == "alaw" else "0"
    encode = g711.encode_alaw if law == "alaw" else g711.encode_ulaw
    speech = np.frombuffer(encode(speech_like(8.0, seed=seed + 6)), dtype="V160")
    nlegs = 2 * calls
    starts = (np.arange(calls) * (stagger * 1e6 / calls)).astype(np.int64) + rng.integers(0, 3000, calls)
    leg_call = np.arange(nlegs) // 2
    first = starts[leg_call] + 100_000 + (np.arange(nlegs) % 2) * 7_000     # callee 7 ms after caller
    media_end = starts + 100_000 + n * 20_000
    bye_at = media_end + 20_000

    heads = np.empty(nlegs, dtype="V42")
    for i in range(calls):
        a, b, pa, pb = _parties(i)
        heads[2 * i] = _headers(a, pa, b, pb, 172)          # caller -> callee's SDP address
        heads[2 * i + 1] = _headers(b, pb, a, pa, 172)
    ssrc = rng.integers(1, 2 ** 32, nlegs, dtype=np.uint64)
    seq0 = rng.integers(0, 2 ** 16, nlegs, dtype=np.int64)
    ts0 = rng.integers(0, 2 ** 32, nlegs, dtype=np.int64)
    phase = rng.integers(0, len(speech), nlegs)

    # which packets exist, and when they arrive
    k = np.tile(np.arange(n, dtype=np.int64), nlegs)
    leg = np.repeat(np.arange(nlegs), n)
    t = first[leg] + k * 20_000
    lost = rng.random(nlegs * n) < loss if loss > 0 else np.zeros(nlegs * n, bool)
    edge = (k == 0) | (k == n - 1)
    lost &= ~edge
    if reorder > 0:
        late = rng.random(nlegs * n) < reorder
        nxt_lost = np.roll(lost, -1)
        late &= ~lost & ~nxt_lost & (k >= 1) & (k <= n - 3)
        late[1:] &= ~late[:-1].copy()          # disjoint pairs: packet k late, k+1 overtakes it
        t = t + late * 25_000
    else:
        late = np.zeros(nlegs * n, bool)
    keep = ~lost
    per_leg_lost = np.bincount(leg[lost], minlength=nlegs)
    per_leg_late = np.bincount(leg[late], minlength=nlegs)
    leg, k, t = leg[keep], k[keep], t[keep]
    order = np.argsort(t, kind="stable")
    leg, k, t = leg[order], k[order], t[order]

    sip = []
    call_ids = [f"{i:06d}-{seed}-bench@10.{1 + 2 * (i // 64000)}.0.1" for i in range(calls)]
    for i in range(calls):
        sip += sip_messages(i, call_ids[i], int(starts[i]), int(bye_at[i]), law_pt)
    sip.sort(key=lambda m: m[0])
    sip_t = np.array([m[0] for m in sip], dtype=np.int64)
    cut = np.searchsorted(t, sip_t, side="right")     # RTP rows before each SIP message

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    chunk = 200_000
    size = 24
    with open(tmp, "wb", buffering=1 << 20) as f:
        f.write(pcap_header(DLT_EN10MB, snaplen=65535))
        s = 0
        for lo in range(0, len(t), chunk):
            hi = min(len(t), lo + chunk)
            rec = np.empty(hi - lo, dtype=_RTP_DTYPE)
            tl, ll, kl = t[lo:hi], leg[lo:hi], k[lo:hi]
            rec["sec"] = EPOCH + tl // 1_000_000
            rec["usec"] = tl % 1_000_000
            rec["incl"] = RTP_FRAME_LEN
            rec["orig"] = RTP_FRAME_LEN
            rec["head"] = heads[ll]
            rec["b0"] = 0x80
            rec["mpt"] = int(law_pt) | np.where(kl == 0, 0x80, 0)
            rec["seq"] = (seq0[ll] + kl) & 0xFFFF
            rec["ts"] = (ts0[ll] + 160 * kl) & 0xFFFFFFFF
            rec["ssrc"] = ssrc[ll]
            rec["payload"] = speech[(phase[ll] + kl) % len(speech)]
            data = memoryview(rec.tobytes())
            pos = lo
            while s < len(sip) and cut[s] <= hi:
                f.write(data[(pos - lo) * _RTP_DTYPE.itemsize:(cut[s] - lo) * _RTP_DTYPE.itemsize])
                pos = cut[s]
                f.write(sip[s][1])
                size += len(sip[s][1])
                s += 1
            f.write(data[(pos - lo) * _RTP_DTYPE.itemsize:])
        for _, rec_bytes in sip[s:]:
            f.write(rec_bytes)
            size += len(rec_bytes)
    os.replace(tmp, path)
    size += len(t) * _RTP_DTYPE.itemsize

    steady_from = float(starts.max() + 107_000) / 1e6
    steady_until = float(media_end.min()) / 1e6
    if steady_until > steady_from:
        sample = (steady_from + steady_until) / 2
    else:
        sample = float(np.median(starts) / 1e6 + 0.1 + seconds / 2)
    active = int(np.count_nonzero((starts / 1e6 + 0.1 <= sample) & (media_end / 1e6 >= sample)))
    legs = []
    for j in range(nlegs):
        legs.append({"call_id": call_ids[j // 2], "tag": ("caller", "callee")[j % 2],
                     "packets": int(n - per_leg_lost[j]), "lost": int(per_leg_lost[j]),
                     "reordered": int(per_leg_late[j])})
    return {
        "version": FORMAT_VERSION, "path": str(path), "calls": calls, "seconds": n / 50.0, "loss": loss,
        "reorder": reorder, "seed": seed, "law": law, "stagger": stagger,
        "packets": int(len(t) + len(sip)), "rtp_packets": len(t), "sip_packets": len(sip), "bytes": size,
        "first_ts": EPOCH + float(min(t[0], sip_t[0])) / 1e6, "last_ts": EPOCH + float(max(t[-1], sip_t[-1])) / 1e6,
        "steady_from_ts": EPOCH + steady_from, "steady_until_ts": EPOCH + steady_until,
        "mem_sample_ts": EPOCH + sample, "active_at_sample": active,
        "legs": legs,
    }


def cached_capture(cache_dir, calls: int, seconds: float, **kw) -> tuple[str, dict]:
    """``make_capture`` under ``cache_dir``, keyed by every parameter; reused when present."""
    loss, reorder = kw.get("loss", 0.0), kw.get("reorder", 0.0)
    seed, law, stagger = kw.get("seed", 1), kw.get("law", "alaw"), kw.get("stagger", 1.0)
    name = (f"bench-v{FORMAT_VERSION}-n{calls}-s{seconds:g}-l{loss:g}-r{reorder:g}-seed{seed}-{law}"
            f"-st{stagger:g}.pcap")
    path = Path(cache_dir) / name
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        try:
            info = json.loads(meta.read_text())
            if info.get("version") == FORMAT_VERSION and path.stat().st_size == info.get("bytes"):
                return str(path), info
        except (OSError, ValueError):
            pass
    info = make_capture(path, calls, seconds, loss=loss, reorder=reorder, seed=seed, law=law, stagger=stagger)
    meta.write_text(json.dumps(info))
    return str(path), info

