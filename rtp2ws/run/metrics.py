"""``--metrics HOST:PORT``: Prometheus metrics and a health check over HTTP.

The numbers come from one ``collect()`` callback that returns the live
driver's latest snapshot (a dict the decoder thread replaces whole about once
a second; with ``--workers N`` the supervisor's merge of the workers'), so the
HTTP thread never reads another thread's mutable state.
The registry is our own, not prometheus_client's global one; beside rtp2ws's
metrics it carries prometheus_client's process and platform collectors
(``process_*``: CPU, memory, descriptors; ``python_info``) for the process that
serves them: with ``--workers N`` the supervisor, while ``rtp2ws_*`` are the
workers' merged.

Every metric is in base units: durations in ``_seconds``, sizes in ``_bytes``
(the snapshot keeps milliseconds, ``SCALE`` converts), ratios in ``_ratio``.

``rtp2ws_build_info``  1, labelled with the version, the Python version and the
    backend of every part with a C twin (``speedups.in_use()``, as ``--version``).
``rtp2ws_leg_packet_loss_ratio``  a histogram, observed once per leg when its call
    ends: lost / (received + lost) packets of the leg (``LegLoss``, from the leg's
    statistics; legs that got no RTP are not observed).  With ``--workers`` each leg
    is observed by the worker that owns its call, and the supervisor adds the
    workers' buckets (``merge_histograms``), so the merge is exact.
``rtp2ws_leg_jitter_seconds``  a histogram, observed once per leg when its call ends:
    the leg's mean interarrival jitter (RFC 3550, as Wireshark's "Mean Jitter":
    ``rtp2ws.media.leg``'s docstring; ``LegJitter``; legs that measured none, fewer than
    two audio packets, are not observed), merged across workers the same way.
``rtp2ws_leg_mos``, ``rtp2ws_leg_max_delta_seconds``, ``rtp2ws_leg_rtt_seconds``
    histograms, observed once per leg when its call ends (``LegQualityHistograms``, from
    the leg's ``quality``: ``rtp2ws.media.quality``): the E-model MOS estimate (legs of a
    codec not rated, or with no RTP, are not observed), the largest interval between two
    packets (Wireshark's "Max Delta"), and the mean RTCP round trip between the capture
    point and the leg's receiver (legs with no SR/RR or RRTR/DLRR pair are not
    observed); merged across workers the same way.

``/metrics``  the Prometheus text format.
``/healthz``  200 ``ok`` while the capture runs, the snapshot is fresh and no
              packet was dropped (by the kernel or the interface) over the
              last interval; 503 with the reason otherwise.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..media.leg import CLOCK
from ..pipeline.sink import Forward, LegView, Sink
from ..signalling.calls import Call

__all__ = ["DELTA_BUCKETS", "JITTER_BUCKETS", "LOSS_BUCKETS", "METRICS", "MOS_BUCKETS", "QUALITY_HISTOGRAMS",
           "RTT_BUCKETS", "SCALE", "LegJitter", "LegLoss", "LegQualityHistograms", "MetricsServer", "build_info",
           "health", "merge_histograms", "parse_hostport"]

log = logging.getLogger("rtp2ws.metrics")

PREFIX = "rtp2ws_"

# (name without prefix and without _total, kind, snapshot key, help)
METRICS = (
    ("captured_packets", "counter", "packets", "Packets captured on the interface (after the BPF filter)"),
    ("captured_bytes", "counter", "bytes", "Bytes captured (as captured, up to the snap length)"),
    ("kernel_dropped_packets", "counter", "kernel_drops",
     "Packets the kernel dropped: capture buffer full (the decoder fell behind)"),
    ("interface_dropped_packets", "counter", "interface_drops", "Packets the interface or its driver dropped"),
    ("malformed_packets", "counter", "malformed", "Packets that could not be decoded (link/IP/UDP, SIP or RTP)"),
    ("ip_fragments_dropped", "counter", "frag_dropped",
     "IP fragments dropped with the incomplete datagrams evicted to keep the reassembly buffers within "
     "their bounds: a fragment flood, or many lost fragments"),
    ("calls", "counter", "calls", "Calls seen"),
    ("active_calls", "gauge", "active_calls", "Calls open now"),
    ("active_legs", "gauge", "active_legs", "Call legs (one per direction) open now"),
    ("websocket_connections_open", "gauge", "ws_open", "WebSocket connections open now"),
    ("websocket_streams", "counter", "ws_streams", "WebSocket streams opened"),
    ("websocket_reconnects", "counter", "ws_reconnects", "WebSocket reconnections after a broken connection"),
    ("queued_audio_seconds", "gauge", "ws_queued_ms", "Audio waiting to be sent, summed over streams"),
    ("dropped_audio_seconds", "counter", "ws_dropped_ms", "Audio dropped because a stream's buffer was full"),
    ("capture_running", "gauge", "capture_running", "1 while the capture thread runs"),
    ("workers", "gauge", "workers", "Worker processes capturing now (--workers N; 0 when one process does all)"),
    ("worker_restarts", "counter", "worker_restarts", "Worker processes started again after one died"),
)


# snapshot key -> factor to the metric's base unit (the snapshot counts audio in ms)
SCALE = {"ws_queued_ms": 0.001, "ws_dropped_ms": 0.001}

# Upper bounds of the per-leg loss histogram.  0 counts the legs that lost nothing; then
# the steps where G.711 with concealment changes for a listener: the E-model (ITU-T
# G.107, with G.113's Bpl 25.1 for G.711 with PLC, random loss) gives R about 93 at
# 0 %, 90 at 1 %, 77 at 5 % and 66 at 10 %: from "satisfied" to "many users
# dissatisfied" between 1 and 10 %, so the bounds are dense there; 20 % and beyond is a
# broken leg, 50 % half of it gone (a one-way mirror, a routing fault).  Fixed, so that
# the workers' buckets and every scrape's add up.
LOSS_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

# Upper bounds of the per-leg jitter histogram, in seconds: a LAN or a clean path stays
# under 1-2 ms; 5-20 ms is a loaded WAN or Wi-Fi hop; 30 ms is where VoIP equipment
# usually alarms (a common SLA figure), and 50 ms eats a typical 60 ms jitter buffer
# (ours by default, --jitter-ms): from there on packets come too late to play.  100 and
# 200 ms are a broken path.
JITTER_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)

# Upper bounds of the per-leg MOS histogram: G.107's user-satisfaction bands (R 90, 80,
# 70, 60, 50: MOS about 4.34, 4.03, 3.60, 3.10, 2.58), with the top split finer, where a
# clean G.711 leg (4.41) and one with a little loss or delay differ.
MOS_BUCKETS = (1.5, 2.0, 2.58, 3.1, 3.6, 4.03, 4.2, 4.34, 4.4, 4.5)

# Upper bounds of the per-leg max-delta histogram, in seconds: 20 ms packets arrive 20 ms
# apart; 30-60 ms is one or two packets late or lost; beyond 100 ms a gap a listener
# hears (or silence suppression without a marker); seconds: the stream stalled.
DELTA_BUCKETS = (0.025, 0.03, 0.04, 0.06, 0.08, 0.1, 0.2, 0.5, 1.0, 5.0)

# Upper bounds of the per-leg round-trip histogram, in seconds: a LAN under 10 ms, a
# country 20-50 ms, a continent 100 ms; G.114 puts 150 ms one way (300 ms round trip)
# as the limit for most applications, and 400 ms one way as unacceptable.
RTT_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.8)

# (snapshot key, buckets, metric name, help): the histograms LegQualityHistograms fills
QUALITY_HISTOGRAMS = (
    ("leg_mos", MOS_BUCKETS, "leg_mos",
     "A leg's MOS estimate by the ITU-T G.107 E-model (simplified: rtp2ws.media.quality), observed once per "
     "rated leg when its call ends"),
    ("leg_max_delta", DELTA_BUCKETS, "leg_max_delta_seconds",
     "The largest interval between two consecutive RTP packets of a leg (Wireshark's Max Delta), observed once "
     "per leg when its call ends"),
    ("leg_rtt", RTT_BUCKETS, "leg_rtt_seconds",
     "A leg's mean RTCP round trip (capture point to its receiver, from SR/RR LSR and DLSR or XR RRTR/DLRR), "
     "observed once per leg that has one when its call ends"),
)


def new_histogram(buckets: tuple[float, ...]) -> dict:
    """A histogram as the snapshot carries it: per bucket the observations that fell in
    it (not cumulative; the last entry those above every bound), their sum and count."""
    return {"counts": [0] * (len(buckets) + 1), "sum": 0.0, "count": 0}


def observe(hist: dict, buckets: tuple[float, ...], value: float) -> None:
    import bisect

    hist["counts"][bisect.bisect_left(buckets, value)] += 1
    hist["sum"] += value
    hist["count"] += 1


def merge_histograms(hists: list[dict | None], buckets: tuple[float, ...]) -> dict:
    """Several workers' histograms of the same buckets as one: counts, sums and counts added."""
    out = new_histogram(buckets)
    for h in hists:
        if not h:
            continue
        out["counts"] = [a + b for a, b in zip(out["counts"], h["counts"], strict=True)]
        out["sum"] += h["sum"]
        out["count"] += h["count"]
    return out


