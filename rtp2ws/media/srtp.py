"""SRTP and SRTCP decryption with keys from SDP (SDES, RFC 4568), sans-I/O.

One ``SrtpStream`` per sender (a leg's direction): the keys its SDP says it *sends*
with (``a=crypto``), in, and clear RTP/RTCP or a reason it was dropped, out.  The
cryptography is libsrtp's own (through pylibsrtp, the binding aiortc uses: its wheels
carry libsrtp 2 built with OpenSSL), which keeps per SSRC what RFC 3711 asks for: the
rollover counter, the replay window and the SRTCP index.

Suites (``PROFILES``): AES_CM_128_HMAC_SHA1_80 and _32 (RFC 4568), AEAD_AES_128_GCM and
AEAD_AES_256_GCM (RFC 7714).  pylibsrtp exposes libsrtp's profiles and no other policy,
so AES_192_CM/AES_256_CM (RFC 6188) and F8 are not decrypted: a leg offered only those
stays flagged ``encrypted``.  Session parameters: ``UNENCRYPTED_SRTCP`` needs nothing
(SRTCP says so in its E bit, which libsrtp reads); ``UNENCRYPTED_SRTP`` packets are
authenticated by libsrtp and their payload taken as sent; a line with
``UNAUTHENTICATED_SRTP`` or a ``KDR`` other than 0 is not used (libsrtp 2 has neither),
so such a leg is flagged rather than decoded wrong.

Keys are tried, not assumed.  The offerer's SDP may list several ``a=crypto`` lines
(the answer names the tag it took, which ``keys_for`` puts first), a re-INVITE brings
new keys while packets under the old ones are still in flight, and a mirror may see a
sender before its SDP is complete.  So each SSRC remembers the key that last
authenticated one of its packets, and a packet that fails with it is tried with the
others: the current generation of keys first, then the previous one.  The previous
generation stays until ``PREVIOUS_GRACE`` seconds (capture time) after a current key
first authenticated a packet, so that the switch loses nothing, and no longer.
Authentication is the test: a packet no key authenticates is dropped, never decoded
as audio.

Bounds: at most ``MAX_KEYS`` keys a generation, two generations, and per key at most
``MAX_SSRCS`` SSRCs in libsrtp's table (the oldest removed beyond; libsrtp adds an SSRC
only once a packet of it authenticated, so a flood of forged SSRCs adds nothing).

Not handled: a capture that starts after a sender's sequence number wrapped (libsrtp
starts each SSRC at rollover counter 0, so such a stream does not authenticate until
the keys change) and MKI values that do not fit their length.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import pylibsrtp

if TYPE_CHECKING:
    from ..signalling.calls import MediaOffer
    from ..signalling.sdp import CryptoAttribute

# suite -> libsrtp profile
PROFILES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}
# suite -> (SRTP tag bytes, SRTCP tag bytes); None for AEAD (the tag is in the ciphertext,
# and an MKI goes after it, at the very end)
_TAGS: dict[str, tuple[int, int] | None] = {
    "AES_CM_128_HMAC_SHA1_80": (10, 10),
    "AES_CM_128_HMAC_SHA1_32": (4, 10),     # SRTCP keeps an 80-bit tag (RFC 4568 section 6.2.2)
    "AEAD_AES_128_GCM": None,
    "AEAD_AES_256_GCM": None,
}

MAX_KEYS = 8              # keys of one generation (an SDP's a=crypto lines and their inline keys)
MAX_SSRCS = 16            # SSRCs one key keeps state for in libsrtp
PREVIOUS_GRACE = 2.0      # s the previous keys stay once a current key authenticated a packet
REPLAY_WINDOW = 1024      # packets: libsrtp's replay window (our jitter buffer reorders far less)

# why a packet was dropped (``SrtpStream.failure``)
FAILED = "failed"         # no key authenticates it (wrong key, no key yet, not SRTP)
REPLAYED = "replayed"     # the key's replay window has it already (a duplicate), or it is too old

_SSRC = struct.Struct("!I")
_REPLAY_ERRORS = frozenset({"replay check failed (bad index)", "replay check failed (index too old)"})


class SrtpKey(NamedTuple):
    """One master key and salt, its suite, and the MKI its packets carry (b"" for none);
    ``clear_payload``: its SRTP is authenticated, not encrypted (``UNENCRYPTED_SRTP``)."""

    suite: str
    key_salt: bytes
    mki: bytes = b""
    clear_payload: bool = False

    def __repr__(self) -> str:          # never the key in a log line
        return f"SrtpKey({self.suite}, mki={self.mki.hex() or '-'})"


def keys_for(sender: Sequence[CryptoAttribute], chosen: Iterable[CryptoAttribute] = ()) -> list[SrtpKey]:
    """The keys a sender's ``a=crypto`` lines give, in the order to try them: the lines
    whose tag and suite the other side's SDP took (``chosen``: its answer's lines, or
    its offer's) first; suites that ``PROFILES`` lacks, and keys of the wrong length,
    left out; at most ``MAX_KEYS``."""
    taken = {(c.tag, c.suite) for c in chosen}
    ordered = sorted(sender, key=lambda c: (c.tag, c.suite) not in taken)     # stable: SDP order otherwise
    keys: list[SrtpKey] = []
    for attr in ordered:
        params = {p.partition("=")[0].upper(): p.partition("=")[2] for p in attr.session_params}
        if (attr.suite not in PROFILES or not attr.known or "UNAUTHENTICATED_SRTP" in params
                or params.get("KDR", "0").lstrip("0")):
            continue     # libsrtp 2 has no unauthenticated SRTP nor a key derivation rate
        clear = "UNENCRYPTED_SRTP" in params and _TAGS[attr.suite] is not None
        for k in attr.keys:
            if k.mki_length and k.mki >= 1 << (8 * k.mki_length):
                continue
            key = SrtpKey(attr.suite, k.key_salt, k.mki.to_bytes(k.mki_length, "big") if k.mki_length else b"",
                          clear)
            if key not in keys:
                keys.append(key)
    return keys[:MAX_KEYS]


def sdes_declined(sender: MediaOffer | None, receiver: MediaOffer | None) -> bool:
    """Both sides' SDP are known, one has ``a=crypto`` and the other answered with neither
    keys nor another encryption (plain RTP/AVP): the call's media is plain RTP both ways."""
    if sender is None or receiver is None or bool(sender.crypto) == bool(receiver.crypto):
        return False
    return not (receiver.encrypted if sender.crypto else sender.encrypted)


