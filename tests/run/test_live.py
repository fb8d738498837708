"""``rtp2ws live`` on a real interface (loopback), with real libpcap, real UDP
sockets and a real ``rtp2ws sink`` process.  Needs root (or CAP_NET_RAW)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rtp2ws.capture.live import (
    VLAN_LINKTYPES,
    CaptureOpenError,
    LiveCapture,
    build_bpf,
    parse_port_range,
    parse_ports,
)
from rtp2ws.net.packet import (
    DLT_EN10MB,
    DLT_IPV4,
    DLT_IPV6,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_LOOP,
    DLT_NULL,
    DLT_RAW,
)
from rtp2ws.pipeline.sink import Sink
from rtp2ws.sinks.wav import read_wav

import netgen
from livecall import _filter
from natsserver import nats_server  # noqa: F401 - the fixture
from paths import TESTS
from skips import can_capture

PY = sys.executable


needs_capture = pytest.mark.skipif(not can_capture(), reason="needs root or CAP_NET_RAW to capture on lo")


# --------------------------------------------------------------------------- filter

def test_port_parsing():
    assert parse_ports("5060,5080") == (5060, 5080)
    assert parse_ports([5060]) == (5060,)
    assert parse_port_range("16384-32768") == (16384, 32768)
    assert parse_port_range([10000, 10010]) == (10000, 10010)
    for bad, msg in (("5060,x", "invalid port 'x'"), ("70000", "port 70000 out of range 1..65535"), ("", "no port given")):
        with pytest.raises(ValueError, match=re.escape(msg)):
            parse_ports(bad)
    with pytest.raises(ValueError, match="port range 20-10 is empty"):
        parse_port_range("20-10")
    with pytest.raises(ValueError, match="must be LOW-HIGH"):
        parse_port_range("10")


def test_build_bpf_text():
    f = build_bpf()
    assert f.startswith("((udp and (port 5060 or port 5080 or portrange 16384-32768)) or (tcp and (port 5060 or port 5080))")
    assert "(ip and (ip[6:2] & 0x1fff) != 0)" in f and "(ip6 and ip6[6] == 44)" in f
    assert f.count("vlan") == 1 and f.index("vlan") > f.index("ip6[6]")
    assert "tcp" not in build_bpf(sip_tcp=False)
    assert "port 7000)" in build_bpf((5060,), (7000, 7000))
    # Elsewhere than on Ethernet, no vlan clause: the filter is the untagged half.
    assert build_bpf(linktype=DLT_EN10MB) == f
    assert build_bpf(linktype=DLT_LINUX_SLL) == f[1:f.index(") or (vlan")]
    assert VLAN_LINKTYPES == {DLT_EN10MB}


# What a live handle on Linux may report, among the link types the decoder reads
# (DLT_RAW_OPENBSD 14 and LINKTYPE_RAW 101 only appear in capture files).
LIVE_LINKTYPES = [DLT_EN10MB, DLT_LINUX_SLL, DLT_LINUX_SLL2, DLT_RAW, DLT_IPV4, DLT_IPV6, DLT_NULL, DLT_LOOP]


@pytest.mark.parametrize("linktype", LIVE_LINKTYPES)
@pytest.mark.parametrize("kw", [{}, {"sip_tcp": False}])
def test_build_bpf_compiles_for_every_link_type(linktype, kw):
    """libpcap's own compiler (pcap_compile for a handle of that link type) takes the
    default filter built for it; the Ethernet one (with vlan) only on Ethernet."""
    import pcap

    pcap.bpf(build_bpf(linktype=linktype, **kw).encode(), linktype)
    if linktype not in VLAN_LINKTYPES:
        with pytest.raises(OSError, match="bad filter"):
            pcap.bpf(build_bpf(linktype=DLT_EN10MB, **kw).encode(), linktype)


@needs_capture
def test_default_filter_opens_any_and_keeps_vlan_on_ethernet():
    """``-i any`` (Linux cooked v1) used to fail: "no VLAN support for Linux cooked v1"."""
    def default(linktype):
        return build_bpf(linktype=linktype)

    with LiveCapture("any", bpf=default) as cap:
        assert cap.linktype == DLT_LINUX_SLL and "vlan" not in cap.bpf and cap.bpf == default(DLT_LINUX_SLL)
    with LiveCapture("lo", bpf=default) as cap:
        assert cap.linktype == DLT_EN10MB and "vlan" in cap.bpf


@needs_capture
@pytest.mark.parametrize("kw", [{}, {"sip_tcp": False}, {"sip_ports": (5060,), "rtp_ports": (10000, 20000)}])
def test_build_bpf_compiles_on_lo(kw):
    LiveCapture("lo", bpf=build_bpf(**kw)).stop()


@pytest.mark.parametrize("linktype", [DLT_EN10MB, DLT_LINUX_SLL, DLT_LINUX_SLL2])
def test_build_bpf_matches_the_right_packets(tmp_path, linktype):
    """libpcap applies the filter to a file exactly as to an interface.  (On a live
    cooked capture the kernel has taken tags off, so the vlan cases are Ethernet's.)"""
    import pcap

    big = b"S" * 3000
    cases = [
        ("udp sip", netgen.udp("10.0.0.1", 5060, "10.0.0.2", 5060, b"INVITE"), (), True),
        ("udp sip src 5080", netgen.udp("10.0.0.1", 5080, "10.0.0.2", 41000, b"x"), (), True),
        ("udp rtp", netgen.udp("10.0.0.1", 40000, "10.0.0.2", 20000, b"\x80" * 20), (), True),
        ("udp other", netgen.udp("10.0.0.1", 40000, "10.0.0.2", 40001, b"x"), (), False),
        ("dns", netgen.udp("10.0.0.1", 53, "10.0.0.2", 33000, b"x"), (), False),
        ("tcp sip", netgen.tcp("10.0.0.1", 40000, "10.0.0.2", 5060, b"INVITE", seq=1), (), True),
        ("tcp in rtp range", netgen.tcp("10.0.0.1", 40000, "10.0.0.2", 20000, b"x", seq=1), (), False),
        ("udp6 sip", netgen.udp("2001:db8::1", 5060, "2001:db8::2", 5060, b"x"), (), True),
        ("udp6 other", netgen.udp("2001:db8::1", 40000, "2001:db8::2", 40001, b"x"), (), False),
        ("vlan sip", netgen.udp("10.0.0.1", 5060, "10.0.0.2", 5060, b"x"), (100,), True),
        ("vlan rtp", netgen.udp("10.0.0.1", 40000, "10.0.0.2", 30000, b"x"), (100,), True),
        ("vlan other", netgen.udp("10.0.0.1", 40000, "10.0.0.2", 40001, b"x"), (100,), False),
    ]
    frags = netgen.fragment(netgen.udp("10.0.0.1", 5060, "10.0.0.2", 5060, big), 1500)
    cases += [("v4 first fragment", frags[0], (), True), ("v4 second fragment", frags[1], (), True),
              ("vlan v4 second fragment", frags[1], (200,), True)]
    other = netgen.fragment(netgen.udp("10.0.0.1", 40000, "10.0.0.2", 40001, big), 1500)
    cases += [("v4 first fragment, other port", other[0], (), False),
              ("v4 later fragment, any port", other[2], (), True)]
    frags6 = netgen.fragment(netgen.udp("2001:db8::1", 5060, "2001:db8::2", 5060, big), 1500)
    cases += [("v6 first fragment", frags6[0], (), True), ("v6 second fragment", frags6[1], (), True),
              ("vlan v6 fragment", frags6[1], (300,), True)]
    if linktype != DLT_EN10MB:
        cases = [c for c in cases if not c[2]]
    path = tmp_path / "mix.pcap"
    netgen.write_pcap(str(path), [(1.0 + i, netgen.link(linktype, ip, vlans=v))
                                  for i, (_, ip, v, _) in enumerate(cases)], linktype)
    p = pcap.pcap(name=str(path), promisc=False, immediate=False, timeout_ms=0)
    assert p.datalink() == linktype
    p.setfilter(build_bpf(linktype=linktype))
    got = set()
    p.dispatch(-1, lambda ts, frame: got.add(round(ts) - 1))
    p.close()
    want = {i for i, c in enumerate(cases) if c[3]}
    assert got == want, ([cases[i][0] for i in got - want], [cases[i][0] for i in want - got])


BACKENDS = ["python", "native"]


def _backend(backend: str) -> str:
    from rtp2ws.capture import live

    if backend not in live.BACKENDS:
        pytest.skip("rtp2ws._fastpath is not built (or RTP2WS_NO_NATIVE is set)")
    return backend


def _recording(cap: LiveCapture):
    """A pipeline over ``cap``'s link type that keeps every packet handed to ``feed``
    (with no call, the fast path hands every packet there)."""
    from rtp2ws.pipeline.pipeline import Pipeline

    class Recording(Pipeline):
        def __init__(self) -> None:
            super().__init__(cap.linktype, Sink())
            self.got: list[tuple[float, bytes]] = []

        def feed(self, ts: float, frame: bytes) -> None:
            self.got.append((ts, frame))
            super().feed(ts, frame)

    return Recording()


class _Recorder(Sink):
    """A sink that keeps each leg's audio hand-outs, and each ended call's reason and its
    legs' packet counts."""

    def __init__(self):
        self.audio = {}
        self.ended = []
        self.packets = []

    def leg_audio(self, call, leg, pcm):
        self.audio.setdefault(leg.tag, []).append(pcm)

    def call_ended(self, call, legs):
        self.ended.append(call.end_reason)
        self.packets.append({tag: v.stats["packets"] for tag, v in legs.items()})


def _read(cap: LiveCapture, pipe, n: int, timeout: float = 5.0) -> None:
    """Read ``cap`` into ``pipe`` until it has ``n`` packets and the ring is empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert pipe.run_reader(cap.reader, 64)
        if cap.reader.waiting:
            if len(pipe.got) >= n:
                return
            cap.wait(float("-inf"), 0.05)


def _kernel_stats(cap: LiveCapture) -> dict:
    """``cap.stats()`` once the kernel's counters have been read after everything sent
    (the reading thread reads them at most every ``STATS_EVERY_S``)."""
    from rtp2ws.capture.live import STATS_EVERY_S

    cap.poll_stats()
    time.sleep(STATS_EVERY_S + 0.1)
    cap.poll_stats()
    return cap.stats()


@needs_capture
@pytest.mark.parametrize("backend", BACKENDS)
def test_build_bpf_on_lo_captures_only_matching_traffic(backend):
    cap = LiveCapture("lo", bpf=build_bpf(sip_ports=(25998,), rtp_ports=(26500, 26510)), backend=_backend(backend))
    pipe = _recording(cap)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for port in (25998, 26505, 26511, 25997):
                s.sendto(b"hello", ("127.0.0.1", port))
        _read(cap, pipe, 2)
        time.sleep(0.1)
        _read(cap, pipe, 2)
    finally:
        cap.stop()
    got = pipe.got
    ports = sorted(int.from_bytes(frame[36:38], "big") for _, frame in got)   # Ethernet(14) + IPv4(20) + dport
    assert ports == [25998, 26505]
    assert all(abs(ts - time.time()) < 10 for ts, _ in got)
    st = cap.stats()
    assert st["packets"] == 2 and st["bytes"] == sum(len(f) for _, f in got) and st["kernel_received"] >= 2
    assert not cap.running and not st["running"] and st["error"] is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_capture_errors(backend):
    backend = _backend(backend)
    with pytest.raises(CaptureOpenError, match=r"^nosuch0: no such network interface"):
        LiveCapture("nosuch0", bpf="udp", backend=backend)
    if can_capture():
        with pytest.raises(CaptureOpenError, match=r"invalid capture filter 'udp and': .*syntax error"):
            LiveCapture("lo", bpf="udp and", backend=backend)


@pytest.mark.skipif(shutil.which("capsh") is None or os.geteuid() != 0, reason="needs capsh and root")
@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_permission_says_how_to_grant_it(backend):
    code = ("from rtp2ws.capture.live import LiveCapture, CaptureOpenError\n"
            f"try:\n    LiveCapture('lo', bpf='udp', backend='{_backend(backend)}')\n"
            "except CaptureOpenError as e:\n    print(e)\n")
    r = subprocess.run(["capsh", "--drop=cap_net_raw", "--", "-c", f'exec "{PY}" -c "$0"', code],
                       capture_output=True, text=True, timeout=30)
    assert "lo: no permission to capture" in r.stdout and "CAP_NET_RAW" in r.stdout, r.stdout + r.stderr


# --------------------------------------------------------------------------- reading

@needs_capture
def test_both_live_readers_read_the_same_packets():
    """The C LiveReader and its pypcap twin, open on lo side by side, read the same
    frames at the same times (to the microsecond: the twin's are microseconds), count
    the same bytes, and both say ``waiting`` once the ring is empty."""
    _backend("native")
    caps = [LiveCapture("lo", bpf="udp and dst port 26993", backend=b) for b in BACKENDS]
    pipes = [_recording(c) for c in caps]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(30):
                s.sendto(i.to_bytes(2, "big") * (i + 1), ("127.0.0.1", 26993))
        for c, p in zip(caps, pipes, strict=True):
            _read(c, p, 30)
            assert c.reader.waiting
    finally:
        for c in caps:
            c.stop()
    (py, native) = (p.got for p in pipes)
    assert len(py) == len(native) == 30
    assert [f for _, f in py] == [f for _, f in native]
    assert all(abs(a - b) < 2e-6 for (a, _), (b, _) in zip(py, native, strict=True))
    assert caps[0].stats()["bytes"] == caps[1].stats()["bytes"] == sum(len(f) for _, f in py)
    assert caps[0].stats()["packets"] == caps[1].stats()["packets"] == 30


@needs_capture
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_full_ring_is_counted_as_kernel_drops_and_reading_goes_on(backend):
    """Nothing reads for a while and the kernel's ring (1 MiB here) fills: the kernel
    drops and counts, and what the ring held is still read, and what comes after."""
    cap = LiveCapture("lo", bpf="udp and dst port 26999", buffer_mb=1, backend=_backend(backend))
    pipe = _recording(cap)
    sent = 20_000
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(sent):
                s.sendto(b"x" * 20, ("127.0.0.1", 26999))
            time.sleep(0.1)
            _read(cap, pipe, 1)
            held = len(pipe.got)
            s.sendto(b"y" * 20, ("127.0.0.1", 26999))
            _read(cap, pipe, held + 1)
        st = _kernel_stats(cap)
    finally:
        cap.stop()
    assert 0 < held < sent
    assert pipe.got[-1][1].endswith(b"y" * 20)
    # lo shows the kernel each packet twice (sent and received; libpcap skips the sent
    # copies it reads): at least every packet not read was dropped
    assert st["kernel_drops"] >= sent - held, st
    assert st["packets"] == held + 1 and st["running"] and st["error"] is None


@needs_capture
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_default_ring_holds_packets_at_their_own_length(backend):
    """The default 64 MiB ring holds 5,000 unread 200-byte packets (25 ms of 1,000
    calls' RTP): buffered mode.  In immediate mode (TPACKET_V2) every packet took a slot
    as big as the snapshot length, 128 KiB on lo (64 KiB on a veth, or a NIC with GRO or
    TSO): 511 were kept, the rest dropped."""
    cap = LiveCapture("lo", bpf="udp and dst port 26998", backend=_backend(backend))
    pipe = _recording(cap)
    sent = 5000
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(sent):
                s.sendto(i.to_bytes(4, "big") * 50, ("127.0.0.1", 26998))
        time.sleep(0.1)
        _read(cap, pipe, sent)
        st = _kernel_stats(cap)
    finally:
        cap.stop()
    assert [int.from_bytes(f[-4:], "big") for _, f in pipe.got] == list(range(sent))
    assert st["kernel_drops"] == 0 and st["packets"] == sent, st


@needs_capture
@pytest.mark.parametrize("backend", BACKENDS)
def test_waiting_leaves_the_gil_to_others_and_ends_on_time(backend):
    """``wait`` waits in select (or sleeps), without the GIL, for at most ``timeout``;
    another thread runs meanwhile.  In a subprocess, so that a regression fails instead
    of freezing pytest."""
    code = f"""
import threading, time
from rtp2ws.capture.live import LiveCapture
cap = LiveCapture("lo", bpf="udp and dst port 26998", backend="{_backend(backend)}")
n = 0
done = threading.Event()
def count():
    global n
    while not done.is_set():
        n += 1
t = threading.Thread(target=count)
t.start()
t0 = time.monotonic()
cap.wait(float("-inf"), 0.3)
idle = time.monotonic() - t0
t0 = time.monotonic()
cap.wait(time.time() + 0.2, 1.0)
held = time.monotonic() - t0
done.set()
t.join()
cap.stop()
print(n, round(idle, 3), round(held, 3), cap.wakes)
"""
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    n, idle, held, wakes = r.stdout.split()
    assert int(n) > 10000
    assert 0.25 < float(idle) < 1.0 and 0.18 < float(held) < 0.6 and wakes == "2"


@needs_capture
@pytest.mark.parametrize("backend", BACKENDS)
def test_wait_returns_for_a_packet_unless_held(backend):
    """Without a hold, ``wait`` returns as soon as a packet is in the ring; with one, it
    sleeps until then although packets came, and they are all there to read."""
    cap = LiveCapture("lo", bpf="udp and dst port 26996", backend=_backend(backend))
    pipe = _recording(cap)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            def send_later(n, delay):
                def go():
                    time.sleep(delay)
                    for i in range(n):
                        s.sendto(i.to_bytes(2, "big"), ("127.0.0.1", 26996))
                t = threading.Thread(target=go)
                t.start()
                return t

            sender = send_later(1, 0.1)
            t0 = time.monotonic()
            cap.wait(float("-inf"), 2.0)
            prompt = time.monotonic() - t0
            sender.join()
            _read(cap, pipe, 1)
            sender = send_later(10, 0.05)
            hold = time.time() + 0.4
            t0 = time.monotonic()
            cap.wait(hold, 1.0)
            held = time.monotonic() - t0
            sender.join()
            assert time.time() >= hold
            _read(cap, pipe, 11)
    finally:
        cap.stop()
    assert 0.05 < prompt < 1.0, prompt
    assert 0.35 < held < 0.9, held
    assert len(pipe.got) == 11


@needs_capture
@pytest.mark.parametrize("flush_ms", [0, 20])
def test_live_decoding_wakes_once_per_hand_out(flush_ms):
    """With ``flush_ms`` the decoder holds packets in the ring until the next hand-out:
    packets 2 ms apart are read about once per 20 ms, not one wake each."""
    from rtp2ws.pipeline.pipeline import Config
    from rtp2ws.run.live import LiveRunner

    cap = LiveCapture("lo", bpf="udp and dst port 26994")
    runner = LiveRunner(cap, Config(flush_ms=flush_ms))
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(Sink(), stop), daemon=True)
    thread.start()
    try:
        time.sleep(0.1)
        before = cap.wakes
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            t0 = time.monotonic()
            for i in range(200):                 # 0.4 s
                s.sendto(b"x" * 40, ("127.0.0.1", 26994))
                delay = t0 + (i + 1) * 0.002 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        time.sleep(0.1)
        wakes = cap.wakes - before
        assert cap.stats()["packets"] == 200
    finally:
        stop.set()
        thread.join(10)
    if flush_ms:
        assert wakes <= 0.5 / 0.020 + 3, wakes
    else:
        assert wakes > 60, wakes


@needs_capture
def test_stop_during_a_flood_reads_the_ring_for_a_bounded_time(monkeypatch):
    """At stop the decoder reads what the ring holds, but a flood that never lets it
    empty does not keep it from ending: at most ``FINAL_READ_S`` of it.  The decoder is
    made slow (half a millisecond a packet: a busy decoder), so that the flood surely
    outruns it."""
    from rtp2ws.pipeline.pipeline import Config, Pipeline
    from rtp2ws.run import live as run_live

    class Slow(Pipeline):
        def feed(self, ts: float, frame: bytes) -> None:
            time.sleep(0.0005)
            super().feed(ts, frame)

    monkeypatch.setattr(run_live, "Pipeline", Slow)
    cap = LiveCapture("lo", bpf="udp and dst port 26992")
    runner = run_live.LiveRunner(cap, Config())
    stop = threading.Event()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (runner.run(Sink(), stop), done.set()), daemon=True)
    flood = subprocess.Popen([PY, "-c", (
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "end = time.monotonic() + 15\n"
        "while time.monotonic() < end:\n"
        "    for _ in range(1000):\n"
        "        s.sendto(b'x' * 20, ('127.0.0.1', 26992))\n")])
    try:
        thread.start()
        time.sleep(1.0)                    # the ring is full by now: the twin reads slower than lo sends
        stop.set()
        t0 = time.monotonic()
        assert done.wait(run_live.FINAL_READ_S + 3.0), "the decoder did not stop during the flood"
        took = time.monotonic() - t0
        assert flood.poll() is None        # the flood was still on when it stopped
    finally:
        flood.kill()
        flood.wait()
        stop.set()
        thread.join(10)
    assert took >= run_live.FINAL_READ_S - 0.5, took      # it did read on while the ring was not empty
    assert runner.reason == "shutdown" and cap.stats()["packets"] > 1000


# --------------------------------------------------------------------------- rtp2ws live

@needs_capture
def test_live_call_to_sink_and_wav(tmp_path, live_factory, call_factory):
    from sinkclient import SinkProcess

    sink = SinkProcess(tmp_path / "recv")
    try:
        out = tmp_path / "out"
        live = live_factory("-i", "lo", "--bpf", _filter(25070, 26000), "--out-dir", out,
                            "--ws-url", sink.url_base + "/audio", "--stats-interval", "1")
        live.wait_for("capturing on lo")
        call = call_factory("live-1@test", 25070, 26000, 26002)
        call.setup()
        call.media(2.0)
        call.bye()
        live.wait_for("1 calls so far", timeout=5)
        time.sleep(0.5)
        rc, stdout, stderr = live.stop()
    finally:
        sink_log = sink.stop()
    assert rc == 0, stderr
    m = re.search(r"lo: (\d+) packets captured, (\d+) dropped by the kernel, (\d+) by the interface; "
                  r"1 calls, 2 legs with audio", stdout)
    assert m, stdout
    assert int(m.group(1)) >= 205 and m.group(2) == "0"
    assert "streamed 2 streams, 0 reconnects, 0 ms dropped" in stdout
    assert re.search(r"lo: \d+ packets \(\+\d+\); dropped: 0 by the kernel, \d+ by the interface; "
                     r"\d+ calls and \d+ legs active", stderr), stderr   # periodic line
    # the sink got both legs, ended by the BYE, with exactly the audio sent
    msgs = [json.loads(line)["message"] for line in (sink.out_dir / "messages.jsonl").read_text().splitlines()]
    ends = {m["tag"]: m for m in msgs if m["type"] == "end"}
    assert set(ends) == {"caller", "callee"}, msgs
    assert {e["reason"] for e in ends.values()} == {"bye"}
    for tag in ("caller", "callee"):
        want = call.expected(tag)
        assert len(want) == 2 * 8000 * 2
        got, rate, ch = read_wav(str(sink.out_dir / "live-1@test" / f"{tag}.wav"))
        assert rate == 16000 and ch == 1
        assert np.array_equal(got, want), tag
        local, _, _ = read_wav(str(out / "calls" / "live-1@test" / f"{tag}.wav"))
        assert np.array_equal(local, want), tag
    doc = json.loads((out / "calls.json").read_text())
    assert [c["end_reason"] for c in doc["calls"]] == ["bye"]
    assert doc["summary"]["kernel_drops"] == int(m.group(2))
    assert doc["summary"]["end_reason"] == "shutdown"
    legs = doc["calls"][0]["legs"]
    assert {leg["tag"]: leg["duration_ms"] for leg in legs} == {"caller": 2000, "callee": 2000}
    assert "refused {}" in sink_log
    (line,) = (out / "calls.jsonl").read_text().splitlines()      # written when the call ended
    assert json.loads(line) == doc["calls"][0]


@needs_capture
def test_live_streams_and_writes_the_format_of_its_config_file(tmp_path, live_factory, call_factory):
    """``rate = 8000`` and ``encoding = "alaw"`` in the --config file: A-law RTP in, A-law at
    8 kHz out, so the sink's WAV and --out-dir's hold exactly the payload bytes sent."""
    from rtp2ws.sinks.wav import read_wav_format

    from sinkclient import SinkProcess

    config = tmp_path / "rtp2ws.toml"
    config.write_text('rate = 8000\nencoding = "alaw"\nframe_ms = 40\n')
    sink = SinkProcess(tmp_path / "recv")
    try:
        out = tmp_path / "out"
        live = live_factory("--config", config, "-i", "lo", "--bpf", _filter(25070, 26000), "--out-dir", out,
                            "--ws-url", sink.url_base + "/audio")
        live.wait_for("capturing on lo")
        call = call_factory("live-fmt@test", 25070, 26000, 26002)
        call.setup()
        call.media(1.0)
        call.bye()
        live.wait_for("call ended: live-fmt@test", timeout=5)      # in a worker (live: one per core)
        time.sleep(0.5)
        rc, stdout, stderr = live.stop()
    finally:
        sink.stop()
    assert rc == 0, stderr
    assert "streamed 2 streams, 0 reconnects, 0 ms dropped" in stdout
    msgs = [json.loads(line)["message"] for line in (sink.out_dir / "messages.jsonl").read_text().splitlines()]
    starts = [m for m in msgs if m["type"] == "start"]
    assert [(m["codec"], m["sample_rate"], m["frame_ms"]) for m in starts] == [("PCMA", 8000, 40)] * 2
    for tag in ("caller", "callee"):
        sent = b"".join(call.payloads[tag])
        assert len(sent) == 8000
        for path in (sink.out_dir / "live-fmt@test" / f"{tag}.wav", out / "calls" / "live-fmt@test" / f"{tag}.wav"):
            data, audio, ch = read_wav_format(str(path))
            assert (audio.rate, audio.encoding, ch) == (8000, "alaw", 1)
            assert data == sent, (tag, path)


@needs_capture
def test_live_out_dir_journals_each_call_as_it_ends(tmp_path, live_factory, call_factory):
    """live --out-dir: a call's line is in calls.jsonl as soon as it ends, while live
    runs; a call without audio has its line and no folder; calls.json at exit lists both."""
    out = tmp_path / "out"
    live = live_factory("-i", "lo", "--bpf", _filter(25470, 26600), "--out-dir", out, "--stats-interval", "1")
    live.wait_for("capturing on lo")
    silent = call_factory("silent@test", 25470, 26600, 26602)
    silent.setup()
    silent.bye()
    silent.close()                                        # its SIP port is the next call's
    talk = call_factory("talk@test", 25470, 26610, 26612)
    talk.setup()
    talk.media(0.4)
    talk.bye()
    journal = out / "calls.jsonl"
    live.wait_for('"call_id": "talk@test"', path=journal, timeout=5)
    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    assert [(c["call_id"], c["end_reason"]) for c in lines] == [("silent@test", "bye"), ("talk@test", "bye")]
    assert live.proc.poll() is None                       # still capturing
    rc, stdout, stderr = live.stop()
    assert rc == 0, stderr
    assert "2 calls, 2 legs with audio" in stdout
    assert os.listdir(out / "calls") == ["talk@test"]
    doc = json.loads((out / "calls.json").read_text())
    assert doc["calls"] == lines and doc["summary"]["calls"] == 2
    for tag in ("caller", "callee"):
        got, _, _ = read_wav(str(out / "calls" / "talk@test" / f"{tag}.wav"))
        assert np.array_equal(got, talk.expected(tag)), tag


@needs_capture
def test_nonexistent_interface_is_a_clear_error():
    r = subprocess.run([PY, "-m", "rtp2ws.cli", "live", "-i", "nosuch0", "--out-dir", "/nonexistent/x"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip() == "rtp2ws: error: nosuch0: no such network interface (see `ip link`)"


def test_live_needs_an_interface_and_an_output(tmp_path):
    r = subprocess.run([PY, "-m", "rtp2ws.cli", "live", "--out-dir", tmp_path], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "live needs -i/--interface" in r.stderr
    r = subprocess.run([PY, "-m", "rtp2ws.cli", "live", "-i", "lo"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "live needs --out-dir, --ws-url, --nats-url or several" in r.stderr
    r = subprocess.run([PY, "-m", "rtp2ws.cli", "live", "-i", "lo", "--rtp-ports", "9-1", "--out-dir", tmp_path],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "port range 9-1 is empty" in r.stderr


@needs_capture
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_user_nobody_still_captures_and_open_call_ends_with_shutdown(live_factory, call_factory):
    import pwd

    nobody = pwd.getpwnam("nobody")
    out_parent = tempfile.mkdtemp(prefix="rtp2ws-live-")   # reachable by nobody, unlike pytest's tmp_path
    os.chmod(out_parent, 0o777)
    try:
        out = Path(out_parent) / "out"
        live = live_factory("-i", "lo", "--bpf", _filter(25170, 26200), "--out-dir", out, "--user", "nobody")
        live.wait_for("capturing on lo")
        assert "running as nobody" in live.stderr
        status = Path(f"/proc/{live.proc.pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", status, re.MULTILINE).groups()
        gids = re.search(r"^Gid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", status, re.MULTILINE).groups()
        assert set(map(int, uids)) == {nobody.pw_uid}
        assert set(map(int, gids)) == {nobody.pw_gid}
        call = call_factory("open@test", 25170, 26200, 26202)
        call.setup()
        call.media(0.6)
        time.sleep(0.2)
        rc, stdout, stderr = live.stop()
        assert rc == 0, stderr
        assert "1 calls, 2 legs with audio" in stdout
        doc = json.loads((out / "calls.json").read_text())
        assert [c["end_reason"] for c in doc["calls"]] == ["shutdown"]
        for tag in ("caller", "callee"):
            wav = out / "calls" / "open@test" / f"{tag}.wav"
            assert wav.stat().st_uid == nobody.pw_uid
            got, _, _ = read_wav(str(wav))
            assert np.array_equal(got, call.expected(tag)), tag   # flushed to the last packet
    finally:
        shutil.rmtree(out_parent, ignore_errors=True)


@needs_capture
def test_user_that_does_not_exist(tmp_path):
    r = subprocess.run([PY, "-m", "rtp2ws.cli", "live", "-i", "lo", "--bpf", "udp port 9", "--out-dir", tmp_path,
                        "--user", "no-such-user-xyz"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--user no-such-user-xyz: no such user" in r.stderr


@needs_capture
def test_sighup_reopens_the_log_file(tmp_path, live_factory):
    log = tmp_path / "live.log"
    live = live_factory("-i", "lo", "--bpf", "udp and port 25270", "--out-dir", tmp_path / "out",
                        "--log-file", log)
    live.wait_for("capturing on lo", path=log)
    log.rename(tmp_path / "live.log.1")
    live.proc.send_signal(signal.SIGHUP)
    live.wait_for("log file reopened", path=log, timeout=5)
    rc, stdout, stderr = live.stop()
    assert rc == 0, stderr
    assert stderr == ""                      # everything went to the log file
    assert "stopped (shutdown)" in log.read_text()
    assert "capturing on lo" in (tmp_path / "live.log.1").read_text()
    assert "0 dropped by the kernel" in stdout


@needs_capture
def test_timers_run_without_traffic(call_factory):
    """The last packets of a leg leave the jitter buffer on the wall clock, with no
    packet after them to push them out; the call stays open until the end."""
    from rtp2ws.run.live import LiveRunner

    cap = LiveCapture("lo", bpf=_filter(25370, 26400))
    runner = LiveRunner(cap)
    rec = _Recorder()
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(rec, stop), daemon=True)
    thread.start()
    try:
        call = call_factory("idle@test", 25370, 26400, 26402)
        call.setup()
        call.media(0.4)
        t = time.monotonic()

        def complete():   # all but the resampler's filter tail, which waits for the leg's end
            return all(sum(map(len, rec.audio.get(tag, []))) >= len(call.expected(tag)) - 64
                       for tag in ("caller", "callee"))
        while not complete() and time.monotonic() - t < 3:
            time.sleep(0.01)
        waited = time.monotonic() - t
        assert complete(), {k: sum(map(len, v)) for k, v in rec.audio.items()}
        assert waited < 0.5           # the 60 ms jitter buffer plus a 20 ms tick, not a timeout
        assert rec.ended == []
    finally:
        stop.set()
        thread.join(10)
    assert rec.ended == ["shutdown"]
    for tag in ("caller", "callee"):
        assert np.array_equal(np.concatenate(rec.audio[tag]), call.expected(tag))


@needs_capture
@pytest.mark.skipif(shutil.which("ip") is None or os.geteuid() != 0, reason="needs ip(8) and root")
def test_interface_that_disappears_ends_calls_and_exits_1(tmp_path):
    ns = f"r2wlive{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create network namespaces here")
    proc = None
    try:
        for cmd in (["link", "add", "v0", "type", "veth", "peer", "name", "v1"], ["link", "set", "v0", "up"],
                    ["link", "set", "v1", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True, capture_output=True)
        log = tmp_path / "live.log"
        proc = subprocess.Popen(["ip", "netns", "exec", ns, PY, "-m", "rtp2ws.cli", "live", "-i", "v0",
                                 "--out-dir", str(tmp_path / "out"), "--log-file", str(log)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 15
        while "capturing on v0" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.02)
        subprocess.run(["ip", "-n", ns, "link", "del", "v0"], check=True, capture_output=True)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 1, err
        assert err.strip() == "rtp2ws: error: v0: capture failed: The interface disappeared"
        assert "v0: 0 packets captured" in out
        assert "stopped (capture_end)" in log.read_text()
        assert (tmp_path / "out" / "calls.json").exists()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


ANY_SENDER = r"""
import socket, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import callgen, netgen
from callgen import Call, Party, frames_of, rtp_packets, tone
from livecall import PhoneCall

out = sys.argv[2]
# a call on loopback, sent with UDP sockets
call = PhoneCall("lo@any", 5060, 20000, 20002)
call.setup()
call.media(0.6)
call.bye()
np.save(f"{out}/lo-caller.npy", call.expected("caller"))
np.save(f"{out}/lo-callee.npy", call.expected("callee"))
call.close()
# a call in 802.1Q VLAN 100, sent as Ethernet frames on v1: the kernel takes the tag
# off as v0 receives them, and libpcap puts it back into the cooked frame
a, b = Party("10.9.0.1", 5060, 20010, "1000"), Party("10.9.0.2", 5060, 20012, "2000")
c = Call("vlan@any", a, b)
pa, pb = tone(440, 160 * 30), tone(1000, 160 * 30)
frames = frames_of(c.setup(0.0), rtp_packets(a, b, 0.1, pa, ssrc=1), rtp_packets(b, a, 0.1, pb, ssrc=2),
                   c.bye(0.8))
np.save(f"{out}/vlan-caller.npy", callgen.expected_16k(pa))
np.save(f"{out}/vlan-callee.npy", callgen.expected_16k(pb))
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
    s.bind(("v1", 0))
    t0 = time.monotonic()
    for t, ip in frames:
        delay = t0 + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        s.send(netgen.link(1, ip, vlans=(100,)))
print("sent")
"""


@pytest.fixture
def netns():
    """A network namespace of the test's own, loopback up: ``-i any`` there sees only
    the test's traffic.  Yields a function running a command in it."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs ip(8) and root")
    ns = f"r2wns{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create network namespaces here")
    procs = []

    def run(*argv, popen=False, **kw):
        cmd = ["ip", "netns", "exec", ns, *map(str, argv)]
        if popen:
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw))
            return procs[-1]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)

    try:
        run.name = ns
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, capture_output=True)
        yield run
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _start_live_any(netns, log, *args):
    proc = netns(PY, "-m", "rtp2ws.cli", "live", "-i", "any", "--log-file", log, *args, popen=True)
    deadline = time.monotonic() + 15
    while "capturing on any" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    return proc