class LegLoss(Forward):
    """On the way to the real sink: each leg's loss ratio into ``hist`` when its call ends
    (decoder thread; the snapshot carries a copy)."""

    def __init__(self, inner: Sink) -> None:
        super().__init__(inner)
        self.hist = new_histogram(LOSS_BUCKETS)

    def call_ended(self, call: Call, legs: dict[str, LegView]) -> None:
        for leg in legs.values():
            st = leg.stats
            seen = st["packets"] + st["lost"]
            if seen:
                observe(self.hist, LOSS_BUCKETS, st["lost"] / seen)
        self.inner.call_ended(call, legs)

    def snapshot(self) -> dict:
        h = self.hist
        return {"counts": list(h["counts"]), "sum": h["sum"], "count": h["count"]}


class LegJitter(Forward):
    """On the way to the real sink: each leg's mean interarrival jitter, in seconds, into
    ``hist`` when its call ends (decoder thread; the snapshot carries a copy)."""

    def __init__(self, inner: Sink) -> None:
        super().__init__(inner)
        self.hist = new_histogram(JITTER_BUCKETS)

    def call_ended(self, call: Call, legs: dict[str, LegView]) -> None:
        for leg in legs.values():
            j = leg.jitter
            if j.counted:
                observe(self.hist, JITTER_BUCKETS, j.total / j.counted / CLOCK)
        self.inner.call_ended(call, legs)

    def snapshot(self) -> dict:
        h = self.hist
        return {"counts": list(h["counts"]), "sum": h["sum"], "count": h["count"]}


