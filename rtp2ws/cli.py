"""Command line: ``rtp2ws replay`` (a capture to WAV files and/or WebSocket
streams), ``rtp2ws live`` (an interface, likewise, until stopped) and
``rtp2ws sink`` (the reference analysis server); ``rtp2ws bench`` measures
how many concurrent calls one core carries (see ``rtp2ws.bench.harness``).

The only module that sees the parsed arguments: it turns them into the typed
configurations (``pipeline_config``, ``sender_config``, ``live_options``) the
commands run with."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from . import __version__
from .argtypes import number, one_of, whole
from .pipeline.pipeline import FLUSH_MS, Config
from .pipeline.sink import Sink
from .run import gcpolicy
from .run.logs import FORMATS as LOG_FORMATS
from .run.logs import LEVELS
from .run.replay import Progress, ReplayError, ReplayResult, replay
from .run.workerlink import WORKER_ENV
from .sinks.wav import WavSink
from .ws.formats import DEFAULT as DEFAULT_WS_FORMAT
from .ws.formats import FORMATS as WS_FORMATS

if TYPE_CHECKING:
    from .run.live import LiveOptions
    from .ws.sender import SenderConfig


# Ranges of the options the pipeline reads (argtypes: nan and infinities are refused too).
JITTER_MS = number(0, 2000, unit="ms")
RTP_TIMEOUT = number(1, 86400, unit="s")
COUNT = whole(1, 10 ** 12)


class Parser(argparse.ArgumentParser):
    """rtp2ws's parser, which keeps the subcommands' parsers: ``live --config`` reads the
    options ``live`` defines (``tomlconfig.apply_config``), and each reports its own
    errors found after parsing (``-r`` or a capture, ``--bpf`` or an expression)."""

    live_parser: argparse.ArgumentParser
    replay_parser: argparse.ArgumentParser


def build_parser() -> Parser:
    p = Parser(prog="rtp2ws", description="Mirrored SIP/RTP traffic in, per-call audio out (16 kHz L16 by default).")
    p.add_argument("--version", action=_Version, help="show the version and the backend each part with a C "
                                                        "twin runs on (native, or its numpy/python twin), and exit")
    sub = p.add_subparsers(dest="command", required=True, parser_class=argparse.ArgumentParser)
    r = sub.add_parser("replay", help="decode every call in a pcap/pcapng file")
    p.replay_parser = r
    r.add_argument("capture", nargs="?", help="pcap or pcapng file (or -r FILE)")
    r.add_argument("-r", dest="read_file", metavar="FILE", help="pcap or pcapng file, as tcpdump -r reads it")
    r.add_argument("-c", "--count", type=COUNT, metavar="COUNT",
                   help="stop after COUNT packets, 1..10^12, as if the file ended there (like tcpdump -c)")
    r.add_argument("--out-dir", help="directory for calls.json and calls/<call>/ with a WAV per leg")
    _add_audio_options(r)
    r.add_argument("--jitter-ms", type=JITTER_MS, default=60.0,
                   help="jitter buffer depth in ms, 0..2000 (default 60)")
    r.add_argument("--rtp-timeout", type=RTP_TIMEOUT, default=300.0,
                   help="end a call after this many seconds without SIP or RTP, 1..86400 (default 300)")
    r.add_argument("--srtp-keylog", metavar="FILE", help=SRTP_KEYLOG_HELP)
    r.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    r.add_argument("--speed", type=_speed, default=None,
                   help="'realtime' (paced by capture timestamps), a factor such as 4, or 'max' "
                        "(default: max)")
    _add_log_options(r, None, "default: warning; info adds a line per call start and end")
    _add_stream_options(r)
    _add_nats_options(r)
    _add_worker_options(r, "default: the cores available when paced (--speed other than max) and streaming; "
                           "else 1")
    p.live_parser = _add_live_parser(sub)
    _add_sink_parser(sub)
    _add_consume_parser(sub)
    _add_bench_parser(sub)
    return p


def version_line() -> str:
    """``rtp2ws 0.1.0 (g711: native, resample: native, fastpath: native, wsframe: native, outbox: native)``"""
    from .speedups import in_use

    return f"rtp2ws {__version__} ({', '.join(f'{part}: {backend}' for part, backend in in_use().items())})"


class _Version(argparse.Action):
    """``--version``, like argparse's own, with the backends looked up only when asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit()


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    if text == "realtime":
        return 1.0
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("use realtime, max or a positive factor such as 4") from None
    if not 0 < v <= 1000:       # also refuses nan and inf
        raise argparse.ArgumentTypeError("the speed factor must be more than 0 and at most 1000")
    return v


