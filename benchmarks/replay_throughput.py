"""How many concurrent calls one core carries through ``replay`` to WAV files.

    python benchmarks/replay_throughput.py [--calls 200] [--seconds 30] [--loss 0.01]

Generates a pcap of N concurrent G.711 calls (INVITE/200/ACK/BYE with SDP, both
legs, 20 ms packets, tone payload), replays it in this process, and prints
calls per core = N x call seconds / CPU seconds (user + sys) spent in replay.
Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import callgen  # noqa: E402
import netgen  # noqa: E402
from callgen import Call, Party  # noqa: E402
from rtp2ws import g711  # noqa: E402
from rtp2ws.pipeline import Config  # noqa: E402
from rtp2ws.replay import replay  # noqa: E402
from rtp2ws.rtp import RtpPacket, serialize_rtp  # noqa: E402
from rtp2ws.wavout import WavSink  # noqa: E402


def make_capture(path: str, calls: int, seconds: float, loss: float, seed: int = 1) -> int:
    rnd = np.random.default_rng(seed)
    frames = []
    payload = g711.encode_alaw(callgen.tone(440, 160))
    for i in range(calls):
        a = Party(f"10.1.{i // 250}.{i % 250 + 1}", 5060, 20000 + 2 * (i % 5000), f"1{i:04d}")
        b = Party("10.2.0.1", 5060, 30000 + 2 * i, f"2{i:04d}")
        c = Call(f"bench-{i}@rtp2ws", a, b)
        t0 = 1000.0 + i * 0.013
        frames += c.setup(t0)
        n = int(seconds * 50)
        for src, dst, ssrc in ((a, b, 0x10000 + i), (b, a, 0x20000 + i)):
            head = netgen.udp(src.ip, src.rtp_port, dst.ip, dst.rtp_port, serialize_rtp(RtpPacket(0, 0, ssrc, 8, False, payload)))
            keep = rnd.random(n) >= loss
            hl = len(head) - 172
            for k in range(n):
                if keep[k]:
                    rtp = serialize_rtp(RtpPacket(k & 0xFFFF, k * 160, ssrc, 8, k == 0, payload))
                    frames.append((t0 + 0.1 + k * 0.02, head[:hl] + rtp))
        frames += c.bye(t0 + 0.1 + seconds + 0.05)
    frames.sort(key=lambda f: f[0])
    netgen.write_pcap(path, [(t, netgen.link(1, ip)) for t, ip in frames], 1)
    return len(frames)


def _replay_ws(cap: str, tmp: str, frame_ms: int):
    """Replay into ``rtp2ws sink`` running in a separate process (its CPU is not counted)."""
    import argparse as _ap
    import subprocess

    from rtp2ws.replay import Progress
    from rtp2ws.streaming import replay_to_websocket

    sink = subprocess.Popen([sys.executable, "-m", "rtp2ws.cli", "sink", "--listen", "127.0.0.1:0",
                             "--out-dir", os.path.join(tmp, "recv")], stdout=subprocess.PIPE, text=True)
    try:
        url = sink.stdout.readline().split()[-1]
        args = _ap.Namespace(ws_url=url + "/", header=[], header_env=[], header_file=[], ca_file=None,
                             max_buffer_ms=10000, resend_ms=1000, frame_ms=frame_ms, stereo=False,
                             sip_header=[], speed=None, capture=cap)
        return replay_to_websocket(args, Config(), None, Progress(enabled=False))
    finally:
        sink.terminate()
        sink.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--ws", action="store_true",
                    help="stream to an rtp2ws sink in another process instead of writing WAV files")
    ap.add_argument("--frame-ms", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cap = os.path.join(tmp, "bench.pcap")
        t = time.monotonic()
        n = make_capture(cap, args.calls, args.seconds, args.loss)
        print(f"generated {n} packets ({os.path.getsize(cap) / 1e6:.1f} MB) in {time.monotonic() - t:.1f} s")
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        w0 = time.monotonic()
        if args.ws:
            result, sent = _replay_ws(cap, tmp, args.frame_ms)
            print(f"streamed: {sent['streams']} streams, {sent['sent_frames']} frames, "
                  f"{sent['dropped_ms']} ms dropped, {sent['reconnects']} reconnects")
        else:
            sink = WavSink(os.path.join(tmp, "out"))
            result = replay(cap, sink, Config())
            sink.close(result.summary())
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - w0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    audio = args.calls * args.seconds
    print(f"replay: {result.packets} packets, {result.calls} calls, {cpu:.2f} s CPU, {wall:.2f} s wall")
    print(f"  {result.packets / cpu / 1000:.1f} k packets per CPU second, {cpu / result.packets * 1e6:.1f} us per packet")
    print(f"  calls per core (capture -> {'WebSocket' if args.ws else 'WAV'}): {audio / cpu:.0f}")
    print(f"  peak RSS {r1.ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