class LegQualityHistograms(Forward):
    """On the way to the real sink: each leg's MOS, max delta and round trip (its
    ``quality``) into their histograms when its call ends (decoder thread; the snapshot
    carries copies)."""

    def __init__(self, inner: Sink) -> None:
        super().__init__(inner)
        self.hists = {key: new_histogram(buckets) for key, buckets, _, _ in QUALITY_HISTOGRAMS}

    def call_ended(self, call: Call, legs: dict[str, LegView]) -> None:
        mos_h, delta_h, rtt_h = (self.hists[key] for key, _, _, _ in QUALITY_HISTOGRAMS)
        for leg in legs.values():
            q = leg.quality
            if q["mos"] is not None:
                observe(mos_h, MOS_BUCKETS, q["mos"])
            if q["max_delta_ms"] is not None:
                observe(delta_h, DELTA_BUCKETS, q["max_delta_ms"] / 1000)
            if q["rtt_ms"] is not None:
                observe(rtt_h, RTT_BUCKETS, q["rtt_ms"] / 1000)
        self.inner.call_ended(call, legs)

    def snapshot(self) -> dict:
        return {key: {"counts": list(h["counts"]), "sum": h["sum"], "count": h["count"]}
                for key, h in self.hists.items()}


def build_info() -> dict[str, str]:
    """``rtp2ws_build_info``'s labels: version, python, and each part's backend."""
    import platform

    from .. import __version__
    from ..speedups import in_use

    return {"version": __version__, "python": platform.python_version(), **in_use()}