@needs_capture
def test_live_any_with_the_default_filter(tmp_path, netns):
    """``rtp2ws live -i any`` with the default filter, in a network namespace of its own:
    a call on loopback and a call in VLAN 100 arriving on a veth are both decoded, to
    the sample."""
    for cmd in (["link", "add", "v0", "type", "veth", "peer", "name", "v1"], ["link", "set", "v0", "up"],
                ["link", "set", "v1", "up"]):
        subprocess.run(["ip", "-n", netns.name, *cmd], check=True, capture_output=True)
    log, out = tmp_path / "live.log", tmp_path / "out"
    proc = _start_live_any(netns, log, "--sip-ports", "5060", "--rtp-ports", "20000-20100", "--out-dir", out)
    assert "capturing on any (link type 113), filter: (udp and (port 5060 or portrange 20000-20100))" \
        in log.read_text()
    sent = netns(PY, "-c", ANY_SENDER, TESTS, tmp_path)
    assert sent.returncode == 0 and sent.stdout.strip() == "sent", sent.stderr
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "2 calls, 4 legs with audio" in stdout and "0 malformed" in stdout, stdout
    doc = json.loads((out / "calls.json").read_text())
    assert sorted((c["call_id"], c["end_reason"]) for c in doc["calls"]) == [("lo@any", "bye"), ("vlan@any", "bye")]
    assert "decoder_non_ip" not in doc["summary"]
    for key in ("lo", "vlan"):
        for tag in ("caller", "callee"):
            got, rate, _ = read_wav(str(out / "calls" / f"{key}@any" / f"{tag}.wav"))
            want = np.load(tmp_path / f"{key}-{tag}.npy")
            assert rate == 16000 and np.array_equal(got, want), (key, tag)


