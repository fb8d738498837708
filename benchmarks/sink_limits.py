"""What the sink's input limits cost: the nesting check before ``json.loads``, and the memory kept
per stream without a connection.

    python benchmarks/sink_limits.py [--streams N]

Prints, for 1 MiB text messages built to be worst cases for the check, the time of
``sinkserver.json_depth`` next to ``json.loads`` itself; then the memory (tracemalloc)
held by a ``StreamStore`` after N streams started and ended, per stream, with the
identifiers rtp2ws sends (32 hex digits, a SIP Call-ID) and with the largest accepted
(``MAX_ID_CHARS``). A few seconds in all. Speed is measured here, never asserted in tests.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from rtp2ws.sinkserver import server as sinkserver  # noqa: E402
from rtp2ws.sinkserver.server import StreamStore  # noqa: E402
from rtp2ws.sinkserver.session import MAX_ID_CHARS, json_depth  # noqa: E402

MIB = 2 ** 20


def best_of(f, repeat=5):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def texts():
    end = {"type": "end", "call_id": "c", "tag": "caller", "stream_id": "s", "reason": "bye", "samples": 0,
           "dropped_ms": 0, "reconnects": 0,
           "dtmf": [{"digit": "5", "duration_ms": 120, "start": "2024-01-01T00:00:00.000+00:00", "offset": i}
                    for i in range(11000)]}
    yield "end with 11000 DTMF entries", json.dumps(end)
    yield "[ x 1 MiB (refused)", "[" * MIB
    yield "depth 32 nests, repeated", ("[" * 32 + "]" * 32) * (MIB // 64)
    yield "strings of \\\" and brackets", json.dumps(["\\\"[{" * 8] * (MIB // 50))
    yield "quotes after backslashes", "[" + '"\\\\\\"",' * (MIB // 8) + "0]"


def bench_depth():
    print("nesting check before json.loads (best of 5):")
    print(f"  {'message':32} {'MiB':>5} {'json_depth':>11} {'json.loads':>11}")
    for name, text in texts():
        raw = text.encode()
        t_depth = best_of(lambda: json_depth(raw))

        def parse():
            try:
                json.loads(text)
            except (ValueError, RecursionError):
                pass

        t_loads = best_of(parse)
        print(f"  {name:32} {len(raw) / MIB:5.2f} {t_depth * 1e3:8.1f} ms {t_loads * 1e3:8.1f} ms")


def bench_memory(n):
    print(f"memory kept by StreamStore after {n} streams started and ended (tracemalloc):")
    for label, sid_of, call_of in (
            ("rtp2ws ids (uuid hex, Call-ID)", lambda i: f"{i:032x}", lambda i: f"{i:08x}-4f2c@10.0.0.1"),
            (f"largest ids ({MAX_ID_CHARS} chars)", lambda i: f"{i:032x}".ljust(MAX_ID_CHARS, "s"),
             lambda i: f"{i:08x}".ljust(MAX_ID_CHARS, "c"))):
        with tempfile.TemporaryDirectory() as d:
            store = StreamStore(d, max_idle=n)
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for i in range(n):
                start = {"stream_id": sid_of(i), "call_id": call_of(i), "tag": "caller", "channels": 1}
                s, _ = store.attach(start, 0.0)
                store.write(s, 0, b"\0\0" * 320)
                store.finish(s, {"type": "end"}, 0.0)
                store.detach(s)
            held = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            kept = len(store.idle_open) + len(store.idle_ended)
            store.close()
        print(f"  {label:34} {kept} kept, {held / 1e6:6.1f} MB, {held / kept:6.0f} bytes a stream")
    print(f"  bound: MAX_IDLE_STREAMS = {sinkserver.MAX_IDLE_STREAMS}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=1000, help="streams for the memory measurement (default 1000)")
    args = p.parse_args()
    bench_depth()
    bench_memory(args.streams)


if __name__ == "__main__":
    main()