def parse_hostport(text: str) -> tuple[str, int]:
    """``127.0.0.1:9100``, ``[::1]:9100`` or ``:9100`` (all addresses)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--metrics must be HOST:PORT, not {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def health(snapshot: dict | None, *, stale_s: float = 10.0, now: float | None = None) -> tuple[bool, str]:
    """(healthy, reason) from a driver snapshot."""
    if not snapshot:
        return False, "not started"
    if not snapshot.get("capture_running"):
        error = snapshot.get("capture_error")
        return False, "capture is not running" + (f": {error}" if error else "")
    now = time.monotonic() if now is None else now
    age = now - snapshot.get("monotonic", now)
    if age > stale_s:
        return False, f"the decoder has not reported for {age:.0f} s"
    recent = snapshot.get("drops_recent", 0)
    if recent:
        return False, (f"{recent} packets dropped in the last {snapshot.get('drops_window_s', 0):g} s "
                       f"(by the kernel or the interface)")
    return True, "ok"


class _Collector:
    def __init__(self, collect: Callable[[], dict]) -> None:
        self._collect = collect
        self._build = build_info()

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            InfoMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        snap = self._collect() or {}
        yield InfoMetricFamily(PREFIX + "build", "rtp2ws's version, Python's, and the backend of each part with a "
                               "C twin (native or its twin)", value=self._build)
        for name, kind, key, text in METRICS:
            value = snap.get(key, 0)
            value = float(value) * SCALE.get(key, 1) if value is not None else 0.0
            if kind == "counter":
                yield CounterMetricFamily(PREFIX + name, text, value=value)
            else:
                yield GaugeMetricFamily(PREFIX + name, text, value=value)
        for key, buckets, name, text in (
                ("leg_loss", LOSS_BUCKETS, "leg_packet_loss_ratio",
                 "Packets a leg lost, of those sent to it (received + lost), observed once per leg when its call "
                 "ends"),
                ("leg_jitter", JITTER_BUCKETS, "leg_jitter_seconds",
                 "A leg's mean RTP interarrival jitter (RFC 3550, Wireshark's mean jitter), observed once per leg "
                 "with audio when its call ends"),
                *QUALITY_HISTOGRAMS):
            hist = snap.get(key) or new_histogram(buckets)
            cumulative, running = [], 0
            for bound, n in zip((*buckets, float("inf")), hist["counts"], strict=True):
                running += n
                cumulative.append((floatToGoString(bound), running))
            yield HistogramMetricFamily(PREFIX + name, text, buckets=cumulative, sum_value=hist["sum"])


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serves ``/metrics`` and ``/healthz`` from a daemon thread."""

    def __init__(self, collect: Callable[[], dict], host: str = "127.0.0.1", port: int = 9100, *,
                 stale_s: float = 10.0) -> None:
        # prometheus_client is imported here only, so the rest of rtp2ws runs without it
        from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        self.collect = collect
        self.stale_s = stale_s
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(collect))
        # this process's CPU, memory, descriptors (process_*) and Python (python_info)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    try:
                        body, status, ctype = generate_latest(server.registry), 200, CONTENT_TYPE_LATEST
                    except Exception as e:
                        log.exception("metrics collection failed")
                        body, status, ctype = f"collection failed: {e}\n".encode(), 500, "text/plain"
                elif path == "/healthz":
                    ok, reason = health(server.collect(), stale_s=server.stale_s)
                    body, status, ctype = (reason + "\n").encode(), 200 if ok else 503, "text/plain; charset=utf-8"
                else:
                    body, status, ctype = b"not found: try /metrics or /healthz\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):   # no access log on stderr
                pass

        cls = _Server6 if ":" in host else ThreadingHTTPServer
        try:
            self._httpd = cls((host, port), Handler)
        except OSError as e:
            raise OSError(f"--metrics {host}:{port}: {e.strerror or e}") from None
        self.host = host
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(5)
        self._httpd.server_close()