FRAGMENT_FLOOD = r"""
import socket, struct, sys, time
n = int(sys.argv[1])
src, dst = socket.inet_aton("127.0.0.77"), socket.inet_aton("127.0.0.1")
with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
    for i in range(n):   # 8-byte UDP fragments past offset 0, round-robin over 4096 datagrams
        k = i % 4096
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, k + 1, 0x2000 | (1 + i // 4096), 64, 17, 0, src, dst)
        s.sendto(hdr + b"\xaa" * 8, ("127.0.0.1", 0))
        if i % 500 == 499:
            time.sleep(0.002)   # a burst the capture keeps up with, on a loaded machine too
print("sent")
"""

METRICS_GET = r"""
import sys, urllib.request
print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode())
"""


@needs_capture
def test_fragment_flood_is_counted_in_metrics_and_summary(tmp_path, netns):
    """12,000 8-byte fragments over 4096 datagrams, sent on loopback with a raw socket:
    past 8192 held the oldest datagrams go, and what they held is counted in
    rtp2ws_ip_fragments_dropped_total and in calls.json's summary."""
    n = 12_000
    log, out = tmp_path / "live.log", tmp_path / "out"
    # a small snap length: the kernel buffer then holds the whole flood
    proc = _start_live_any(netns, log, "--out-dir", out, "--metrics", "127.0.0.1:9188", "--snaplen", "256")
    sent = netns(PY, "-c", FRAGMENT_FLOOD, n)
    assert sent.returncode == 0 and sent.stdout.strip() == "sent", sent.stderr

    def dropped():
        r = netns(PY, "-c", METRICS_GET, 9188)
        assert r.returncode == 0, r.stderr
        m = re.search(r"^rtp2ws_ip_fragments_dropped_total (\S+)$", r.stdout, re.MULTILINE)
        return float(m.group(1)) if m else None

    deadline = time.monotonic() + 15
    value = dropped()
    while value is not None and value < n - 8192 and time.monotonic() < deadline:
        time.sleep(0.2)
        value = dropped()
    assert value is not None and value >= n - 8192, value
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    summary = json.loads((out / "calls.json").read_text())["summary"]
    assert summary["kernel_drops"] == 0 and "overflow_packets" not in summary
    assert summary["decoder_fragments"] == summary["packets"] == n
    assert n - 8192 <= summary["decoder_frag_dropped"] <= n and summary["decoder_frag_evicted"] > 0
    assert summary["decoder_frag_dropped"] >= value


