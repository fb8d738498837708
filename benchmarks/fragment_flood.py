"""IP fragment reassembly under hostile input: memory and time.

    python benchmarks/fragment_flood.py [--flood 100000] [--repeat 3]

* flood: ``--flood`` 8-byte IPv4 fragments (MF set, round-robin over 4096
  datagrams that keep growing, none completing), fed to ``PacketDecoder.decode``
  within the 30 s expiry; prints the time per fragment, the tracemalloc peak
  (frames excluded) and what is held when it ends.
* one 65535-byte datagram cut into 8-byte fragments (IPv4 and IPv6), fed in
  order, in reverse, shuffled, and every other one first then the holes;
  prints the time per datagram and per fragment (best of ``--repeat``).

Numbers only; no assertion (tests/net/test_packet.py bounds the structures).
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from rtp2ws.bench.netgen import udp  # noqa: E402
from rtp2ws.net.packet import DLT_RAW, PacketDecoder  # noqa: E402

from netgen import fragment  # noqa: E402

_HDR = struct.Struct("!BBHHHBBH4s4s")


def flood_frames(n: int, keys: int = 4096):
    """``n`` 8-byte IPv4 fragments with MF set, round-robin over ``keys``
    datagrams (identification values), each at the next free offset past 0:
    none ever completes, and each datagram collects up to 8190 fragments."""
    src, dst = bytes((198, 51, 100, 1)), bytes((192, 0, 2, 1))
    for i in range(n):
        offset = 1 + (i // keys) % 8190
        yield _HDR.pack(0x45, 0, 28, i % keys, 0x2000 | offset, 64, 17, 0, src, dst) + b"\xaa" * 8


def flood(n: int) -> None:
    """Once timed, once under tracemalloc (which slows allocation several times)."""
    frames = list(flood_frames(n))
    d = PacketDecoder(DLT_RAW)
    t0 = time.perf_counter()
    for k, frame in enumerate(frames):
        d.decode(frame, k * (20.0 / n))        # all within the 30 s expiry
    elapsed = time.perf_counter() - t0
    d = PacketDecoder(DLT_RAW)
    tracemalloc.start()
    for k, frame in enumerate(frames):
        d.decode(frame, k * (20.0 / n))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    held = {k: v for k, v in d.stats.items() if k.startswith("frag")}
    print(f"flood: {n} fragments of 8 bytes: tracemalloc peak {peak / 1e6:.1f} MB, "
          f"{d.pending_fragments} buffers held, {elapsed:.2f} s ({elapsed / n * 1e6:.2f} us/fragment); {held}")


def orders(frags: list[bytes]) -> dict[str, list[bytes]]:
    rnd = random.Random(1)
    shuffled = list(frags)
    rnd.shuffle(shuffled)
    return {"in order": frags, "reverse": frags[::-1], "shuffled": shuffled,
            "odd then even": frags[1::2] + frags[0::2]}


def datagram(repeat: int) -> None:
    for fam, src, dst, size in (("IPv4", "192.0.2.1", "198.51.100.2", 65507),
                                ("IPv6", "2001:db8::1", "2001:db8::2", 65527)):
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        frags = fragment(udp(src, 5060, dst, 5060, payload), 28 if fam == "IPv4" else 56)
        for name, order in orders(frags).items():
            best = float("inf")
            for _ in range(repeat):
                d = PacketDecoder(DLT_RAW, max_frag_buffers=4)
                t0 = time.perf_counter()
                out = [d.decode(f, 0.0) for f in order]
                best = min(best, time.perf_counter() - t0)
                done = [p for p in out if p is not None]
                assert len(done) == 1 and done[0].payload == payload, (fam, name, d.stats)
            print(f"{fam} {size}-byte datagram in {len(frags)} fragments, {name:13}: {best * 1e3:8.1f} ms "
                  f"({best / len(frags) * 1e6:.2f} us/fragment)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flood", type=int, default=100_000, help="fragments in the flood (default 100000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per datagram order; the best is shown")
    a = ap.parse_args(argv)
    flood(a.flood)
    datagram(a.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
