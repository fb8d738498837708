"""media.srtp: SrtpStream.unprotect/unprotect_rtcp against libsrtp's own protect, with
key changes (set_keys), keys_for and leg_keys."""

from __future__ import annotations

import struct

import atheris
import pylibsrtp

from rtp2ws.media import srtp
from rtp2ws.media.srtp import (
    FAILED,
    MAX_KEYS,
    MAX_SSRCS,
    PREVIOUS_GRACE,
    PROFILES,
    REPLAYED,
    SrtpKey,
    SrtpStream,
    keys_for,
    leg_keys,
    sdes_declined,
)
from rtp2ws.signalling.calls import MediaOffer
from rtp2ws.signalling.sdp import CRYPTO_SUITES, CryptoAttribute, InlineKey

from ..common import check, entry

INVARIANT = """\
SrtpStream.unprotect and unprotect_rtcp never raise and return bytes or None, and on
None `failure` is "failed" or "replayed", on packets that libsrtp's protect made
(pylibsrtp, one sender per key, SSRC, sequence number, timestamp and payload from the
input, the suite one of the four PROFILES, the key||salt from the input, sometimes an
MKI), delivered as made, with one byte changed, truncated, with another MKI, again
(replayed), out of order, mixed with garbage and a flood of SSRCs, at any capture times
with set_keys (new keys, the same again, old ones back) between them.  Oracle: bytes
come back only for a packet whose key (suite, key||salt, MKI on the wire) is current,
or previous within PREVIOUS_GRACE s (capture time) of the first packet a current key
authenticated after the change, and not after; they are exactly the clear packet
protected (for UNENCRYPTED_SRTP keys the packet as sent, tag and MKI off); a packet
changed anywhere but its MKI, or truncated, gives None; such a packet sent once, with
its SSRC still in its key's libsrtp state, forward within 2^15 of the last one
accepted or back less than the replay window (SRTCP: 100), decodes; the same again
gives None.  set_keys returns False exactly for the current keys again.  keys_for
gives at most MAX_KEYS distinct keys of PROFILES' suites with lengths that fit, chosen
tags first; leg_keys follows its documented cases.  Bounds: `_by_ssrc` <= 2 *
MAX_SSRCS entries, each key's `ssrcs` <= MAX_SSRCS, at most MAX_KEYS keys a generation.
No call takes more than the per-call limit."""

SUITES = list(PROFILES)
S80 = "AES_CM_128_HMAC_SHA1_80"
_TAG = {"AES_CM_128_HMAC_SHA1_80": (10, 10), "AES_CM_128_HMAC_SHA1_32": (4, 10)}
RAW = 0x20          # first byte below: the rest is garbage fed to both entry points


def _key_salt(fdp, suite: str) -> bytes:
    n = sum(CRYPTO_SUITES[suite])
    raw = fdp.ConsumeBytes(n)
    return raw + bytes(range(n - len(raw)))


def _with_mki(packet: bytes, suite: str, mki: bytes, rtcp: bool) -> bytes:
    """The MKI where RFC 3711 (HMAC: before the tag) and RFC 7714 (AEAD: at the end) put it."""
    if not mki:
        return packet
    if suite not in _TAG:
        return packet + mki
    tag = _TAG[suite][1 if rtcp else 0]
    return packet[:-tag] + mki + packet[-tag:]


def _mki_span(n: int, suite: str, mki: bytes, rtcp: bool) -> range:
    if not mki:
        return range(0)
    tag = 0 if suite not in _TAG else _TAG[suite][1 if rtcp else 0]
    return range(n - tag - len(mki), n - tag)


def _rtp(fdp, ssrc: int, seq: int, ts: int) -> bytes:
    cc = fdp.ConsumeIntInRange(0, 2)
    b0 = 0x80 | cc
    b1 = fdp.ConsumeIntInRange(0, 255) & 0xFF
    if 72 <= (b1 & 0x7F) <= 76:      # RTCP's types with the marker: keep it RTP
        b1 &= 0x80
    csrcs = b"".join(struct.pack("!I", fdp.ConsumeIntInRange(0, 0xFFFFFFFF)) for _ in range(cc))
    payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 320))
    return struct.pack("!BBHII", b0, b1, seq, ts, ssrc) + csrcs + payload