# --------------------------------------------------------------------------- tcpdump's idioms

@needs_capture
@pytest.mark.parametrize("backend", BACKENDS)
def test_count_stops_after_exactly_count_packets(backend, call_factory):
    """``-c COUNT``: the runner reads COUNT packets and not one more (the C reader and its
    pypcap twin alike), decodes every one of them, ends the call with capture_end and
    returns by itself, though packets keep coming."""
    from rtp2ws.codec import g711
    from rtp2ws.codec.resample import upsample_2x
    from rtp2ws.run.live import LiveRunner

    count = 3 + 2 * 9 + 1                   # INVITE, 200, ACK; nine packets each way; one more
    cap = LiveCapture("lo", bpf=_filter(25570, 26700), backend=_backend(backend))
    runner = LiveRunner(cap, count=count)
    rec = _Recorder()
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.update(runner.run(rec, stop)), daemon=True)
    thread.start()
    try:
        call = call_factory("count@test", 25570, 26700, 26702)
        call.setup()
        call.media(0.6)                     # 30 packets each way: more than COUNT in all
        call.bye()
        thread.join(15)
        assert not thread.is_alive(), "the runner did not stop after COUNT packets"
    finally:
        stop.set()
        thread.join(10)
    assert not stop.is_set() or result["end_reason"] == "capture_end"
    assert result["packets"] == count == cap.stats()["packets"]
    assert result["end_reason"] == "capture_end"
    assert result["sip"] == 3 and result["rtp"] == count - 3
    assert rec.ended == ["capture_end"] and rec.packets == [{"caller": 10, "callee": 9}]
    for tag, n in (("caller", 10), ("callee", 9)):    # exactly the first packets' audio, to the sample
        want = upsample_2x(g711.decode_alaw(b"".join(call.payloads[tag][:n])))
        assert np.array_equal(np.concatenate(rec.audio[tag]), want), tag


