"""The deployment the project exists for, end to end, in network namespaces:

    phone ──veth── pbx ──veth── [impairment] ──veth── mirror
    (sipp UAC)     (sipp UAS,                         (rtp2ws live -i <veth>
                    tee.sh up)                          → rtp2ws sink on lo)

Real SIP calls with G.711 RTP in both directions run between phone and pbx.
``deploy/iptables/tee.sh`` on the pbx mirrors them to the mirror namespace,
where ``rtp2ws live`` captures them with libpcap and streams them to
``rtp2ws sink``. The link to the mirror is impaired with ``tc netem`` where the
kernel has it, and otherwise with ``tests/tools/impair_bridge.py``, a user-space
bridge. That is needed here: this CI kernel has no sch_netem.

Every address lives inside namespaces the test creates and deletes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rtp2ws.sinks.wav import read_wav

import callgen
import netgen
from callgen import Party, tone
from paths import ROOT, TOOLS
from skips import netns_problem

TEE = ROOT / "deploy" / "iptables" / "tee.sh"
PY = sys.executable
CALLS = 2
SECONDS = 3.0
SEQ0 = {"caller": 1000, "callee": 30000}
FREQ = {"caller": 440, "callee": 1000}


def run(*cmd, ns=None, check=True, timeout=60, **kw):
    full = (["ip", "netns", "exec", ns] if ns else []) + [str(c) for c in cmd]
    r = subprocess.run(full, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(full)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def _ensure_tools():
    missing = [pkg for tool, pkg in (("sipp", "sip-tester"), ("ip", "iproute2"), ("iptables", "iptables"))
               if shutil.which(tool) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], capture_output=True, timeout=900,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    still = [t for t in ("sipp", "ip", "iptables") if shutil.which(t) is None]
    return f"missing tools: {', '.join(still)}" if still else None


def _namespaces_work():
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    why = _ensure_tools()
    if why:
        return why
    return netns_problem()


SKIP = _namespaces_work()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))


def wait_for_line(stream, text: str, timeout: float) -> str:
    """Read ``stream`` (a process's pipe) until a line containing ``text``."""
    import select

    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.2)
        if ready:
            line = stream.readline()
            if not line:
                break
            seen.append(line)
            if text in line:
                return line
    raise AssertionError(f"no line with {text!r} within {timeout} s:\n{''.join(seen)}")


