"""Sharding by call: which worker owns a call, and one set of statistics out of N.

With ``--workers N`` every worker sees every packet and keeps the signalling of every
call (registry, correlator, probation: so every worker decides the same calls, the
same timeouts and the same media-only calls), but does the media work of the calls it
*owns* only (``Config.shard = (index, N)``); the media of the others ("foreign" calls)
is dropped, by the fast path in C once their flows are known.  The union of what the
workers' sinks hear is what one unsharded pipeline's sink hears.

``owner(call_key, N)`` is stable across processes and runs (CRC-32 of the UTF-8 key,
not ``hash()``, which is salted per process).  ``merge_stats`` makes one statistics
dict out of the workers' ones: each key has a rule (``PIPELINE_STATS`` for
``Pipeline.stats``, defined here and only here; groups for the decoder's, the TCP
reassembler's and the registry's, which every worker counts identically).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

from ..media.leg import remember_flow
from ..signalling.correlator import Addr, Flow

ONCE = "once"         # every worker counts it identically (every packet, all signalling): taken once
SUM = "sum"           # media of the calls a worker owns: summed over the workers
DERIVED = "derived"   # the sum of other stats (``DERIVED_FROM``), recomputed after merging
LOCAL = "local"       # one worker's own business (foreign packets dropped): not reported

# Pipeline.stats: every key the pipeline counts, and how N workers' counts merge.  A new
# stat goes here (Pipeline.__init__ builds its stats from this table, so one missing here
# raises KeyError where it is counted).
PIPELINE_STATS: dict[str, str] = {
    "frames": ONCE,               # frames read (every worker reads every one)
    "malformed": DERIVED,         # malformed_packet + malformed_sip + malformed_rtp + internal_errors
    "malformed_packet": ONCE,     # frames the packet decoder refused
    "malformed_sip": ONCE,        # SIP that did not parse
    "malformed_rtp": SUM,         # RTP on a call's addresses that did not parse (the call's owner counts it)
    "sip": ONCE,                  # SIP messages parsed
    "rtp": SUM,                   # RTP packets that went to a leg
    "rtcp": SUM,                  # ... RTCP, STUN, ZRTP on a call's addresses
    "rtcp_malformed": SUM,        # ... of which did not parse cleanly (SRTCP among them): not used
    "rtcp_encrypted": SUM,        # ... of which came on an encrypted leg: not parsed (SRTCP)
    "rtcp_unmatched": SUM,        # report blocks / XR items naming no SSRC of the call's legs
    "stun": SUM,
    "zrtp": SUM,
    "dtls": SUM,                  # DTLS (RFC 7983: first byte 20-63) on a call's addresses
    "srtp": SUM,                  # SRTP/SRTCP packets decrypted (SDES keys) before their leg
    "srtp_failed": SUM,           # ... dropped: no key authenticated them
    "srtcp_failed": SUM,
    "srtp_replayed": SUM,         # ... dropped by the replay check (duplicates)
    "unmatched_udp": ONCE,        # UDP no call took (probation's included; every worker sees it)
    "other": ONCE,                # frames that are not UDP/TCP
    "rtp_after_end": ONCE,        # probation's verdicts: the same in every worker
    "internal_errors": ONCE,      # undocumented exceptions (a bug; counted by the worker that hit it)
    "probation_full": ONCE,
    "extra_legs": SUM,            # legs of concurrent flows (caller#2 ...) of owned calls
    "extra_flow_dropped": SUM,    # their packets dropped for want of a leg
    "foreign": LOCAL,             # packets of other workers' calls dropped here (C and Python)
}
DERIVED_FROM = {"malformed": ("malformed_packet", "malformed_sip", "malformed_rtp", "internal_errors")}

# The other counters a run reports beside Pipeline.stats (rtp2ws.run.replay, .live):
# ``decoder_<k>`` (PacketDecoder.stats), ``tcp_<k>`` (SipTcpReassembler.stats), the
# registry's (CallRegistry.stats, unprefixed) and the capture's: every worker decodes
# every frame and follows all signalling, so all are counted identically.
ONCE_PREFIXES = ("decoder_", "tcp_")
ONCE_KEYS = frozenset({"sip_messages", "sip_duplicates", "sip_orphans", "sdp_errors", "sdp_crypto_errors",
                       "sip_errors", "calls", "picked_up", "media_only", "bad_timestamps", "first_bad_timestamp"})


def owner(call_key: str, count: int) -> int:
    """The worker (0 .. count - 1) that owns the call ``call_key`` (``Call.key``)."""
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    return zlib.crc32(call_key.encode("utf-8", "surrogatepass")) % count


def check_shard(shard: tuple[int, int] | None) -> tuple[int, int] | None:
    """``Config.shard`` checked: None, or (index, count) with 0 <= index < count."""
    if shard is None:
        return None
    index, count = shard
    if type(index) is not int or type(count) is not int or not 0 <= index < count:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, not {shard!r}")
    return index, count


def rule(key: str) -> str:
    """How ``key`` merges: ONCE, SUM, DERIVED or LOCAL; KeyError for a stat with no rule."""
    r = PIPELINE_STATS.get(key)
    if r is not None:
        return r
    if key in ONCE_KEYS or key.startswith(ONCE_PREFIXES):
        return ONCE
    raise KeyError(f"no merge rule for the stat {key!r} (rtp2ws.pipeline.shard)")


def merge_stats(workers: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """One statistics dict out of the workers' (each ``Pipeline.stats``, possibly with
    the ``decoder_``/``tcp_``/registry keys a run adds).  A key missing from a worker
    counts as 0 there (runs leave zero counters out); LOCAL keys are left out; a key
    with no rule raises KeyError."""
    out: dict[str, int] = {}
    derived = []
    for stats in workers:
        for key, value in stats.items():
            r = rule(key)
            if r == SUM:
                out[key] = out.get(key, 0) + value
            elif r == ONCE:
                out[key] = max(out[key], value) if key in out else value
            elif r == DERIVED:
                derived.append(key)
    for key in dict.fromkeys(derived):
        out[key] = sum(out.get(k, 0) for k in DERIVED_FROM[key])
    return out


class ForeignLeg:
    """What a worker keeps of a leg of a foreign call: only what decides, as the owner's
    ``MediaLeg`` does, which flows the leg takes and when a flow gets a leg of its own
    (``Pipeline._new_flow``), since that decides the correlator's bindings and the call's
    last activity, which every worker must keep alike.  No audio, no events."""

    __slots__ = ("tag", "flow", "flow_expect", "own_flows", "counts")

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.flow: Flow | None = None
        self.flow_expect: tuple[Addr | None, Addr | None] | None = None
        self.own_flows: dict[Flow, bool] = {}
        self.counts = {"packets": 0}      # RTP packets the leg took (MediaLeg.counts["packets"])

    def take_flow(self, flow: Flow, expect: tuple[Addr | None, Addr | None] | None = None) -> None:
        """``MediaLeg.take_flow``."""
        self.flow = flow
        self.flow_expect = expect
        remember_flow(self.own_flows, flow)