def _live(*args, **kw):
    return subprocess.run([PY, "-m", "rtp2ws.cli", "live", *map(str, args)], capture_output=True, text=True,
                          timeout=60, **kw)


@needs_capture
def test_live_count_with_a_trailing_filter_and_an_interface_number(tmp_path, live_factory, call_factory):
    """``rtp2ws live -i N -c COUNT --out-dir D udp and ...``, as tcpdump is written: lo by
    its number in -D, the filter from the words at the end, and the run ends by itself
    after COUNT packets, exit status 0, with the summary and calls.json."""
    from rtp2ws.capture.live import find_interfaces

    number = [d.name for d in find_interfaces()].index("lo") + 1
    out = tmp_path / "out"
    words = _filter(25670, 26800).split()
    live = live_factory("-i", number, "-c", 25, "--out-dir", out, *words)
    live.wait_for("capturing on lo")
    assert f"filter: {' '.join(words)}" in live.stderr
    call = call_factory("count-cli@test", 25670, 26800, 26802)
    call.setup()
    call.media(0.6)
    call.bye()
    deadline = time.monotonic() + 20
    while live.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.proc.poll() is not None, "live -c did not end by itself"
    rc, stdout, stderr = live.stop()
    assert rc == 0, stderr
    assert stdout.startswith("lo: 25 packets captured, 0 dropped by the kernel"), stdout
    assert "stopped (capture_end)" in stderr
    doc = json.loads((out / "calls.json").read_text())
    assert doc["summary"]["packets"] == 25 and doc["summary"]["end_reason"] == "capture_end"
    assert [c["end_reason"] for c in doc["calls"]] == ["capture_end"]
    assert sum(leg["packets"] for leg in doc["calls"][0]["legs"]) == 22