class Topology:
    def __init__(self, impair: dict | None, tmp: Path):
        self.made = []
        self.procs = []
        try:
            self._build(impair, tmp)
        except BaseException:
            self.close()
            raise

    def _build(self, impair: dict | None, tmp: Path):
        tag = f"{os.getpid() % 10000}"
        self.ns = {k: f"r2w{tag}{k}" for k in ("ph", "pb", "mi", "wr")}
        self.tmp = tmp
        ns = self.ns
        for k in ("ph", "pb", "mi"):
            self._netns(ns[k])
        # phone <-> pbx
        self._veth("p", ns["ph"], f"r{tag}ph", ns["pb"], f"r{tag}pp")
        run("ip", "addr", "add", "10.70.1.2/24", "dev", f"r{tag}ph", ns=ns["ph"])
        run("ip", "addr", "add", "10.70.1.1/24", "dev", f"r{tag}pp", ns=ns["pb"])
        # pbx <-> mirror, directly or through the impairment bridge
        self.mirror_if = f"r{tag}mi"
        self.netem = False
        if impair is None:
            self._veth("m", ns["pb"], f"r{tag}pm", ns["mi"], self.mirror_if)
        else:
            self._veth("m", ns["pb"], f"r{tag}pm", ns["mi"], self.mirror_if)
            spec = f"loss {impair['loss'] * 100:g}% delay 1ms reorder {impair['reorder'] * 100:g}% 50%"
            r = run("tc", "qdisc", "add", "dev", f"r{tag}pm", "root", "netem", *spec.split(), ns=ns["pb"],
                    check=False)
            if r.returncode == 0:
                self.netem = True
            else:
                # no sch_netem in this kernel: put a user-space bridge in the middle instead
                run("ip", "link", "del", f"r{tag}pm", ns=ns["pb"])
                self._netns(ns["wr"])
                self._veth("a", ns["pb"], f"r{tag}pm", ns["wr"], f"r{tag}wa")
                self._veth("b", ns["wr"], f"r{tag}wb", ns["mi"], self.mirror_if)
                for dev in (f"r{tag}wa", f"r{tag}wb"):
                    run("ip", "link", "set", dev, "promisc", "on", ns=ns["wr"])
                self.report = tmp / "impair.json"
                p = subprocess.Popen(["ip", "netns", "exec", ns["wr"], PY, str(TOOLS / "impair_bridge.py"),
                                      f"r{tag}wa", f"r{tag}wb", "--ports", "16000-16999",
                                      "--loss", str(impair["loss"]), "--reorder", str(impair["reorder"]),
                                      "--window", "5:140", "--seed", "7", "--report", str(self.report),
                                      "--timeout", "240"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                assert p.stdout.readline().strip() == "ready", p.stderr.read()
                self.bridge = p
        run("ip", "addr", "add", "10.70.2.1/24", "dev", f"r{tag}pm", ns=ns["pb"])
        run("ip", "addr", "add", "10.70.2.2/24", "dev", self.mirror_if, ns=ns["mi"])
        run("ip", "route", "add", "default", "via", "10.70.1.1", ns=ns["ph"])
        # the mirror host only listens: it must not route the copies anywhere
        run("sysctl", "-q", "-w", "net.ipv4.ip_forward=0", ns=ns["mi"])
        # resolve the TEE gateway's MAC now, so the first mirrored packets are not queued on ARP
        run(PY, "-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'arp', "
            "('10.70.2.2', 9))", ns=ns["pb"])
        time.sleep(0.2)

    def _netns(self, name):
        run("ip", "netns", "add", name)
        self.made.append(name)
        run("ip", "link", "set", "lo", "up", ns=name)

    def _veth(self, _, ns_a, a, ns_b, b):
        run("ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b)
        run("ip", "link", "set", a, "up", ns=ns_a)
        run("ip", "link", "set", b, "up", ns=ns_b)

    def popen(self, ns, *cmd, cwd=None):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[ns], *map(str, cmd)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=cwd)
        self.procs.append(p)
        return p

    def close(self):
        bridge = getattr(self, "bridge", None)
        if bridge is not None and bridge.poll() is None:
            bridge.send_signal(signal.SIGTERM)
            bridge.wait(10)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for name in self.made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def rtp_pcap(path, tag):
    """The RTP a sipp side plays: SECONDS of a tone, 20 ms A-law packets."""
    a, b = Party("10.99.0.1", 5060, 16000, "x"), Party("10.99.0.2", 5060, 16100, "y")
    pcm = tone(FREQ[tag], int(SECONDS * 8000))
    pkts = callgen.rtp_packets(a, b, 1.0, pcm, ssrc=0x5EED0000 + SEQ0[tag], seq0=SEQ0[tag], ts0=SEQ0[tag] * 160)
    netgen.write_pcap(str(path), [(t, netgen.link(1, ip)) for t, _, ip in pkts], 1)
    return pcm


def mangle(topo):
    """The pbx's mangle table, without the comment lines (timestamps) and counters."""
    out = run("iptables-save", "-t", "mangle", ns=topo.ns["pb"]).stdout
    return [line.split(" [")[0] if line.startswith(":") else line
            for line in out.splitlines() if line and not line.startswith("#")]


def run_calls(tmp: Path, impair: dict | None):
    topo = Topology(impair, tmp)
    try:
        pcm = {}
        for side, tag in (("uac", "caller"), ("uas", "callee")):
            d = tmp / side
            d.mkdir()
            pcm[tag] = rtp_pcap(d / f"{side}_audio.pcap", tag)
        recv, files = tmp / "recv", tmp / "files"
        sink = topo.popen("mi", PY, "-m", "rtp2ws.cli", "sink", "--listen", "127.0.0.1:0", "--out-dir", recv)
        url = sink.stdout.readline().split()[-1]
        assert url.startswith("ws://"), sink.stderr.read()
        live = topo.popen("mi", PY, "-m", "rtp2ws.cli", "live", "-i", topo.mirror_if, "--sip-ports", "5060",
                          "--rtp-ports", "16000-16999", "--ws-url", url + "/audio", "--out-dir", files,
                          "--stats-interval", "5")
        before = mangle(topo)
        run("bash", TEE, "up", "--gateway", "10.70.2.2", "--sip-ports", "5060", "--rtp-ports", "16000-16999",
            ns=topo.ns["pb"])
        wait_for_line(live.stderr, "capturing on", 30)    # the capture is open before any call
        sipp = ["sipp", "-nostdin", "-timeout", "90s", "-timeout_error", "-trace_err"]
        uas = topo.popen("pb", *sipp, "-sf", TOOLS / "uas_play.xml", "-i", "10.70.1.1", "-p", "5060",
                         "-mi", "10.70.1.1", "-mp", "16100", "-m", CALLS, cwd=tmp / "uas")
        time.sleep(0.5)
        uac = run(*sipp, "10.70.1.1:5060", "-sf", TOOLS / "uac_play.xml", "-i", "10.70.1.2", "-p", "5060",
                  "-mi", "10.70.1.2", "-mp", "16000", "-m", CALLS, "-l", "1", "-d", int(SECONDS * 1000 + 800),
                  ns=topo.ns["ph"], cwd=tmp / "uac", timeout=120, check=False)
        assert uac.returncode == 0, uac.stdout[-2000:] + uac.stderr[-2000:]
        uas.wait(30)
        time.sleep(1.0)
        live.send_signal(signal.SIGTERM)
        out, err = live.communicate(timeout=60)
        assert live.returncode == 0, err
        run("bash", TEE, "down", ns=topo.ns["pb"])
        after = mangle(topo)
        sink.send_signal(signal.SIGTERM)
        sink.wait(20)
        bridge = getattr(topo, "bridge", None)
        if bridge is not None:
            bridge.send_signal(signal.SIGTERM)
            bridge.wait(20)
        report = json.loads(topo.report.read_text()) if bridge is not None else None
        return {"recv": recv, "files": files, "pcm": pcm, "before": before, "after": after,
                "live_out": out, "live_err": err, "report": report, "netem": topo.netem}
    finally:
        topo.close()


def streams(recv: Path):
    msgs = [json.loads(line)["message"] for line in (recv / "messages.jsonl").read_text().splitlines()]
    by_id = {}
    for m in msgs:
        by_id.setdefault(m["stream_id"], []).append(m)
    return by_id


def expected(pcm):
    return callgen.expected_16k(pcm)


def test_live_mirror_end_to_end(tmp_path):
    r = run_calls(tmp_path, impair=None)
    assert r["after"] == r["before"]                     # tee.sh down left mangle as it found it
    by_id = streams(r["recv"])
    starts = [ms[0] for ms in by_id.values()]
    assert len({s["call_id"] for s in starts}) == CALLS  # every call arrived
    assert sorted(s["tag"] for s in starts) == sorted(["callee", "caller"] * CALLS)
    for ms in by_id.values():
        start, end = ms[0], ms[-1]
        assert start["type"] == "start" and end["type"] == "end"
        assert end["reason"] == "bye", end
        assert end["lost"] == 0 and end["late"] == 0
    # each leg's audio is exactly the G.711 sipp sent, decoded and resampled
    for wav in r["recv"].rglob("*.wav"):
        tag = "caller" if wav.name.startswith("caller") else "callee"
        got, rate, _ = read_wav(str(wav))
        assert rate == 16000
        assert np.array_equal(got, expected(r["pcm"][tag])), wav
    manifest = json.loads((r["files"] / "calls.json").read_text())
    assert [c["end_reason"] for c in manifest["calls"]] == ["bye"] * CALLS
    assert "kernel" in r["live_out"] + r["live_err"]     # drops are reported at exit


def test_live_mirror_with_loss_and_reordering(tmp_path):
    r = run_calls(tmp_path, impair={"loss": 0.04, "reorder": 0.04})
    assert r["after"] == r["before"]
    by_id = streams(r["recv"])
    assert len({ms[0]["call_id"] for ms in by_id.values()}) == CALLS
    if r["netem"]:
        # netem: counts are random, but losses and reordering must show up somewhere
        ends = [ms[-1] for ms in by_id.values()]
        assert all(e["reason"] == "bye" for e in ends)
        assert sum(e["lost"] for e in ends) > 0 and sum(e["reordered"] for e in ends) > 0
        return
    report = r["report"]
    # the bridge says exactly which packets it dropped and which it delayed, per flow and call
    flows = {}
    for name, rep in report.items():
        flow, n = name.rsplit("#", 1)
        flows.setdefault(flow, {})[int(n)] = rep
    total_lost = total_reordered = 0
    for ms in by_id.values():
        start, end = ms[0], ms[-1]
        assert end["reason"] == "bye"
        rep = flows[f"{start['src']}-{start['dst']}"][_call_index(by_id, start)]
        assert end["lost"] == len(rep["dropped"]), (start["tag"], end, rep)
        assert end["reordered"] == len(rep["reordered"]) and end["late"] == 0
        total_lost += end["lost"]
        total_reordered += end["reordered"]
        got, _, _ = read_wav(str(r["recv"] / _wav_of(r["recv"], start)))
        want = expected(r["pcm"][start["tag"]])
        assert len(got) == len(want)                 # the timeline stays whole
        ok = np.ones(len(want), bool)
        for seq in rep["dropped"]:
            pos = (seq - SEQ0[start["tag"]]) * 320
            ok[max(0, pos - 64):pos + 320 + 64] = False
        assert np.array_equal(got[ok], want[ok])
    assert total_lost > 0 and total_reordered > 0


def _call_index(by_id, start):
    """Which call (in time order) a stream belongs to, for the bridge's per-call report."""
    order = sorted({ms[0]["call_id"]: ms[0]["start_time"] for ms in by_id.values()}.items(), key=lambda kv: kv[1])
    return [cid for cid, _ in order].index(start["call_id"])


def _wav_of(recv: Path, start):
    for line in (recv / "streams.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e.get("event") == "open" and e["stream_id"] == start["stream_id"]:
            return e["path"]
    raise AssertionError("stream not in streams.jsonl")