def leg_keys(sender: MediaOffer | None, receiver: MediaOffer | None) -> list[SrtpKey] | None:
    """The keys a leg's packets are decrypted with, from the latest SDP of the side that
    sends them (``sender``) and of the side they go to (``receiver``); None when the leg
    is not SRTP with SDES keys (then its SDP's ``encrypted`` says whether it is
    encrypted otherwise: DTLS-SRTP, ZRTP, SAVP with no key).

    * the sender's SDP has usable keys, and the receiver's SDP is not known yet or has
      ``a=crypto`` too: those keys (the receiver's tags first);
    * the receiver's SDP has ``a=crypto`` and the sender's is not known yet: SRTP is
      offered, its keys are to come: an empty list (its packets are dropped meanwhile);
    * otherwise None: no SDES, or SDES that the other side declined (an answer with no
      ``a=crypto``: plain RTP if it says nothing else, DTLS if it has a fingerprint).
    """
    if sender is not None and sender.crypto:
        if receiver is not None and not receiver.crypto:
            return None           # declined (plain RTP) or another way chosen (DTLS)
        keys = keys_for(sender.crypto, receiver.crypto if receiver is not None else ())
        return keys or None
    if sender is None and receiver is not None and receiver.crypto:
        return []
    return None


class _Context:
    """One key's libsrtp session (any inbound SSRC) and the SSRCs it holds state for."""

    __slots__ = ("key", "session", "ssrcs", "_tags")

    def __init__(self, key: SrtpKey) -> None:
        policy = pylibsrtp.Policy(key=key.key_salt, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                  srtp_profile=PROFILES[key.suite])
        policy.window_size = REPLAY_WINDOW
        self.key = key
        self.session = pylibsrtp.Session(policy)
        self.ssrcs: dict[int, None] = {}       # SSRCs libsrtp keeps a stream for, oldest first
        self._tags = _TAGS[key.suite]

    def unprotect(self, data: bytes, ssrc: int, rtcp: bool) -> bytes | str:
        """The clear packet, or FAILED or REPLAYED."""
        mki = self.key.mki
        if mki:
            data = self._strip_mki(data, mki, rtcp)
            if not data:
                return FAILED
        try:
            clear = self.session.unprotect_rtcp(data) if rtcp else self.session.unprotect(data)
        except pylibsrtp.Error as exc:
            return REPLAYED if str(exc) in _REPLAY_ERRORS else FAILED
        except ValueError:        # longer than pylibsrtp's buffer (1500 bytes)
            return FAILED
        if self.key.clear_payload and not rtcp:
            clear = data[:len(clear)]     # authenticated; the payload was sent in clear (libsrtp "decrypted" it)
        ssrcs = self.ssrcs
        if ssrc not in ssrcs:
            ssrcs[ssrc] = None
            if len(ssrcs) > MAX_SSRCS:
                old = next(iter(ssrcs))
                del ssrcs[old]
                self.session.remove_stream(old)
        return clear

    def _strip_mki(self, data: bytes, mki: bytes, rtcp: bool) -> bytes:
        """The packet without its MKI (libsrtp is not told of MKIs here; the MKI is not
        authenticated), or b"" when the packet's MKI is not this key's."""
        n = len(mki)
        tags = self._tags
        tag = 0 if tags is None else tags[1] if rtcp else tags[0]
        end = len(data) - tag
        if end - n < (8 if rtcp else 12) or data[end - n:end] != mki:
            return b""
        return data[:end - n] + data[end:]


