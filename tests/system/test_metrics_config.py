"""``--metrics`` (Prometheus /metrics and /healthz) and ``--config`` (TOML)."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from rtp2ws import cli
from rtp2ws.capture.live import LiveCapture
from rtp2ws.pipeline.sink import Sink
from rtp2ws.run.live import LiveRunner
from rtp2ws.run.metrics import METRICS, MetricsServer, health, parse_hostport
from rtp2ws.tomlconfig import ConfigError, apply_config

from callgen import sdp, sip
from paths import ROOT
from skips import can_capture


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def values(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_until(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


# --------------------------------------------------------------------------- metrics

def test_parse_hostport():
    assert parse_hostport("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_hostport("[::1]:9100") == ("::1", 9100)
    assert parse_hostport(":9100") == ("0.0.0.0", 9100)
    for bad in ("9100", "host:", "host:99999", "host:x"):
        with pytest.raises(ValueError, match="--metrics must be HOST:PORT"):
            parse_hostport(bad)


@pytest.mark.skipif(not can_capture(), reason="needs root or CAP_NET_RAW to capture on lo")
def test_metrics_move_and_health_follows_the_capture():
    port = 26900
    cap = LiveCapture("lo", bpf=f"udp and dst port {port}")
    ws = {"open": 2, "streams": 3, "reconnects": 1, "queued_ms": 40, "dropped_ms": 0}
    runner = LiveRunner(cap, stats_interval=30, refresh_s=0.05, sender_stats=lambda: dict(ws))
    server = MetricsServer(runner.snapshot, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{server.port}"
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(Sink(), stop), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: runner.snapshot().get("capture_running"))
        status, text = get(base + "/metrics")
        assert status == 200
        v = values(text)
        for name, kind, _, _ in METRICS:
            assert f"rtp2ws_{name}{'_total' if kind == 'counter' else ''}" in v, name
        assert v["rtp2ws_captured_packets_total"] == 0
        assert v["rtp2ws_capture_running"] == 1
        assert v["rtp2ws_websocket_connections_open"] == 2 and v["rtp2ws_queued_audio_seconds"] == 0.04
        assert get(base + "/healthz") == (200, "ok\n")

        invite = sip("INVITE sip:b@127.0.0.1 SIP/2.0", [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1"), ("From", "<sip:a@127.0.0.1>;tag=1"),
            ("To", "<sip:b@127.0.0.1>"), ("Call-ID", "metrics@test"), ("CSeq", "1 INVITE")],
            sdp("127.0.0.1", 27000))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(10):
                s.sendto(b"x" * 100, ("127.0.0.1", port))
            s.sendto(invite, ("127.0.0.1", port))
            s.sendto(b"INVITE sip:x SIP/2.0\r\nbroken", ("127.0.0.1", port))

        def moved():
            return values(get(base + "/metrics")[1])["rtp2ws_captured_packets_total"] == 12
        assert wait_until(moved)
        v = values(get(base + "/metrics")[1])
        assert v["rtp2ws_captured_bytes_total"] > 10 * 100
        assert v["rtp2ws_malformed_packets_total"] == 1
        assert v["rtp2ws_calls_total"] == 1
        assert v["rtp2ws_active_calls"] == 1 and v["rtp2ws_active_legs"] == 2
        ws["reconnects"] = 4
        assert wait_until(lambda: values(get(base + "/metrics")[1])["rtp2ws_websocket_reconnects_total"] == 4)
        assert get(base + "/healthz") == (200, "ok\n")
        assert get(base + "/nope")[0] == 404

        stop.set()
        thread.join(10)
        assert not thread.is_alive()
        status, text = get(base + "/healthz")
        assert status == 503 and text == "capture is not running\n"
        v = values(get(base + "/metrics")[1])
        assert v["rtp2ws_capture_running"] == 0 and v["rtp2ws_active_calls"] == 0
        assert runner.reason == "shutdown"
    finally:
        stop.set()
        server.close()
        cap.stop()


def test_health_reasons():
    now = 100.0
    ok = {"capture_running": True, "monotonic": 99.0, "drops_recent": 0, "drops_window_s": 60}
    assert health(ok, now=now) == (True, "ok")
    assert health({}, now=now) == (False, "not started")
    assert health(dict(ok, capture_running=False, capture_error="Network is down"), now=now) == (
        False, "capture is not running: Network is down")
    assert health(dict(ok, drops_recent=12), now=now) == (
        False, "12 packets dropped in the last 60 s (by the kernel or the interface)")
    assert health(dict(ok, monotonic=50.0), now=now, stale_s=10) == (False, "the decoder has not reported for 50 s")


class FakeCapture:
    interface = "eth9"

    def __init__(self):
        self.counts = {"packets": 0, "bytes": 0, "kernel_received": 0, "kernel_drops": 0, "interface_drops": 0,
                       "running": True, "error": None}

    def stats(self):
        return dict(self.counts)


def test_drops_count_against_health_for_one_interval_and_warn(caplog):
    cap = FakeCapture()
    runner = LiveRunner(cap, stats_interval=0.3)
    assert health(runner.snapshot())[0]
    runner._log_interval()
    cap.counts.update(packets=1000, kernel_drops=7, interface_drops=3)
    runner._publish()
    ok, reason = health(runner.snapshot())
    assert not ok and reason.startswith("10 packets dropped in the last 0.3 s")
    with caplog.at_level(logging.INFO, logger="rtp2ws.live"):
        runner._log_interval()
    warn = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warn == [("the mirror host is not keeping up: 7 packets dropped by the kernel (its capture buffer was "
                     "full: the decoder fell behind, or --buffer-mb is too small for the bursts), 3 dropped by the "
                     "interface in the last 0.3 s; consider --buffer-mb, a narrower --bpf or more CPU")]
    time.sleep(0.35)
    runner._publish()
    assert health(runner.snapshot()) == (True, "ok")   # nothing new over the last interval
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rtp2ws.live"):
        runner._log_interval()
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


# --------------------------------------------------------------------------- config

def parse(tmp_path, text: str, *argv: str):
    path = tmp_path / "rtp2ws.toml"
    path.write_text(text)
    parser = cli.build_parser()
    full = ["live", "--config", str(path), *argv]
    return apply_config(parser.live_parser, str(path), full, parse=parser.parse_args), path


CONFIG = """
interface = "eth1"
ws_url = "wss://analysis.example/audio"
out-dir = "/var/lib/rtp2ws"
sip_ports = [5060, 5070]
rtp_ports = "10000-20000"
buffer_mb = 256
no_promisc = true
stats_interval = 30
jitter-ms = 80
metrics = "127.0.0.1:9100"
header_file = "/etc/rtp2ws/headers"
sip_header = ["X-Tenant", "User-Agent"]
frame_ms = 40
"""


def test_config_values_are_applied(tmp_path):
    args, _ = parse(tmp_path, CONFIG)
    assert args.interface == "eth1" and args.ws_url == "wss://analysis.example/audio"
    assert args.out_dir == "/var/lib/rtp2ws"
    assert args.sip_ports == (5060, 5070) and args.rtp_ports == (10000, 20000)
    assert args.buffer_mb == 256 and args.no_promisc is True and args.stats_interval == 30.0
    assert args.jitter_ms == 80.0 and args.metrics == ("127.0.0.1", 9100) and args.frame_ms == 40
    assert args.header_file == ["/etc/rtp2ws/headers"] and args.sip_header == ["X-Tenant", "User-Agent"]
    assert args.snaplen == 65535 and args.stereo is False        # untouched defaults
    args, _ = parse(tmp_path, 'rtp_ports = [16000, 17000]\nsip_ports = "5061"\nheader = "X-Key: 1"\n')
    assert args.rtp_ports == (16000, 17000) and args.sip_ports == (5061,) and args.header == ["X-Key: 1"]


def test_command_line_overrides_the_file(tmp_path):
    args, _ = parse(tmp_path, CONFIG, "-i", "eth2", "--buffer-mb", "8", "--rtp-ports", "30000-30010",
                    "--sip-header", "X-Only", "--jitter-ms", "60")
    assert args.interface == "eth2" and args.buffer_mb == 8 and args.rtp_ports == (30000, 30010)
    assert args.sip_header == ["X-Only"]                 # a repeatable option replaces the file's list
    assert args.jitter_ms == 60.0                        # even when equal to the built-in default
    assert args.ws_url == "wss://analysis.example/audio"  # not given: the file's


@pytest.mark.parametrize("text, message", [
    ('interfase = "eth1"\n', "unknown key 'interfase'"),
    ('config = "other.toml"\n', "unknown key 'config' (it is given on the command line only)"),
    ('[live]\ninterface = "eth1"\n', "unknown key 'live'"),
    ('snaplen = "big"\n', "snaplen must be an integer, not a string ('big')"),
    ("snaplen = 1.5\n", "snaplen must be an integer, not a number (1.5)"),
    ('no_promisc = "yes"\n', "no_promisc must be true or false, not a string ('yes')"),
    ("interface = 3\n", "interface must be a string, not an integer (3)"),
    ("stereo = 1\n", "stereo must be true or false, not an integer (1)"),
    ("rtp_timeout = true\n", "rtp_timeout must be a value other than a boolean"),
    ('sip_ports = [5060, "x"]\n', "sip_ports: invalid port 'x'"),
    ('rtp_ports = "9-1"\n', "rtp_ports: port range 9-1 is empty"),
    ("header = 5\n", "header must be a string or a list of strings, not an integer (5)"),
    ('metrics = "nowhere"\n', "metrics: --metrics must be HOST:PORT"),
    ("frame_ms = 30\n", "frame_ms:"),
    ('ws_url = "a"\nws-url = "b"\n', "ws_url is given twice"),
    ("interface = \n", "not valid TOML"),
])
def test_config_errors_name_the_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        parse(tmp_path, text)
    assert str(e.value).startswith(str(tmp_path / "rtp2ws.toml") + ": ")
    assert message in str(e.value)


def test_config_through_the_command_line(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(f'interface = "nosuch0"\nout_dir = "{tmp_path / "out"}"\n')
    assert cli.main(["live", "--config", str(path)]) == 2
    assert capsys.readouterr().err.strip() == "rtp2ws: error: nosuch0: no such network interface (see `ip link`)"
    path.write_text("bogus = 1\n")
    assert cli.main(["live", "--config", str(path), "-i", "lo"]) == 2
    err = capsys.readouterr().err
    assert re.match(rf"rtp2ws: error: {re.escape(str(path))}: unknown key 'bogus'", err), err
    assert cli.main(["live", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: No such file or directory" in capsys.readouterr().err


# --------------------------------------------------------------------------- deploy files

DEPLOY = ROOT / "deploy"


def test_example_config_covers_every_option_and_parses(tmp_path):
    from rtp2ws.tomlconfig import option_table

    text = (DEPLOY / "rtp2ws.toml.example").read_text()
    keys = set(re.findall(r"^#? ?(\w+) = ", text, re.MULTILINE))
    table = option_table(cli.build_parser().live_parser)
    assert keys == {k for k in table if "-" not in k}
    uncommented = re.sub(r"^# (\w+ = )", r"\1", text, flags=re.MULTILINE)
    args, _ = parse(tmp_path, uncommented)
    assert args.interface == "eth1" and args.user == "rtp2ws" and args.rtp_ports == (16384, 32768)


@pytest.mark.skipif(__import__("shutil").which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies(tmp_path):
    import subprocess

    unit = (DEPLOY / "rtp2ws.service").read_text()
    assert "ExecStart=/usr/local/bin/rtp2ws live --config /etc/rtp2ws/rtp2ws.toml" in unit
    for line in ("AmbientCapabilities=CAP_NET_RAW", "CapabilityBoundingSet=CAP_NET_RAW", "NoNewPrivileges=yes",
                 "Restart=on-failure", "LimitNOFILE=65536", "ProtectSystem=strict",
                 "ExecReload=/bin/kill -HUP $MAINPID"):
        assert f"\n{line}\n" in unit, line
    path = tmp_path / "rtp2ws.service"
    path.write_text(unit.replace("/usr/local/bin/rtp2ws", "/bin/true"))   # verify wants the binary to exist
    r = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "rtp2ws.service" not in r.stderr, r.stderr


def test_audio_options_from_the_file_and_the_command_line(tmp_path, capsys):
    """rate, encoding and mix come from the file as from the command line, into the
    AudioFormat every part runs with; stereo = true is mix = "stereo"; a value out of
    their sets, or --stereo against another mix, is a clear error."""
    from rtp2ws.codec.audioformat import AudioFormat

    args, _ = parse(tmp_path, 'rate = 8000\nencoding = "mulaw"\nmix = "mixed"\n')
    assert cli.audio_format(args) == AudioFormat(8000, "mulaw", "mixed")
    assert cli.pipeline_config(args, live=True).rate == 8000
    args, _ = parse(tmp_path, 'rate = 48000\nstereo = true\n', "--encoding", "alaw", "-i", "lo", "--ws-url", "ws://h/")
    assert cli.audio_format(args) == AudioFormat(48000, "alaw", "stereo")
    assert cli.sender_config(args).audio == AudioFormat(48000, "alaw", "stereo")
    args, _ = parse(tmp_path, "")
    assert cli.audio_format(args) == AudioFormat() and cli.pipeline_config(args, live=True).rate == 16000
    for text, message in (("rate = 44100\n", "rate: use one of 8000, 16000, 24000, 48000, not 44100"),
                          ('rate = "8000"\n', "rate must be an integer"),
                          ('encoding = "g722"\n', "encoding must be one of l16, mulaw, alaw, not 'g722'"),
                          ('mix = "both"\n', "mix must be one of per-leg, stereo, mixed, not 'both'")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse(tmp_path, text)
    path = tmp_path / "c.toml"
    path.write_text('stereo = true\nmix = "mixed"\n')
    with pytest.raises(SystemExit):
        cli.main(["live", "--config", str(path), "-i", "lo", "--out-dir", str(tmp_path)])
    assert "--stereo is --mix stereo: it contradicts --mix mixed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["replay", "x.pcap", "--out-dir", str(tmp_path), "--rate", "11025"])
    assert "argument --rate: use one of 8000, 16000, 24000, 48000, not 11025" in capsys.readouterr().err
