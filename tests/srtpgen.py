"""SRTP calls for tests: the reference encoder is libsrtp itself (``protect`` and
``protect_rtcp`` through pylibsrtp), fed the very RTP packets ``callgen`` makes for a
clear call, so that an SRTP call and its clear twin carry the same audio.

``crypto_line`` writes an SDP ``a=crypto`` attribute (RFC 4568) for a key;
``protect_stream`` turns ``callgen.rtp_packets``' stream into SRTP, packet for packet
(same times, sequence numbers and addresses)."""

from __future__ import annotations

import base64
import hashlib
import struct

import pylibsrtp

from rtp2ws.media.srtp import PROFILES
from rtp2ws.signalling.sdp import CRYPTO_SUITES

import netgen

SUITES = tuple(PROFILES)      # the suites rtp2ws decrypts


def key_for(suite: str, seed: str) -> bytes:
    """A master key || salt of the suite's length, made from ``seed`` (repeatable)."""
    n = sum(CRYPTO_SUITES[suite])
    return (hashlib.sha512(seed.encode()).digest() * 2)[:n]


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def crypto_line(tag: int, suite: str, key: bytes, *, mki: tuple[int, int] | None = None,
                lifetime: str | None = None, params: str = "") -> str:
    """``a=crypto:<tag> <suite> inline:<key||salt>[|lifetime][|mki:len] [params]``."""
    inline = "inline:" + base64.b64encode(key).decode()
    if lifetime:
        inline += "|" + lifetime
    if mki:
        inline += f"|{mki[0]}:{mki[1]}"
    return f"a=crypto:{tag} {suite} {inline}" + (f" {params}" if params else "")


def session(suite: str, key: bytes) -> pylibsrtp.Session:
    """A sender's libsrtp session (any outbound SSRC)."""
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                              srtp_profile=PROFILES[suite]))


def with_mki(packet: bytes, suite: str, mki: bytes, rtcp: bool = False) -> bytes:
    """An SRTP/SRTCP packet with an MKI put where RFC 3711 (HMAC suites: before the tag)
    and RFC 7714 (AEAD: at the end) place it; the MKI is not authenticated."""
    if suite.startswith("AEAD"):
        return packet + mki
    tag = 10 if rtcp or suite.endswith("_80") else 4
    return packet[:-tag] + mki + packet[-tag:]


def _udp_payload(ip: bytes) -> tuple[bytes, bytes]:
    """(IPv4 + UDP headers, UDP payload) of a packet netgen made."""
    ihl = (ip[0] & 0x0F) * 4
    return ip[:ihl + 8], ip[ihl + 8:]


def rewrap(ip: bytes, payload: bytes) -> bytes:
    """The same IPv4/UDP packet with another payload (lengths and checksum redone)."""
    ihl = (ip[0] & 0x0F) * 4
    src = ".".join(map(str, ip[12:16]))
    dst = ".".join(map(str, ip[16:20]))
    sport, dport = struct.unpack_from("!HH", ip, ihl)
    return netgen.udp(src, sport, dst, dport, payload)


def protect_stream(stream: list, sess: pylibsrtp.Session, *, mki: bytes = b"", suite: str = "") -> list:
    """``callgen.rtp_packets``' [(time, seq, ip)] with every RTP payload protected by
    ``sess`` (in order, as a sender protects), optionally with an MKI."""
    out = []
    for t, seq, ip in stream:
        _, rtp = _udp_payload(ip)
        srtp = sess.protect(rtp)
        if mki:
            srtp = with_mki(srtp, suite, mki)
        out.append((t, seq, rewrap(ip, srtp)))
    return out


def rtcp_sr(ssrc: int, ntp: int = 0, rtp_ts: int = 0, packets: int = 0, octets: int = 0) -> bytes:
    """An RTCP sender report with no report blocks, plus an SDES CNAME (a compound packet)."""
    sr = struct.pack("!BBHIQIII", 0x80, 200, 6, ssrc, ntp, rtp_ts, packets, octets)
    cname = b"rtp2ws"
    item = bytes([1, len(cname)]) + cname + b"\x00"
    item += b"\x00" * (-(4 + len(item)) % 4)
    sdes = struct.pack("!BBHI", 0x81, 202, (4 + len(item)) // 4, ssrc) + item
    return sr + sdes