def _rtcp(fdp, ssrc: int) -> bytes:
    body = fdp.ConsumeBytes(4 * fdp.ConsumeIntInRange(0, 20))
    body += bytes(-len(body) % 4)
    return struct.pack("!BBHI", 0x80 | fdp.ConsumeIntInRange(0, 31), fdp.PickValueInList([200, 201, 202, 203, 204]),
                       1 + len(body) // 4, ssrc) + body


def _keys(fdp, pool: list[SrtpKey]) -> list[SrtpKey]:
    """A generation of keys: from the pool (old keys back) and new ones, sometimes
    through keys_for / leg_keys."""
    how = fdp.ConsumeIntInRange(0, 3)
    if how == 0 and pool:
        return [fdp.PickValueInList(pool) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    attrs = []
    for tag in range(fdp.ConsumeIntInRange(0, 3 if how == 1 else 1)):
        suite = fdp.PickValueInList(SUITES + ["F8_128_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_80"])
        inl = []
        for _ in range(fdp.ConsumeIntInRange(1, 4)):
            ks = _key_salt(fdp, suite if suite in PROFILES else S80)
            if fdp.ConsumeIntInRange(0, 15) == 0:
                ks = ks[:-1]
            mlen = fdp.ConsumeIntInRange(0, 4) if fdp.ConsumeBool() else 0
            mki = fdp.ConsumeIntInRange(0, (1 << (8 * mlen + 1)) - 1) if mlen else 0
            inl.append(InlineKey(ks, None, mki, mlen))
        params = tuple(p for p in ("UNENCRYPTED_SRTCP", "UNENCRYPTED_SRTP", "KDR=0", "KDR=24", "UNAUTHENTICATED_SRTP")
                       if fdp.ConsumeIntInRange(0, 7) == 0)
        attrs.append(CryptoAttribute(fdp.ConsumeIntInRange(1, 3), suite, tuple(inl), params))
    chosen = [a for a in attrs if fdp.ConsumeBool()]
    keys = keys_for(attrs, chosen)
    check(isinstance(keys, list) and len(keys) <= MAX_KEYS and len(set(keys)) == len(keys), "keys_for: list")
    for k in keys:
        check(type(k) is SrtpKey and k.suite in PROFILES and len(k.key_salt) == sum(CRYPTO_SUITES[k.suite]),
              "keys_for: a usable key")
        check(any(a.suite == k.suite and any(i.key_salt == k.key_salt for i in a.keys) for a in attrs),
              "keys_for: a key the lines gave")
        check("key_salt" not in repr(k) and k.key_salt.hex() not in repr(k), "keys_for: key in repr")
    taken = {(a.tag, a.suite) for a in chosen}
    origin = [{(a.tag, a.suite) in taken for a in attrs
               if a.suite == k.suite and any(i.key_salt == k.key_salt for i in a.keys)} for k in keys]
    check(not any(origin[i] == {False} and {True} == o for i in range(len(keys)) for o in origin[i + 1:]),
          "keys_for: the chosen tags' keys first")
    if how == 2:
        sender = MediaOffer("10.0.0.1", 4000, None, None, False, {}, "sendrecv", bool(attrs), None, tuple(attrs))
        recv_crypto = tuple(chosen) if fdp.ConsumeBool() else ()
        receiver = (None if fdp.ConsumeBool() else
                    MediaOffer("10.0.0.2", 5000, None, None, False, {}, "sendrecv",
                               bool(recv_crypto) or fdp.ConsumeBool(), None, recv_crypto))
        got = leg_keys(sender, receiver)
        want = (None if not attrs or (receiver is not None and not receiver.crypto) or not keys
                else keys_for(attrs, receiver.crypto if receiver is not None else ()))
        check(got == want, f"leg_keys {got} != {want}")
        check(leg_keys(None, sender) == ([] if attrs else None), "leg_keys of the receiver's offer")
        check(type(sdes_declined(sender, receiver)) is bool, "sdes_declined")
        keys = got or []
    return keys


class Sender:
    """One libsrtp sender per (suite, key||salt), and per SSRC its next index."""

    def __init__(self) -> None:
        self.sessions: dict[tuple[str, bytes], pylibsrtp.Session] = {}
        self.index: dict[tuple[str, bytes, int], int] = {}
        self.rtcp_index: dict[tuple[str, bytes, int], int] = {}

    def session(self, key: SrtpKey) -> pylibsrtp.Session:
        k = (key.suite, key.key_salt)
        s = self.sessions.get(k)
        if s is None:
            s = self.sessions[k] = pylibsrtp.Session(pylibsrtp.Policy(
                key=key.key_salt, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILES[key.suite]))
        return s


def run(data: bytes, clock) -> None:
    if not data:
        return
    stream = SrtpStream()
    if data[0] < RAW:
        stream.set_keys([SrtpKey(S80, bytes(range(30))), SrtpKey("AEAD_AES_128_GCM", bytes(range(28)), b"\x01")], 0.0)
        for i in range(1, len(data), 64):
            for fn in (stream.unprotect, stream.unprotect_rtcp):
                got = clock.call(fn, data[i:i + 64], float(i))
                check(got is None and stream.failure in (FAILED, REPLAYED), "garbage decoded")
        return
    fdp = atheris.FuzzedDataProvider(data[1:])
    sender = Sender()
    pool: list[SrtpKey] = []
    current: list[SrtpKey] = []
    previous: list[SrtpKey] = []
    until: float | None = None
    now = 1000.0
    # receiving state the oracle knows of, per (key, SSRC, rtcp): the context it is in, indices accepted
    seen: dict[tuple[SrtpKey, int, bool], tuple[int, set[int]]] = {}
    made: list[tuple[SrtpKey, int, bool, int, bytes, bytes, bytes]] = []   # key, ssrc, rtcp, index, clear, sealed, wire
    ssrcs = [fdp.ConsumeIntInRange(0, 0xFFFFFFFF) for _ in range(fdp.ConsumeIntInRange(1, 3))]
    for _ in range(fdp.ConsumeIntInRange(1, 200)):
        if fdp.remaining_bytes() == 0:
            break
        live = {c.key: c for c in stream._current + stream._previous}
        for st in [st for st, (cid, _) in seen.items()
                   if st[0] not in live or id(live[st[0]]) != cid or st[1] not in live[st[0]].ssrcs]:
            del seen[st]          # libsrtp's state for it is gone: the next packet starts afresh
        step = fdp.ConsumeIntInRange(0, 15)
        if step == 0:
            now = fdp.PickValueInList([now, now - 1.0, now + PREVIOUS_GRACE, now + PREVIOUS_GRACE - 0.001, 0.0, 1e12])
        else:
            now += fdp.PickValueInList([0.0, 0.02, 0.02, 0.5, 1.0])
        if step == 1 or not current and step < 4:
            # one flavour (UNENCRYPTED_SRTP or not) of a suite, key and MKI: the oracle knows which decodes
            same = {k._replace(clear_payload=False): k for k in pool}
            keys = list(dict.fromkeys(same.setdefault(k._replace(clear_payload=False), k) for k in _keys(fdp, pool)))
            pool += [k for k in keys if k not in pool]
            changed = clock.call(stream.set_keys, keys, now)
            check(changed is (keys[:MAX_KEYS] != current), f"set_keys returned {changed}")
            if changed:
                previous = [k for k in current if k not in keys][:MAX_KEYS]
                current = keys[:MAX_KEYS]
                until = None
            check(stream.keys == current, "keys")
            continue
        contexts = {c.key: c for c in stream._current + stream._previous}
        if step == 2 and made:                       # one sent before: again, or late
            key, ssrc, rtcp, index, clear, sealed, wire = fdp.PickValueInList(made)
            mode = "again"
        elif step == 3:                              # garbage, or forged SSRCs
            wire = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1600))
            if fdp.ConsumeBool() and len(wire) >= 12:
                wire = wire[:8] + struct.pack("!I", fdp.ConsumeIntInRange(0, 0xFFFFFFFF)) + wire[12:]
            rtcp = fdp.ConsumeBool()
            if until is not None and until <= now and len(wire) >= (8 if rtcp else 12):
                previous, until = [], None    # the stream looks at the time only of a packet it tries
            got = clock.call(stream.unprotect_rtcp if rtcp else stream.unprotect, wire, now)
            check(got is None and stream.failure in (FAILED, REPLAYED), "garbage decoded")
            _bounds(stream)
            continue
        else:
            if not pool:
                continue
            key = fdp.PickValueInList(pool)
            rtcp = step == 4
            flood = step == 5
            ssrc = (fdp.ConsumeIntInRange(0, 0xFFFFFFFF) if flood or fdp.ConsumeIntInRange(0, 7) == 0
                    else fdp.PickValueInList(ssrcs))
            sess = sender.session(key)
            sk = (key.suite, key.key_salt, ssrc)
            if rtcp:
                index = sender.rtcp_index.get(sk, 0) + 1
                sender.rtcp_index[sk] = index
                clear = _rtcp(fdp, ssrc)
                sealed = sess.protect_rtcp(clear)
            else:
                prev = sender.index.get(sk)
                index = (fdp.ConsumeIntInRange(0, 0xFFFF) if prev is None else
                         prev + (fdp.ConsumeIntInRange(1, 3) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(1, 32767)))
                sender.index[sk] = index
                clear = _rtp(fdp, ssrc, index & 0xFFFF, fdp.ConsumeIntInRange(0, 0xFFFFFFFF))
                sealed = sess.protect(clear)
            wire = _with_mki(sealed, key.suite, key.mki, rtcp)
            made.append((key, ssrc, rtcp, index, clear, sealed, wire))
            if len(made) > 64:
                del made[0]
            mode = fdp.PickValueInList(["as made", "as made", "hold", "flip", "truncate", "mki"]) if not flood \
                else "as made"
            if mode == "hold":          # sent later (step 2): reordered
                continue
        if until is not None and until <= now and len(wire) >= (8 if rtcp else 12):
            previous, until = [], None        # the stream looks at the time only of a packet it tries
        # what key the wire names, and what must come out
        span = _mki_span(len(wire), key.suite, key.mki, rtcp)
        if mode == "flip" and len(wire):
            pos = fdp.ConsumeIntInRange(0, len(wire) - 1)
            wire = wire[:pos] + bytes([wire[pos] ^ fdp.ConsumeIntInRange(1, 255)]) + wire[pos + 1:]
        elif mode == "truncate":
            wire = wire[:fdp.ConsumeIntInRange(0, len(wire) - 1)]
        elif mode == "mki" and key.mki:
            other = fdp.ConsumeBytes(len(key.mki)).ljust(len(key.mki), b"\x00")
            wire = wire[:span.start] + other + wire[span.stop:]
        whole = len(wire) == len(sealed) + len(key.mki)
        on_wire = wire[span.start:span.stop] if span and whole else b""
        intact = whole and (wire[:span.start] + wire[span.stop:] if span else wire) == sealed
        dkey = key._replace(mki=on_wire) if key.mki else key
        state = (dkey, ssrc, rtcp)
        ctx = contexts.get(dkey)
        usable = dkey in current or dkey in previous
        must: bytes | None = None
        if intact and usable and ctx is not None:
            ctx_id, accepted = seen.get(state, (id(ctx), set()))
            if ctx_id != id(ctx) or ssrc not in ctx.ssrcs:
                accepted = set()          # a fresh libsrtp stream (new context, or the SSRC dropped)
            top = max(accepted) if accepted else None
            if index in accepted:
                must = None
            elif top is None:
                must = clear if (rtcp or index < 0x10000) else None
            elif index > top:
                must = clear if index - top < 0x8000 or rtcp else None
            else:
                must = clear if top - index < (100 if rtcp else srtp.REPLAY_WINDOW - 1) else None
        elif intact and usable and ctx is None:
            must = clear if (rtcp or index < 0x10000) else None
        if dkey.clear_payload and not rtcp and must is not None:
            must = sealed[:len(clear)]
        got = clock.call(stream.unprotect_rtcp if rtcp else stream.unprotect, wire, now)
        check(got is None or type(got) is bytes, "result type")
        if got is None:
            check(stream.failure in (FAILED, REPLAYED), f"failure {stream.failure!r}")
        what = (f"{'SRTCP' if rtcp else 'SRTP'} {mode} key {dkey} ssrc {ssrc:#x} index {index} at {now} "
                f"(current {current}, previous {previous}, until {until})")
        check(must is None or got == must, f"not decoded: {what}: {got!r:.60}")
        if got is not None:
            check(intact and usable, f"decoded and should not be: {what}")
            check(got == (sealed[:len(clear)] if dkey.clear_payload and not rtcp else clear), f"wrong bytes: {what}")
            ctx = {c.key: c for c in stream._current + stream._previous}[dkey]
            ctx_id, accepted = seen.get(state, (id(ctx), set()))
            if ctx_id != id(ctx):
                accepted = set()
            seen[state] = (id(ctx), accepted | {index})
            if dkey in current and previous and until is None:
                until = now + PREVIOUS_GRACE
        _bounds(stream)


def _bounds(stream: SrtpStream) -> None:
    check(len(stream._by_ssrc) <= 2 * MAX_SSRCS, f"_by_ssrc has {len(stream._by_ssrc)}")
    check(len(stream._current) <= MAX_KEYS and len(stream._previous) <= MAX_KEYS, "keys a generation")
    for c in stream._current + stream._previous:
        check(len(c.ssrcs) <= MAX_SSRCS, f"a key's ssrcs: {len(c.ssrcs)}")


TestOneInput = entry("srtp", run)