def test_live_filter_count_and_interface_errors(tmp_path):
    r = _live("-i", "lo", "--out-dir", tmp_path, "--bpf", "udp", "udp", "port", "5060")
    assert r.returncode == 2 and "rtp2ws live: error: give the capture filter once: as --bpf 'udp' or as the " \
                                  "words at the end ('udp port 5060'), not both" in r.stderr, r.stderr
    r = _live("-i", "lo", "--out-dir", tmp_path, "-c", "10", "--workers", "2")
    assert r.returncode == 2 and r.stderr.strip() == (
        "rtp2ws: error: -c/--count stops one capture after COUNT packets: it runs in one process, not with "
        "--workers 2"), r.stderr
    r = _live("-i", "4242", "--out-dir", tmp_path)
    assert r.returncode == 2 and "rtp2ws: error: -i 4242: there is no interface number 4242; `rtp2ws live -D` " \
                                  "lists" in r.stderr, r.stderr
    for bad in ("0", "-1", "x"):
        r = _live("-i", "lo", "--out-dir", tmp_path, "-c", bad)
        assert r.returncode == 2 and "argument -c/--count: use a whole number from 1 to" in r.stderr, r.stderr


def test_tcpdump_option_letters_are_aliases(tmp_path):
    """-Z is --user, -c --count, -D --list-interfaces, -r replay's capture; a --config
    file's bpf gives way to the words at the end of the command line."""
    from rtp2ws import cli

    parser = cli.build_parser()
    args = parser.parse_args(["live", "-i", "lo", "-Z", "nobody", "-c", "7", "--out-dir", "o", "udp", "port", "9"])
    assert (args.user, args.count, args.expression) == ("nobody", 7, ["udp", "port", "9"])
    assert parser.parse_args(["live", "-D"]).list_interfaces
    conf = tmp_path / "c.toml"
    conf.write_text('interface = "lo"\nout_dir = "o"\nbpf = "tcp"\nuser = "daemon"\n')
    from rtp2ws.tomlconfig import apply_config

    argv = ["live", "--config", str(conf), "udp", "port", "9"]
    args = apply_config(parser.live_parser, str(conf), argv, parse=parser.parse_args)
    cli._filter_argument(parser.live_parser, args, None)
    assert args.bpf == "udp port 9" and args.user == "daemon"


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
def test_list_interfaces_as_tcpdump_lists_them(netns):
    """``rtp2ws live -D`` prints what ``tcpdump -D`` prints (numbers, descriptions,
    flags), here in a namespace of the test's own with a veth pair (one end down), so
    that nothing else changes the list between the two."""
    for cmd in (["link", "add", "r2w0", "type", "veth", "peer", "name", "r2w1"], ["link", "set", "r2w0", "up"]):
        subprocess.run(["ip", "-n", netns.name, *cmd], check=True, capture_output=True)
    ours = netns(PY, "-m", "rtp2ws.cli", "live", "-D")
    theirs = netns("tcpdump", "-D")
    assert ours.returncode == 0 and theirs.returncode == 0, ours.stderr + theirs.stderr
    assert ours.stdout == theirs.stdout
    lines = ours.stdout.splitlines()
    assert any(re.fullmatch(r"\d+\.lo \[Up, Running, Loopback\]", line) for line in lines), lines
    assert any(line.split(".", 1)[1].startswith("r2w0 ") for line in lines), lines


