"""Command line: ``rtp2ws replay`` (a capture to WAV files and/or WebSocket
streams) and ``rtp2ws sink`` (the reference analysis server)."""

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
    r.add_argument("--out-dir", help="directory for WAV files and calls.json")
    r.add_argument("--stereo", action="store_true",
                   help="stereo per call (caller left, callee right): an extra WAV, or one stream per call")
    r.add_argument("--jitter-ms", type=_positive_ms, default=60.0, help="jitter buffer depth in ms (default 60)")
    r.add_argument("--rtp-timeout", type=float, default=300.0,
                   help="end a call after this many seconds without SIP or RTP (default 300)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    r.add_argument("--speed", type=_speed, default=None,
                   help="'realtime' (paced by capture timestamps), a factor such as 4, or 'max' "
                        "(default: max)")
    _add_stream_options(r)
    _add_sink_parser(sub)
    return p


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    if text == "realtime":
        return 1.0
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("use realtime, max or a positive factor such as 4") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("the speed factor must be positive")
    return v


def _frame_ms(text: str) -> int:
    from .protocol import validate_frame_ms

    try:
        return validate_frame_ms(int(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_stream_options(p) -> None:
    g = p.add_argument_group("streaming to an analysis server")
    g.add_argument("--ws-url", help="ws:// or wss:// URL: stream every call leg there, one connection per leg")
    g.add_argument("--frame-ms", type=_frame_ms, default=20, help="audio per binary message: 20..1000, step 20")
    g.add_argument("--max-buffer-ms", type=int, default=10000,
                   help="audio queued per connection before the oldest is dropped (default 10000)")
    g.add_argument("--resend-ms", type=int, default=1000,
                   help="sent audio repeated after a reconnect, in case it was lost (default 1000)")
    g.add_argument("--sip-header", action="append", default=[], metavar="NAME",
                   help="copy this INVITE header into the start message (repeatable)")
    g.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="extra HTTP header on the WebSocket handshake (repeatable)")
    g.add_argument("--header-env", action="append", default=[], metavar="VAR",
                   help="environment variable holding 'NAME: VALUE' (keeps secrets off the command line)")
    g.add_argument("--header-file", action="append", default=[], metavar="FILE",
                   help="file with one 'NAME: VALUE' per line")
    g.add_argument("--ca-file", help="CA certificate(s) to verify a wss:// server with")


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
    if not args.out_dir and not args.ws_url:
        print("rtp2ws: error: replay needs --out-dir, --ws-url or both", file=sys.stderr)
        return 2
    config = Config(jitter_depth=args.jitter_ms / 1000.0, rtp_timeout=args.rtp_timeout)
    wav = WavSink(args.out_dir, stereo=args.stereo) if args.out_dir else None
    progress = Progress(enabled=False) if args.no_progress else Progress()
    try:
        if args.ws_url:
            from .streaming import replay_to_websocket

            result, sent = replay_to_websocket(args, config, wav, progress)
        else:
            result, sent = replay(args.capture, wav, config, progress), None
    except ReplayError as e:
        print(f"rtp2ws: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:   # bad header lines, unusable URL or CA file
        print(f"rtp2ws: error: {e}", file=sys.stderr)
        return 2
    summary = result.summary()
    if sent is not None:
        summary["streams"] = sent
    if wav is not None:
        wav.close(summary)
    line = result.line()
    if sent is not None:
        line += (f"; streamed {sent['streams']} streams, {sent['reconnects']} reconnects, "
                 f"{sent['dropped_ms']} ms dropped")
    print(line)
    if result.error:
        print(f"rtp2ws: error: {result.error}", file=sys.stderr)
        return 1
    if sent is not None and (sent.get("refused") or sent.get("given_up")):
        print(f"rtp2ws: error: {sent.get('refused', 0)} streams refused by the server, "
              f"{sent.get('given_up', 0)} given up (see the log above)", file=sys.stderr)
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
