"""What the acknowledgement pings cost: CPU of the sender, with and without them.

    python benchmarks/ack_pings.py [--streams 200] [--seconds 5] [--rounds 2] [--resend-ms 1000]

Streams N connections to the benchmark's discard sink (its own process, which answers
pings) at realtime, as live capture does: a 20 ms frame per stream every 20 ms.  Each
round runs once as rtp2ws does (a ping written after every max(resend_ms / 2, 500 ms)
of unacknowledged audio, its pong read back) and once with the pings switched off, and
prints the CPU time this process took per stream and second of audio.  Speed is
measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from rtp2ws.bench.discard import SinkProcess
from rtp2ws.ws.bridge import new_event_loop
from rtp2ws.ws.sender import Sender, SenderConfig, raise_fd_limit

FRAME = b"\x01\x00" * 320                 # 20 ms at 16 kHz


def start_msg(i: int) -> dict:
    return {"type": "start", "call_id": f"bench-{i}", "tag": "caller", "frame_ms": 20}


async def one_run(url: str, streams: int, seconds: float, resend_ms: int, pings: bool) -> dict:
    sender = Sender(SenderConfig(url=url, resend_ms=resend_ms))
    opened = [sender.open_stream(f"s{i}", start_msg(i)) for i in range(streams)]
    if not pings:
        for st in opened:
            st.outbox.ping_every = 1 << 62
    while not all(st.connected for st in opened):
        await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    ticks = int(seconds * 50)
    cpu0, t0 = time.process_time(), loop.time()
    peak = 0
    for k in range(ticks):
        for st in opened:
            st.send_audio(FRAME)
        if k % 10 == 9:
            peak = max(peak, max(st.retained_samples for st in opened))
        delay = t0 + (k + 1) * 0.020 - loop.time()
        await asyncio.sleep(max(0.0, delay))
    cpu = time.process_time() - cpu0
    acknowledged = sum(st.acknowledged for st in opened)
    for st in opened:
        st.end({"type": "end", "reason": "bench"})
    await sender.drain(30)
    stats = sender.stats
    await sender.close()
    return {"cpu_us_per_stream_s": 1e6 * cpu / (streams * seconds), "acknowledged_s": acknowledged / 16000,
            "peak_retained_ms": peak // 16, "undelivered_ms": stats["undelivered_ms"],
            "given_up": stats["given_up"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--resend-ms", type=int, default=1000)
    args = p.parse_args()
    raise_fd_limit(4 * args.streams + 256)
    sink = SinkProcess("discard")
    try:
        for r in range(args.rounds):
            for pings in (True, False):
                loop = new_event_loop()
                try:
                    res = loop.run_until_complete(one_run(sink.url, args.streams, args.seconds, args.resend_ms,
                                                          pings))
                finally:
                    loop.close()
                print(f"round {r + 1}, pings {'on ' if pings else 'off'}: "
                      f"{res['cpu_us_per_stream_s']:.0f} µs CPU per stream-second, "
                      f"acknowledged {res['acknowledged_s']:.0f} s of audio, "
                      f"peak resend window {res['peak_retained_ms']} ms, "
                      f"undelivered {res['undelivered_ms']} ms, given up {res['given_up']}", flush=True)
    finally:
        stats = sink.stop()
    if stats:
        print(f"discard sink: {stats}")


if __name__ == "__main__":
    main()