def _frame_ms(text: str) -> int:
    from .ws.protocol import validate_frame_ms

    try:
        return validate_frame_ms(int(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_audio_options(p) -> None:
    from .codec.audioformat import ENCODINGS, MIXES, RATES

    p.add_argument("--rate", type=one_of(RATES), default=16000, metavar="{" + ",".join(map(str, RATES)) + "}",
                   help="output sample rate of every stream and WAV: 8000 (G.711's own, no filter), 16000 "
                        "(default), 24000 or 48000 (3x, 6x interpolation)")
    p.add_argument("--encoding", choices=ENCODINGS, default="l16",
                   help="output samples: l16 (16-bit little-endian PCM, default), mulaw or alaw (G.711, 8 bits)")
    p.add_argument("--mix", choices=MIXES, default=None,
                   help="per-leg (default): a stream/WAV per leg; stereo: one stream per call, caller left, "
                        "callee right (WAV: an extra stereo.wav); mixed: the same, both legs summed into one "
                        "channel (WAV: an extra mixed.wav)")
    p.add_argument("--stereo", action="store_true", help="the same as --mix stereo")


def audio_format(args):
    """The AudioFormat of ``--rate``, ``--encoding``, ``--mix`` (``--stereo``: ``--mix
    stereo``); ValueError when --stereo and --mix say different things."""
    from .codec.audioformat import AudioFormat

    mix = args.mix
    if args.stereo:
        if mix not in (None, "stereo"):
            raise ValueError(f"--stereo is --mix stereo: it contradicts --mix {mix}")
        mix = "stereo"
    return AudioFormat(args.rate, args.encoding, mix or "per-leg")


def _account_sid(text: str) -> str:
    from .ws.twilio import check_account_sid

    return check_account_sid(text)


def _add_stream_options(p) -> None:
    g = p.add_argument_group("streaming to an analysis server")
    g.add_argument("--ws-url", help="ws:// or wss:// URL: stream every call leg there, one connection per leg")
    g.add_argument("--ws-format", choices=WS_FORMATS, default=DEFAULT_WS_FORMAT,
                   help="what goes on the wire (docs/protocol.md): rtp2ws (default); seed: the same messages "
                        "with a tag per stream, <call>-<leg>, for a server that names its files by tag; vonage: "
                        "the Vonage Voice API WebSocket protocol (20 ms frames, mono); audiofork: mod_audio_fork "
                        "(subprotocol audio.drachtio.org); jambonz: jambonz listen (audio.jambonz.org); twilio: "
                        "Twilio Media Streams (one connection per call, caller inbound and callee outbound tracks, "
                        "base64 µ-law 8 kHz in JSON); audiohook: a "
                        "Genesys AudioHook v2 client, one session per call, PCMU 8 kHz (X-API-KEY and "
                        "Audiohook-Organization-Id through --header)")
    g.add_argument("--twilio-account-sid", type=_arg(_account_sid), default=None, metavar="AC...",
                   help="the accountSid of --ws-format twilio's start and stop messages (default AC and 32 zeros)")
    g.add_argument("--frame-ms", type=_frame_ms, default=20, help="audio per binary message: 20..1000, step 20")
    g.add_argument("--flush-ms", type=whole(0, 1000), default=FLUSH_MS,
                   help=f"when paced (live, --speed realtime): hand audio to the connections at most every "
                        f"this many ms (default {FLUSH_MS}), so each gets one write of whole frames per "
                        f"flush instead of one per packet; a frame waits up to this long. 0: at once")
    g.add_argument("--max-buffer-ms", type=whole(20, 600000), default=10000,
                   help="audio queued per connection before the oldest is dropped, 20..600000 (default 10000)")
    g.add_argument("--resend-ms", type=whole(0, 60000), default=1000,
                   help="sent audio kept until the server acknowledges it, repeated after a reconnect, "
                        "0..60000 (default 1000)")
    g.add_argument("--max-connecting", type=whole(1, 10000), default=64, metavar="N",
                   help="WebSocket opening handshakes in flight at once (default 64): thousands of calls "
                        "connect a batch at a time, their audio queued meanwhile")
    g.add_argument("--sip-header", action="append", default=[], metavar="NAME",
                   help="copy this INVITE header into the start message (repeatable)")
    g.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="extra HTTP header on the WebSocket handshake (repeatable)")
    g.add_argument("--header-env", action="append", default=[], metavar="VAR",
                   help="environment variable holding 'NAME: VALUE' (keeps secrets off the command line)")
    g.add_argument("--header-file", action="append", default=[], metavar="FILE",
                   help="file with one 'NAME: VALUE' per line")
    g.add_argument("--ca-file", help="CA certificate(s) to verify a wss:// server with")


def _add_nats_options(p) -> None:
    from .broker import subjects

    g = p.add_argument_group("publishing to NATS JetStream (docs/nats.md; --max-buffer-ms, --frame-ms, "
                             "--sip-header apply too)")
    g.add_argument("--nats-url", metavar="nats://HOST:PORT",
                   help="publish every stream to NATS JetStream there (several servers: comma-separated), "
                        "beside or instead of --ws-url and --out-dir")
    g.add_argument("--nats-stream", type=_arg(subjects.check_stream_name), default=subjects.DEFAULT_STREAM,
                   metavar="NAME", help=f"the JetStream stream, created if missing (default {subjects.DEFAULT_STREAM})")
    g.add_argument("--nats-prefix", type=_arg(subjects.check_prefix), default=subjects.DEFAULT_PREFIX,
                   metavar="PREFIX", help=f"subjects PREFIX.audio.<call>.<leg> and PREFIX.calls "
                                          f"(default {subjects.DEFAULT_PREFIX})")
    g.add_argument("--nats-retention", choices=("limits", "interest"), default="limits",
                   help="a created stream's retention: limits (default: kept until --nats-max-age or "
                        "--nats-max-bytes) or interest (kept until every consumer took it)")
    g.add_argument("--nats-storage", choices=("file", "memory"), default="file",
                   help="a created stream's storage (default file)")
    g.add_argument("--nats-max-age", type=number(1, 10 ** 8, unit="s"), default=86400.0, metavar="SECONDS",
                   help="a created stream keeps messages this long (default 86400)")
    g.add_argument("--nats-max-bytes", type=whole(1 << 20, 1 << 50), default=1 << 30, metavar="BYTES",
                   help="a created stream keeps at most this much, the oldest going first (default 1 GiB)")
    g.add_argument("--nats-replicas", type=whole(1, 5), default=1, metavar="N",
                   help="a created stream's replicas, 1..5 (3 on a cluster of three, deploy/nats/)")
    g.add_argument("--nats-duplicate-window", type=number(10, 86400, unit="s"), default=120.0, metavar="SECONDS",
                   help="a created stream drops a message whose id it stored this recently: what a "
                        "reconnect publishes again (default 120)")
    g.add_argument("--nats-chunk-ms", type=whole(0, 1000), default=100, metavar="MS",
                   help="each stream's audio is published this often, as one message (default 100)")
    g.add_argument("--nats-ack-timeout", type=number(0.1, 60, unit="s"), default=5.0, metavar="SECONDS",
                   help="a message not acknowledged this long is published again, with its id (default 5)")
    g.add_argument("--nats-max-inflight", type=whole(16, 1 << 20), default=1024, metavar="N",
                   help="messages published and not yet acknowledged, over all streams (default 1024); "
                        "beyond, the streams' queues hold the audio")


def _add_log_options(p, level: str | None, default: str) -> None:
    p.add_argument("--log-level", choices=LEVELS, default=level,
                   help=f"log messages of this level and above ({default})")
    p.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                   help="text (default), or json: one object per line with time, level, logger, message and "
                        "call_id/stream_id/tag where the line is about a call or stream")


