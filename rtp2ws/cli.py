"""Command line: ``rtp2ws replay CAPTURE --out-dir DIR``."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .pipeline import Config
from .replay import Progress, ReplayError, replay
from .wavout import WavSink


def _positive_ms(text: str) -> float:
    v = float(text)
    if v < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rtp2ws", description="Mirrored SIP/RTP traffic in, per-call 16 kHz audio out.")
    p.add_argument("--version", action="version", version=f"rtp2ws {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("replay", help="decode every call in a pcap/pcapng file")
    r.add_argument("capture", help="pcap or pcapng file")
    r.add_argument("--out-dir", required=True, help="directory for WAV files and calls.json")
    r.add_argument("--stereo", action="store_true", help="also write one stereo WAV per call (caller left, callee right)")
    r.add_argument("--jitter-ms", type=_positive_ms, default=60.0, help="jitter buffer depth in ms (default 60)")
    r.add_argument("--rtp-timeout", type=float, default=300.0,
                   help="end a call after this many seconds without SIP or RTP (default 300)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    _add_sink_parser(sub)
    return p


def _add_sink_parser(sub) -> None:
    s = sub.add_parser("sink", help="reference analysis server: receive streams, write one WAV per stream")
    s.add_argument("--listen", default="127.0.0.1:8765",
                   help="host:port to listen on, port 0 for any free port (default 127.0.0.1:8765)")
    s.add_argument("--out-dir", required=True, help="directory for WAV files, streams.jsonl and messages.jsonl")
    tok = s.add_mutually_exclusive_group()
    tok.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (also $RTP2WS_SINK_TOKEN)")
    tok.add_argument("--token-file", help="read the token from this file")
    s.add_argument("--cert", help="TLS certificate chain (PEM): serve wss://")
    s.add_argument("--key", help="TLS private key (PEM), if not in --cert")
    s.add_argument("--ping-interval", type=float, default=20.0, help="seconds between keepalive pings, 0 for none")
    s.add_argument("--ping-timeout", type=float, default=20.0, help="seconds to wait for a pong, 0 for no limit")
    s.add_argument("--max-size", type=int, default=2 ** 20, help="largest message in bytes (default 1 MiB)")


def cmd_sink(args) -> int:
    from .sinkserver import run_sink

    return run_sink(args)


def cmd_replay(args) -> int:
    config = Config(jitter_depth=args.jitter_ms / 1000.0, rtp_timeout=args.rtp_timeout)
    sink = WavSink(args.out_dir, stereo=args.stereo)
    progress = Progress(enabled=False) if args.no_progress else Progress()
    try:
        result = replay(args.capture, sink, config, progress)
    except ReplayError as e:
        print(f"rtp2ws: error: {e}", file=sys.stderr)
        return 2
    sink.close(result.summary())
    print(result.line())
    if result.error:
        print(f"rtp2ws: error: {result.error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "replay":
        return cmd_replay(args)
    if args.command == "sink":
        return cmd_sink(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