@needs_capture
def test_live_publishes_to_nats_beside_the_wavs(tmp_path, live_factory, call_factory, nats_server):
    """``live --nats-url`` with ``--out-dir`` and two workers: what rtp2ws consume
    rebuilds from JetStream is the WAVs byte for byte, and the supervisor's summary line
    says what the workers published, summed, once."""
    import subprocess
    import sys

    out = tmp_path / "out"
    live = live_factory("-i", "lo", "--bpf", _filter(25090, 26100), "--out-dir", out, "--nats-url", nats_server.url,
                        "--workers", "2")
    live.wait_for("capturing on lo")
    call = call_factory("live-nats@test", 25090, 26100, 26102)
    call.setup()
    call.media(1.0)
    call.bye()
    time.sleep(1.0)
    rc, stdout, stderr = live.stop()
    assert rc == 0, stderr
    # the summary on stdout, and in the supervisor's log ("stopped ..."): no worker's own
    assert stdout.count("to NATS") == 1 and stderr.count("to NATS") == 1, (stdout, stderr)
    assert re.search(r"; published 2 streams to NATS \(\d+ messages acknowledged.*0 ms undelivered$",
                     stdout.strip()), stdout
    got = tmp_path / "got"
    r = subprocess.run([sys.executable, "-m", "rtp2ws.cli", "consume", "--nats-url", nats_server.url, "--out-dir",
                        str(got), "--exit-idle", "2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    want = {p.relative_to(out / "calls"): p.read_bytes() for p in (out / "calls").rglob("*.wav")}
    assert {p.relative_to(got): p.read_bytes() for p in got.rglob("*.wav")} == want and len(want) == 2