class SrtpStream:
    """A sender's SRTP and SRTCP (one leg's direction): its keys, and per SSRC the key
    that last authenticated one of its packets."""

    __slots__ = ("_current", "_previous", "_previous_until", "_by_ssrc", "failure", "suite")

    def __init__(self) -> None:
        self._current: list[_Context] = []
        self._previous: list[_Context] = []
        self._previous_until: float | None = None    # when the previous keys go (set once a current one works)
        self._by_ssrc: dict[int, _Context] = {}      # at most 2 * MAX_SSRCS entries, the newest
        self.failure = FAILED                        # why the last packet refused was refused
        self.suite: str | None = None                # the suite of the first current key

    @property
    def keys(self) -> list[SrtpKey]:
        """The current keys, in the order they are tried."""
        return [c.key for c in self._current]

    def set_keys(self, keys: Sequence[SrtpKey], now: float) -> bool:
        """The sender's keys from its latest SDP.  The same keys change nothing (False);
        new ones take over, and the ones they replace stay as the previous generation
        (``PREVIOUS_GRACE``)."""
        keys = list(keys)[:MAX_KEYS]
        if keys == self.keys:
            return False
        have = {c.key: c for c in self._current + self._previous}
        current = [have.get(k) or _Context(k) for k in keys]
        kept = set(map(id, current))
        self._previous = [c for c in self._current if id(c) not in kept][:MAX_KEYS]
        self._current = current
        self._previous_until = None
        self.suite = keys[0].suite if keys else self.suite
        self._forget_dropped()
        return True

    def unprotect(self, data: bytes, now: float) -> bytes | None:
        """The clear RTP packet of an SRTP one; None when it is dropped (``failure``
        says why)."""
        if len(data) < 12:
            self.failure = FAILED
            return None
        return self._unprotect(data, _SSRC.unpack_from(data, 8)[0], False, now)

    def unprotect_rtcp(self, data: bytes, now: float) -> bytes | None:
        """The clear RTCP (compound) packet of an SRTCP one; None when it is dropped."""
        if len(data) < 8:
            self.failure = FAILED
            return None
        return self._unprotect(data, _SSRC.unpack_from(data, 4)[0], True, now)

    def _unprotect(self, data: bytes, ssrc: int, rtcp: bool, now: float) -> bytes | None:
        until = self._previous_until
        if until is not None and until <= now:
            self._previous = []
            self._previous_until = None
            self._forget_dropped()
        data = bytes(data)
        first = self._by_ssrc.get(ssrc)
        replayed = False
        if first is not None:
            got = first.unprotect(data, ssrc, rtcp)
            if type(got) is bytes:
                if self._previous and self._previous_until is None and any(c is first for c in self._current):
                    self._previous_until = now + PREVIOUS_GRACE     # the SSRC's key is current (again)
                return got
            replayed = got == REPLAYED
        for ctx in self._current:
            if ctx is not first:
                got = ctx.unprotect(data, ssrc, rtcp)
                if type(got) is bytes:
                    if self._previous and self._previous_until is None:
                        self._previous_until = now + PREVIOUS_GRACE
                    self._remember(ssrc, ctx)
                    return got
                replayed = replayed or got == REPLAYED
        for ctx in self._previous:
            if ctx is not first:
                got = ctx.unprotect(data, ssrc, rtcp)
                if type(got) is bytes:
                    self._remember(ssrc, ctx)
                    return got
                replayed = replayed or got == REPLAYED
        self.failure = REPLAYED if replayed else FAILED
        return None

    def _remember(self, ssrc: int, ctx: _Context) -> None:
        by = self._by_ssrc
        by.pop(ssrc, None)
        by[ssrc] = ctx
        if len(by) > 2 * MAX_SSRCS:
            del by[next(iter(by))]

    def _forget_dropped(self) -> None:
        live = set(map(id, self._current + self._previous))
        self._by_ssrc = {s: c for s, c in self._by_ssrc.items() if id(c) in live}