def _arg(parse):
    """An argparse type from a parser raising ValueError (argparse then shows our message)."""
    def convert(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = parse.__name__
    return convert


def _add_live_parser(sub) -> argparse.ArgumentParser:
    from .capture.live import parse_port_range, parse_ports
    from .run.metrics import parse_hostport

    lv = sub.add_parser("live", help="capture an interface (a mirror port) and decode calls until stopped",
                        description="Capture SIP/RTP on an interface; stream every call leg and/or write WAV "
                                    "files until SIGINT/SIGTERM. SIGHUP reopens --log-file.")
    lv.add_argument("--config", metavar="FILE",
                    help="TOML file with any of these options (long names, e.g. ws_url = \"wss://...\"); "
                         "the command line overrides it")
    lv.add_argument("expression", nargs="*",
                    help="capture filter (tcpdump syntax, its words joined by spaces) replacing the one built "
                         "from the ports; the same as --bpf")
    cap = lv.add_argument_group("capture")
    cap.add_argument("-i", "--interface",
                     help="interface to capture on, by name or by its number in -D (required, here or in --config)")
    cap.add_argument("-D", "--list-interfaces", action="store_true",
                     help="list the interfaces that can be captured on, numbered (like tcpdump -D), and exit")
    cap.add_argument("--bpf", metavar="EXPR", help="capture filter replacing the one built from the ports")
    cap.add_argument("--sip-ports", type=_arg(parse_ports), default=(5060, 5080), metavar="P,P",
                     help="SIP ports, UDP and TCP (default 5060,5080)")
    cap.add_argument("--rtp-ports", type=_arg(parse_port_range), default=(16384, 32768), metavar="LOW-HIGH",
                     help="RTP/RTCP port range (default 16384-32768)")
    cap.add_argument("--snaplen", type=whole(64, 262144), default=65535,
                     help="bytes kept per packet, 64..262144 (default 65535); a packet takes its own length in "
                          "the kernel buffer, not this")
    cap.add_argument("--buffer-mb", type=whole(1, 4096), default=64,
                     help="kernel capture buffer in MiB, 1..4096 (default 64)")
    cap.add_argument("--no-promisc", action="store_true", help="do not put the interface in promiscuous mode")
    cap.add_argument("-Z", "--user", metavar="NAME",
                     help="switch to this user once the capture is open (like tcpdump -Z)")
    cap.add_argument("-c", "--count", type=COUNT, metavar="COUNT",
                     help="stop after COUNT packets captured, 1..10^12: every call ends, the summary is printed "
                          "and rtp2ws exits (like tcpdump -c); runs in one process (not with --workers N > 1)")
    ops = lv.add_argument_group("operation")
    ops.add_argument("--metrics", type=_arg(parse_hostport), metavar="HOST:PORT",
                     help="serve Prometheus /metrics and /healthz here, e.g. 127.0.0.1:9100")
    ops.add_argument("--stats-interval", type=number(0, 86400, lo_open=True, unit="s"), default=60.0,
                     metavar="SECONDS", help="seconds between statistics log lines (default 60)")
    ops.add_argument("--log-file", metavar="PATH", help="log here instead of stderr (reopened on SIGHUP)")
    _add_log_options(ops, "info", "default: info, with a line per call start and end")
    out = lv.add_argument_group("output")
    out.add_argument("--out-dir", help="directory for calls/<call>/ with a WAV per leg, calls.jsonl (a line as each "
                                       "call ends) and calls.json (written at exit)")
    _add_audio_options(out)
    out.add_argument("--jitter-ms", type=JITTER_MS, default=60.0,
                     help="jitter buffer depth in ms, 0..2000 (default 60)")
    out.add_argument("--rtp-timeout", type=RTP_TIMEOUT, default=300.0,
                     help="end a call after this many seconds without SIP or RTP, 1..86400 (default 300)")
    out.add_argument("--srtp-keylog", metavar="FILE", help=SRTP_KEYLOG_HELP)
    _add_stream_options(lv)
    _add_nats_options(lv)
    _add_worker_options(lv, "default: the cores available")
    return lv


def _add_worker_options(p, default: str) -> None:
    p.add_argument("--workers", type=whole(1, 256), metavar="N",
                   help=f"worker processes, each doing the media of a share of the calls (a call's legs and "
                        f"stereo in one), all capturing every packet; 1 runs in this process ({default})")


def _reporter(args):
    """A worker's Reporter (started by run.workers, ``RTP2WS_WORKER`` set), else None."""
    if args.shard is None:
        return None
    from .run.workerlink import Reporter, die_with_parent

    die_with_parent()
    return Reporter(args.report_fd, args.shard)


def worker_count(args, *, paced_default: bool) -> int:
    """The workers to run: --workers, else the cores available where that is the
    default (live, paced streaming replay), else 1.  More than the cores is allowed
    (they then share cores), with a warning.  ``live -c`` runs in one process
    (ValueError with --workers N > 1); ``replay -c`` in as many as without it: every
    worker reads the same first COUNT packets."""
    from .run.workers import default_count

    if args.shard is not None:
        return 1
    if args.command == "live" and args.count is not None:   # -c: one capture counts the packets
        if args.workers is not None and args.workers > 1:
            raise ValueError(f"-c/--count stops one capture after COUNT packets: it runs in one process, "
                             f"not with --workers {args.workers}")
        return 1
    cores = default_count()
    if args.workers is None:
        return cores if paced_default else 1
    if args.workers > cores:
        print(f"rtp2ws: warning: --workers {args.workers} is more than the {cores} cores this process may use: "
              f"the workers will share them", file=sys.stderr)
    return int(args.workers)


def _plan(args, count: int, *, live: bool):
    from .run.workers import Plan

    return Plan(tuple(args.argv), count, live, out_dir=args.out_dir, stereo=audio_format(args).mix == "stereo",
                metrics=getattr(args, "metrics", None), stats_interval=getattr(args, "stats_interval", 60.0),
                log_file=getattr(args, "log_file", None), user=getattr(args, "user", None),
                log_level=_log_level(args), log_format=args.log_format)


def _log_level(args) -> str:
    """--log-level, else the command's default: info for live, warning for replay (its
    per-call lines would flood the console of a replay of thousands of calls)."""
    return args.log_level or ("info" if args.command == "live" else "warning")


def live_options(args) -> LiveOptions:
    """The LiveOptions of ``live`` arguments; reads the --header-env variables and
    --header-file files (ValueError names a bad one)."""
    from .capture.live import resolve_interface
    from .run.live import CaptureOptions, LiveOptions

    capture = CaptureOptions(resolve_interface(args.interface) or "", bpf=args.bpf, sip_ports=tuple(args.sip_ports),
                             rtp_ports=tuple(args.rtp_ports), snaplen=args.snaplen, buffer_mb=args.buffer_mb,
                             promisc=not args.no_promisc, user=args.user)
    report = _reporter(args)
    return LiveOptions(capture, pipeline_config(args, live=True), sender=sender_config(args),
                       frame_ms=args.frame_ms, sip_headers=tuple(args.sip_header), out_dir=args.out_dir,
                       audio=audio_format(args), metrics=args.metrics if report is None else None,
                       stats_interval=args.stats_interval, log_file=args.log_file, log_level=_log_level(args),
                       log_format=args.log_format, count=args.count, report=report, nats=nats_config(args))


def list_interfaces() -> int:
    """``live -D``: the interfaces libpcap can capture on, numbered as tcpdump -D numbers
    them (``-i`` takes the number too)."""
    from .capture.live import describe_interface, find_interfaces

    try:
        found = find_interfaces()
    except OSError as e:
        print(f"rtp2ws: error: cannot list the interfaces: {e}", file=sys.stderr)
        return 2
    for n, dev in enumerate(found, 1):
        print(f"{n}.{describe_interface(dev)}")
    return 0


def cmd_live(args) -> int:
    if args.list_interfaces:
        return list_interfaces()
    if not args.interface:
        print("rtp2ws: error: live needs -i/--interface (or interface in the --config file)", file=sys.stderr)
        return 2
    if not args.out_dir and not args.ws_url and not args.nats_url:
        print("rtp2ws: error: live needs --out-dir, --ws-url, --nats-url or several", file=sys.stderr)
        return 2
    try:
        count = worker_count(args, paced_default=True)
        opts = live_options(args)
    except ValueError as e:
        print(f"rtp2ws: error: {e}", file=sys.stderr)
        return 2
    if count > 1:
        from .run.workers import run_live_workers

        return run_live_workers(_plan(args, count, live=True), opts.capture)
    from .run.live import run_live

    return run_live(opts)


def _add_sink_parser(sub) -> None:
    s = sub.add_parser("sink", help="reference analysis server: receive streams, write one WAV per stream",
                       description="The reference analysis server: receives rtp2ws's streams, checks every "
                                   "message against the protocol and writes one WAV per stream. Needs "
                                   "jsonschema (pip install 'rtp2ws[sink]').")
    s.add_argument("--listen", default="127.0.0.1:8765",
                   help="host:port to listen on, port 0 for any free port (default 127.0.0.1:8765)")
    s.add_argument("--out-dir", required=True, help="directory for WAV files, streams.jsonl and messages.jsonl")
    tok = s.add_mutually_exclusive_group()
    tok.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (also $RTP2WS_SINK_TOKEN)")
    tok.add_argument("--token-file", help="read the token from this file")
    s.add_argument("--cert", help="TLS certificate chain (PEM): serve wss://")
    s.add_argument("--key", help="TLS private key (PEM), if not in --cert")
    s.add_argument("--ping-interval", type=number(0, 3600, unit="s"), default=20.0,
                   help="seconds between keepalive pings, 0 for none")
    s.add_argument("--ping-timeout", type=number(0, 3600, unit="s"), default=20.0,
                   help="seconds to wait for a pong, 0 for no limit")
    s.add_argument("--max-size", type=whole(1024, 64 * 2 ** 20), default=2 ** 20,
                   help="largest message in bytes, 1024..67108864 (default 1 MiB)")
    _add_log_options(s, "info", "default: info")


def cmd_sink(args) -> int:
    try:
        from .sinkserver.server import run_sink
    except ModuleNotFoundError as e:     # the sink's own dependency, an extra
        if (e.name or "").partition(".")[0] != "jsonschema":
            raise
        print("rtp2ws: error: rtp2ws sink needs jsonschema: pip install 'rtp2ws[sink]'", file=sys.stderr)
        return 2
    return run_sink(args)


def _add_consume_parser(sub) -> None:
    from .broker import subjects

    default_group = subjects.DEFAULT_GROUP
    c = sub.add_parser("consume", help="rebuild per-leg WAVs from the streams published to NATS JetStream",
                       description="Reads what rtp2ws published with --nats-url and writes one WAV per stream, "
                                   "as rtp2ws sink does. Workers with the same --group share the streams: each "
                                   "is written by one of them (at least once: a worker that dies leaves its "
                                   "streams to the others, written again at the same offsets).")
    c.add_argument("--nats-url", required=True, metavar="nats://HOST:PORT")
    c.add_argument("--out-dir", required=True, help="directory for WAV files, streams.jsonl and messages.jsonl")
    c.add_argument("--nats-stream", type=_arg(subjects.check_stream_name), default=subjects.DEFAULT_STREAM,
                   metavar="NAME", help=f"default {subjects.DEFAULT_STREAM}")
    c.add_argument("--nats-prefix", type=_arg(subjects.check_prefix), default=subjects.DEFAULT_PREFIX,
                   metavar="PREFIX", help=f"default {subjects.DEFAULT_PREFIX}")
    c.add_argument("--group", type=_arg(subjects.check_stream_name), default=default_group,
                   help=f"the durable consumer the workers of one group share (default {default_group})")
    c.add_argument("--max-streams", type=whole(1, 100000), default=256, metavar="N",
                   help="streams this worker writes at once (default 256): the next ones go to the others")
    c.add_argument("--ack-wait", type=number(1, 86400, unit="s"), default=30.0, metavar="SECONDS",
                   help="a worker that dies leaves its streams to the others of its group this long after its "
                        "last sign of life (default 30; the group's durable consumer's, set by the worker that "
                        "creates it)")
    c.add_argument("--idle-timeout", type=number(1, 86400, unit="s"), default=60.0, metavar="SECONDS",
                   help="a stream with no message this long is closed without its end (default 60)")
    c.add_argument("--exit-idle", type=number(0, 86400, unit="s"), default=None, metavar="SECONDS",
                   help="exit once no stream is open and no record came for this long (default: run until "
                        "SIGINT/SIGTERM)")
    _add_log_options(c, "info", "default: info")


def cmd_consume(args) -> int:
    from .run import logs
    from .sinkserver.consume import ConsumeConfig, run_consume

    logging_ = logs.setup(args.log_level, args.log_format)
    try:
        return run_consume(ConsumeConfig(args.nats_url, args.out_dir, stream=args.nats_stream,
                                         prefix=args.nats_prefix, group=args.group, max_streams=args.max_streams,
                                         ack_wait_s=args.ack_wait,
                                         idle_timeout_s=args.idle_timeout, exit_idle_s=args.exit_idle))
    finally:
        logging_.restore()


def _add_bench_parser(sub) -> None:
    from .bench.harness import add_arguments

    b = sub.add_parser("bench", help="measure calls per core: generated captures through rtp2ws and a "
                                     "simple reference pipeline",
                       description="Generate captures of N concurrent G.711 calls, replay them at full speed "
                                   "to WAV files and to WebSocket (a discard server in another process), and "
                                   "report calls per core = N x call seconds / CPU seconds, per-stage CPU, "
                                   "memory per call and (--latency) capture-to-socket latency, beside a "
                                   "reference pipeline written the simple way. Needs matplotlib "
                                   "(pip install 'rtp2ws[bench]').")
    add_arguments(b)


def cmd_bench(args) -> int:
    from .bench.harness import cmd_bench as run

    return run(args)


def deliver_ms(args) -> int:
    from .pipeline.pipeline import deliver_ms as for_use

    return for_use(stream=bool(args.ws_url or args.nats_url), paced=args.speed is not None,
                   max_buffer_ms=args.max_buffer_ms)


SRTP_KEYLOG_HELP = ("SRTP keys the capture does not show (SIP over TLS), read at start: lines 'call <Call-ID> "
                    "<caller|callee> <suite> inline:<key>' or 'src <address>:<port> <suite> inline:<key>' "
                    "(rtp2ws.media.keylog)")


def load_srtp_keylog(path: str | None):
    """The --srtp-keylog file's keys (None without the option); ValueError says what is wrong."""
    if not path:
        return None
    from .media.keylog import parse_keylog

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(16 * 1024 * 1024)
    except OSError as e:
        raise ValueError(f"--srtp-keylog {path}: {e.strerror or e}") from None
    try:
        return parse_keylog(text)
    except ValueError as e:
        raise ValueError(f"--srtp-keylog {path}: {e}") from None


def pipeline_config(args, *, live: bool = False) -> Config:
    """The pipeline's Config for ``replay`` or ``live`` arguments: paced input (live,
    ``--speed`` other than max) hands audio out every ``--flush-ms``; full-speed replay
    in ``deliver_ms`` batches."""
    paced = live or args.speed is not None
    return Config(jitter_depth=args.jitter_ms / 1000.0, rtp_timeout=args.rtp_timeout,
                  deliver_ms=0 if live else deliver_ms(args), flush_ms=args.flush_ms if paced else 0,
                  shard=getattr(args, "shard", None), rate=args.rate, srtp_keylog=getattr(args, "srtp_keys", None))


def sender_config(args) -> SenderConfig | None:
    """The SenderConfig of the streaming options shared by replay and live, None without
    --ws-url; reads the --header-env variables and --header-file files (ValueError names
    a bad one)."""
    if not args.ws_url:
        return None
    from .ws import formats
    from .ws.sender import SenderConfig, load_headers

    headers = load_headers(args.header, args.header_env, args.header_file)
    audio = audio_format(args)
    formats.check_options(args.ws_format, frame_ms=args.frame_ms, sip_headers=args.sip_header,
                          headers=[name for name, _ in headers], audio=audio)
    return SenderConfig(
        url=args.ws_url,
        headers=headers,
        ca_file=args.ca_file,
        max_buffer_ms=args.max_buffer_ms,
        resend_ms=args.resend_ms,
        max_connecting=args.max_connecting,
        ws_format=args.ws_format,
        audio=audio,
        **({"twilio_account_sid": args.twilio_account_sid} if args.twilio_account_sid else {}),
    )


def nats_config(args):
    """The NatsConfig of the --nats-* options, None without --nats-url."""
    if not getattr(args, "nats_url", None):
        return None
    from .broker.publisher import NatsConfig

    return NatsConfig(args.nats_url, stream=args.nats_stream, prefix=args.nats_prefix, retention=args.nats_retention,
                      storage=args.nats_storage, max_age_s=args.nats_max_age, max_bytes=args.nats_max_bytes,
                      replicas=args.nats_replicas, duplicate_window_s=args.nats_duplicate_window,
                      max_buffer_ms=args.max_buffer_ms, max_inflight=args.nats_max_inflight,
                      chunk_ms=args.nats_chunk_ms, frame_ms=args.frame_ms, ack_timeout_s=args.nats_ack_timeout,
                      audio=audio_format(args))


def nats_sink(args, config: Config, *, flow_control: bool):
    """With --nats-url: the started publisher and the sink feeding it (NatsError when the
    server cannot be used); else (None, None)."""
    cfg = nats_config(args)
    if cfg is None:
        return None, None
    from .broker.publisher import NatsBridge, NatsPublisher
    from .sinks.streams import StreamSink

    publisher = NatsPublisher(cfg)
    publisher.start()
    streams = StreamSink(frame_ms=args.frame_ms, sip_headers=tuple(args.sip_header),
                         hold_s=config.jitter_depth + 1.0, audio=cfg.audio)
    return publisher, NatsBridge(streams, publisher, flow_control=flow_control)


def _replay_to_websocket(args, config: Config, wav_sink, progress):
    """``rtp2ws replay --ws-url``: returns (ReplayResult, sender statistics)."""
    from .run.replay import stream_replay
    from .sinks.streams import StreamSink
    from .ws.sender import raise_fd_limit

    raise_fd_limit(65536)
    sender_cfg = sender_config(args)
    assert sender_cfg is not None  # called with --ws-url only
    streams = StreamSink(frame_ms=args.frame_ms, sip_headers=tuple(args.sip_header),
                         hold_s=config.jitter_depth + 1.0, ws_format=sender_cfg.ws_format, audio=sender_cfg.audio)
    return stream_replay(args.capture, config, sender_cfg, streams, speed=args.speed,
                         also=wav_sink, progress=progress, count=args.count)


def cmd_replay(args) -> int:
    if not args.out_dir and not args.ws_url and not args.nats_url:
        print("rtp2ws: error: replay needs --out-dir, --ws-url, --nats-url or several", file=sys.stderr)
        return 2
    from .run import logs

    worker = f"{args.shard[0] + 1}/{args.shard[1]}" if args.shard is not None else None
    logging = logs.setup(_log_level(args), args.log_format, worker=worker)
    try:
        return _replay(args)
    finally:
        logging.restore()


def _replay(args) -> int:
    count = worker_count(args, paced_default=bool(args.ws_url) and args.speed is not None)
    if count > 1:
        return _replay_with_workers(args, count)
    report = _reporter(args)
    config = pipeline_config(args)
    try:
        wav = WavSink(args.out_dir, audio=audio_format(args)) if args.out_dir else None
    except OSError as e:
        print(f"rtp2ws: error: --out-dir {args.out_dir}: {e.strerror or e}", file=sys.stderr)
        return 2
    wav_sink: Sink | None = wav
    if wav is not None and report is not None:     # a worker: the supervisor writes calls.json
        from .pipeline.sink import Tee
        from .run.workerlink import ManifestReport

        wav_sink = Tee(wav, ManifestReport(wav.manifest, report))
    if report is None:
        _warn_if_slower()
    publisher = nats = None
    if getattr(args, "nats_url", None):     # (the publisher's modules only then: a replay's start-up)
        from .broker.publisher import NatsError

        try:
            publisher, nats = nats_sink(args, config, flow_control=args.speed is None)
        except (NatsError, ValueError) as e:
            print(f"rtp2ws: error: {e}", file=sys.stderr)
            return 2
    if nats is not None:
        from .pipeline.sink import Tee

        wav_sink = Tee(nats, wav_sink) if wav_sink is not None else nats
    gcpolicy.apply()
    progress = Progress(enabled=False) if args.no_progress or report is not None else Progress()
    published = None
    try:
        if args.ws_url:
            result, sent = _replay_to_websocket(args, config, wav_sink, progress)
        else:
            assert wav_sink is not None  # without --ws-url, --out-dir or --nats-url is there: checked above
            # a full-speed replay to NATS hands audio out every 64 packets, as to WebSocket, so
            # that one hand-off never overflows a stream's queue
            tick_every = 64 if nats is not None and args.speed is None else None
            pacer = _paced(args.speed) if nats is not None and args.speed is not None else None
            result, sent = replay(args.capture, wav_sink, config, progress, count=args.count,
                                  tick_every=tick_every, pacer=pacer), None
    except ReplayError as e:
        print(f"rtp2ws: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:   # bad header lines, unusable URL or CA file
        print(f"rtp2ws: error: {e}", file=sys.stderr)
        return 2
    finally:
        if publisher is not None:
            published = publisher.close()
    if report is not None:
        # the supervisor prints the summary line, the NATS part summed over the workers
        code = 1 if result.error or _undelivered(sent) or _undelivered(published) else 0
        report.send("summary", rc=code, sent=sent, nats=published, result={
            "path": result.path, "stats": result.stats, "calls": result.calls, "legs": result.legs,
            "packets": result.packets, "elapsed": result.elapsed, "error": result.error,
            "internal_errors": result.extra.get("internal_errors", [])})
        return code
    return _finish_replay(result, sent, wav, published)


def _paced(speed: float):
    """A replay's Pacer whose stop event SIGINT and SIGTERM set (every call then ends
    with ``shutdown``), as the WebSocket replay's thread has."""
    import signal

    from .run.replay import Pacer

    pacer = Pacer(speed)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: pacer.stop.set())
    return pacer


def _undelivered(sent: dict | None) -> str | None:
    from .ws.protocol import delivery_error

    return delivery_error(sent)


def _finish_replay(result: ReplayResult, sent: dict | None, wav, published: dict | None = None) -> int:
    """The summary line, calls.json and the exit code of a replay (one process or merged workers)."""
    summary = result.summary()
    if sent is not None:
        summary["streams"] = sent
    if published is not None:
        summary["nats"] = published
    if "workers" in result.extra:
        summary["workers"] = result.extra["workers"]
    if wav is not None:
        wav.close(summary)
    line = result.line()
    undelivered = None
    if sent is not None:
        from .ws.bridge import stream_summary

        line += "; " + stream_summary(sent)
        undelivered = _undelivered(sent)
    if published is not None:
        from .broker.publisher import summary as nats_summary

        line += "; " + nats_summary(published)
        undelivered = undelivered or _undelivered(published)
    print(line)
    _report_internal_errors(result.stats.get("internal_errors", 0), result.extra.get("internal_errors", ()))
    if result.error:
        print(f"rtp2ws: error: {result.error}", file=sys.stderr)
        return 1
    if undelivered:
        print(f"rtp2ws: error: {undelivered}", file=sys.stderr)
        return 1
    return 0


def _replay_with_workers(args, count: int) -> int:
    """``replay --workers N``: what would fail in every worker is checked here first
    (capture, --out-dir, stream options), so it is said once."""
    from .capture.file import CaptureError, CaptureFile
    from .run.workers import Manifest, run_replay_workers

    try:
        with CaptureFile(args.capture):
            pass
        sender_config(args)
    except CaptureError as e:
        print(f"rtp2ws: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"rtp2ws: error: {e}", file=sys.stderr)
        return 2
    try:
        manifest = Manifest(args.out_dir, audio=audio_format(args)) if args.out_dir else None
    except OSError as e:
        print(f"rtp2ws: error: --out-dir {args.out_dir}: {e.strerror or e}", file=sys.stderr)
        return 2
    _warn_if_slower()
    outcome = run_replay_workers(_plan(args, count, live=False), manifest)
    if outcome.result is None:
        for text in outcome.failed:
            print(f"rtp2ws: error: {text}", file=sys.stderr)
        return max(outcome.code, 1)
    outcome.result.extra["workers"] = {"count": count, "calls": outcome.calls_per_worker}
    code = _finish_replay(outcome.result, outcome.sent, manifest, outcome.nats)
    for text in outcome.failed:
        print(f"rtp2ws: error: {text}", file=sys.stderr)
    return max(code, outcome.code)


def _warn_if_slower() -> None:
    """A C extension that is not built (and not opted out of) leaves its part on the slower twin: say so."""
    from .speedups import missing_warning

    slower = missing_warning()
    if slower:
        print(f"rtp2ws: warning: {slower}", file=sys.stderr)


def _report_internal_errors(count: int, first: list) -> None:
    """Packets that raised what no parser documents were counted as malformed and
    skipped; say so, since each is a bug worth a report."""
    if count:
        ts, text = first[0] if first else (None, "")
        print(f"rtp2ws: warning: {count} packets raised an unexpected error and were skipped "
              f"(counted as malformed); the first, at capture time {ts}: {text!r}", file=sys.stderr)


def _capture_argument(parser: argparse.ArgumentParser, args) -> None:
    """``replay FILE`` or ``replay -r FILE`` (tcpdump's), exactly one: ``args.capture``."""
    if args.capture is not None and args.read_file is not None:
        parser.error(f"give the capture once: as -r {args.read_file} or as {args.capture}, not both")
    if args.capture is None and args.read_file is None:
        parser.error("the capture file is required (replay FILE, or -r FILE)")
    if args.capture is None:
        args.capture = args.read_file


def _filter_argument(parser: argparse.ArgumentParser, args, given_bpf: str | None) -> None:
    """``live ... EXPRESSION`` (tcpdump's trailing words, joined by spaces) or ``--bpf
    EXPR``, not both on the command line; either replaces a --config file's bpf."""
    if not args.expression:
        return
    expression = " ".join(args.expression)
    if given_bpf is not None:
        parser.error(f"give the capture filter once: as --bpf {given_bpf!r} or as the words at the end "
                     f"({expression!r}), not both")
    args.bpf = expression


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command == "replay":
        _capture_argument(parser.replay_parser, args)
    if args.command == "live":
        given_bpf = args.bpf                # on the command line (a --config file's comes below)
        if args.config:
            from .tomlconfig import ConfigError, apply_config

            try:
                args = apply_config(parser.live_parser, args.config, argv, parse=parser.parse_args)
            except ConfigError as e:
                print(f"rtp2ws: error: {e}", file=sys.stderr)
                return 2
        _filter_argument(parser.live_parser, args, given_bpf)
    if args.command in ("live", "replay"):
        try:
            audio_format(args)
            args.srtp_keys = load_srtp_keylog(args.srtp_keylog)
        except ValueError as e:
            (parser.live_parser if args.command == "live" else parser.replay_parser).error(str(e))
    args.argv = raw          # what --workers N runs again in each worker
    args.shard, args.report_fd = None, None
    if args.command in ("live", "replay") and os.environ.get(WORKER_ENV):
        from .run.workerlink import parse_worker

        try:                 # a worker of --workers N (run.workers): its share and its report pipe
            args.shard, args.report_fd = parse_worker(os.environ.pop(WORKER_ENV))
        except ValueError as e:
            print(f"rtp2ws: error: {WORKER_ENV}: {e}", file=sys.stderr)
            return 2
    if args.command == "live":
        return cmd_live(args)
    if args.command == "replay":
        return cmd_replay(args)
    if args.command == "sink":
        return cmd_sink(args)
    if args.command == "bench":
        return cmd_bench(args)
    if args.command == "consume":
        return cmd_consume(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
