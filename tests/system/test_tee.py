"""deploy/iptables/tee.sh, exercised with real packets in network namespaces.

Topology (all created here, deleted in a finalizer; the host's own tables are never
touched)::

    peer ns                    pbx ns                          mirror ns
    q0 10.77.2.2  <--veth-->  q1 10.77.2.1   p0 10.77.1.1  <--veth-->  m0 10.77.1.2
       fd77:0:0:2::2             fd77:0:0:2::1  fd77::1                    fd77::2

The PBX talks to the peer only; nothing in the tests sends anything to the mirror
namespace while it captures, so every UDP/TCP packet seen on m0 is a TEE clone.  The
clones keep their original addresses (10.77.2.x), which the mirror does not own.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time

import pytest

from paths import ROOT

SCRIPT = ROOT / "deploy" / "iptables" / "tee.sh"

PID = os.getpid()
NS_PBX = f"rtwpbx{PID}"
NS_MIRROR = f"rtwmir{PID}"
NS_PEER = f"rtwpeer{PID}"

PBX_MIRROR_SIDE = "10.77.1.1"
MIRROR = "10.77.1.2"
PBX = "10.77.2.1"
PEER = "10.77.2.2"
PBX6_MIRROR_SIDE = "fd77::1"
MIRROR6 = "fd77::2"
PBX6 = "fd77:0:0:2::1"
PEER6 = "fd77:0:0:2::2"

UP_ARGS = ["--gateway", MIRROR, "--sip-ports", "5060,5080", "--rtp-ports", "16384-32768"]
TIMEOUT = 30  # seconds, for every subprocess

# Captures on one interface with AF_PACKET until stdin closes (plus a short drain) or
# 20 s pass, then prints the UDP/TCP datagrams it saw as JSON, IPv4 fragments reassembled.
READER = r'''
import json, os, select, socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((sys.argv[1], 0))
print("ready", flush=True)
frames, stdin_open, drain_until = [], True, None
deadline = time.monotonic() + 20
while time.monotonic() < deadline and (drain_until is None or time.monotonic() < drain_until):
    fds = [s] + ([sys.stdin] if stdin_open else [])
    r, _, _ = select.select(fds, [], [], 0.05)
    if s in r:
        data, addr = s.recvfrom(65535)
        if addr[2] != socket.PACKET_OUTGOING:
            frames.append(data)
    if stdin_open and sys.stdin in r and not os.read(sys.stdin.fileno(), 100):
        stdin_open, drain_until = False, time.monotonic() + 0.5

def record(v, src, dst, proto, body, nfrags):
    if len(body) < 8:
        return None
    sport, dport = struct.unpack_from("!HH", body)
    rec = {"v": v, "src": src, "dst": dst, "proto": proto, "sport": sport, "dport": dport,
           "frags": nfrags}
    if proto == 17:
        payload = body[8:]
        rec["len"] = len(payload)
        rec["tag"] = payload.split(b"|")[0].decode("ascii", "replace") if payload.startswith(b"T:") else None
    else:
        rec["flags"] = body[13]
    return rec

out, frags, raw4frags = [], {}, 0
for f in frames:
    (ethertype,) = struct.unpack_from("!H", f, 12)
    ip = f[14:]
    if ethertype == 0x0800:
        ihl = (ip[0] & 15) * 4
        (total,) = struct.unpack_from("!H", ip, 2)
        ip = ip[:total]
        ident, fo = struct.unpack_from("!HH", ip, 4)
        proto = ip[9]
        src, dst = socket.inet_ntop(socket.AF_INET, ip[12:16]), socket.inet_ntop(socket.AF_INET, ip[16:20])
        if proto not in (6, 17):
            continue
        off, more = (fo & 0x1FFF) * 8, bool(fo & 0x2000)
        if off == 0 and not more:
            rec = record(4, src, dst, proto, ip[ihl:], 1)
            if rec: out.append(rec)
        else:
            raw4frags += 1
            frags.setdefault((src, dst, proto, ident), {})[off] = (ip[ihl:], more)
    elif ethertype == 0x86DD:
        nh = ip[6]
        (plen,) = struct.unpack_from("!H", ip, 4)
        if nh in (6, 17):
            rec = record(6, socket.inet_ntop(socket.AF_INET6, ip[8:24]),
                         socket.inet_ntop(socket.AF_INET6, ip[24:40]), nh, ip[40:40 + plen], 1)
            if rec: out.append(rec)

incomplete = []
for (src, dst, proto, ident), parts in frags.items():
    data, pos, done = b"", 0, False
    for off in sorted(parts):
        body, more = parts[off]
        if off != pos:
            break
        data += body
        pos += len(body)
        if not more:
            done = True
            break
    rec = record(4, src, dst, proto, data, len(parts)) if done else None
    if rec:
        out.append(rec)
    else:
        incomplete.append({"src": src, "dst": dst, "offsets": sorted(parts)})
print(json.dumps({"datagrams": out, "incomplete": incomplete, "fragments": raw4frags}))
'''

# Sends the datagrams (and TCP connection attempts) described in argv[1], in order.
SENDER = r'''
import json, socket, sys, time
for p in json.loads(sys.argv[1]):
    fam = socket.AF_INET6 if ":" in p["dst"] else socket.AF_INET
    tcp = p.get("tcp", False)
    s = socket.socket(fam, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((p["src"], p["sport"]))
    if tcp:
        s.settimeout(2)
        try:
            s.connect((p["dst"], p["dport"]))
        except OSError:
            pass
    else:
        payload = ("T:%s|" % p["tag"]).encode()
        payload += b"x" * max(0, p.get("size", 0) - len(payload))
        s.sendto(payload, (p["dst"], p["dport"]))
    s.close()
    time.sleep(0.01)
'''


def ns_run(ns: str, *args: str, env: dict | None = None, check: bool = False,
           user: int | None = None) -> subprocess.CompletedProcess:
    cmd = ["ip", "netns", "exec", ns]
    if user is not None:
        cmd += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=TIMEOUT,
                          env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return proc


def tee(*args: str, env: dict | None = None, ns: str = NS_PBX, user: int | None = None
        ) -> subprocess.CompletedProcess:
    return ns_run(ns, "bash", str(SCRIPT), *args, env=env, user=user)


def tee_ok(*args: str) -> subprocess.CompletedProcess:
    proc = tee(*args)
    assert proc.returncode == 0, f"tee.sh {' '.join(args)} -> {proc.returncode}\n{proc.stderr}{proc.stdout}"
    return proc


def mangle(family: int = 4) -> str:
    """iptables-save -t mangle of the pbx namespace, without comments and counters."""
    tool = "ip6tables-save" if family == 6 else "iptables-save"
    text = ns_run(NS_PBX, tool, "-t", "mangle", check=True).stdout
    lines = [re.sub(r"\s*\[\d+:\d+\]", "", line) for line in text.splitlines()
             if line and not line.startswith("#")]
    return "\n".join(lines) + "\n"


def jumps(save: str, hook: str, chain: str = "RTP2WS_TEE") -> list[str]:
    return [line for line in save.splitlines()
            if line.startswith(f"-A {hook} ") and line.endswith(f"-j {chain}")]


class Capture:
    """AF_PACKET capture in a namespace, running while the with-block sends packets."""

    def __init__(self, ns: str, ifname: str) -> None:
        self.ns, self.ifname = ns, ifname
        self.result: dict = {}

    def __enter__(self) -> Capture:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-c", READER, self.ifname],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.proc.kill()
            _, err = self.proc.communicate(timeout=TIMEOUT)
            raise AssertionError(f"capture on {self.ns}/{self.ifname} did not start: {err!r}")
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)  # let the last clones arrive
        try:
            out, err = self.proc.communicate(input=b"", timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=TIMEOUT)
            raise
        if exc[0] is None:
            assert self.proc.returncode == 0, err.decode()
            self.result = json.loads(out)

    @property
    def datagrams(self) -> list[dict]:
        return self.result["datagrams"]

    def tagged(self) -> dict[str, list[dict]]:
        by_tag: dict[str, list[dict]] = {}
        for d in self.datagrams:
            if d.get("tag"):
                by_tag.setdefault(d["tag"][2:], []).append(d)
        return by_tag


def send(ns: str, packets: list[dict]) -> None:
    ns_run(ns, sys.executable, "-c", SENDER, json.dumps(packets), check=True)


def pkt(tag: str, src: str, sport: int, dst: str, dport: int, size: int = 0) -> dict:
    return {"tag": tag, "src": src, "sport": sport, "dst": dst, "dport": dport, "size": size}


# ------------------------------------------------------------------------------ fixtures

def _sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def topo():
    if os.geteuid() != 0:
        pytest.skip("tee.sh tests need root (network namespaces and iptables)")
    made: list[str] = []

    def teardown() -> None:
        for ns in made:
            _sh("ip", "netns", "del", ns)

    try:
        for ns in (NS_PBX, NS_MIRROR, NS_PEER):
            proc = _sh("ip", "netns", "add", ns)
            if proc.returncode != 0:
                pytest.skip(f"cannot create network namespaces (ip netns add: {proc.stderr.strip()})")
            made.append(ns)
        steps = [
            ["ip", "link", "add", "p0", "netns", NS_PBX, "type", "veth", "peer", "name", "m0",
             "netns", NS_MIRROR],
            ["ip", "link", "add", "q1", "netns", NS_PBX, "type", "veth", "peer", "name", "q0",
             "netns", NS_PEER],
        ]
        for ns, ifs in ((NS_PBX, {"p0": (PBX_MIRROR_SIDE, PBX6_MIRROR_SIDE), "q1": (PBX, PBX6)}),
                        (NS_MIRROR, {"m0": (MIRROR, MIRROR6)}),
                        (NS_PEER, {"q0": (PEER, PEER6)})):
            steps.append(["ip", "-n", ns, "link", "set", "lo", "up"])
            for ifname, (a4, a6) in ifs.items():
                steps += [
                    ["ip", "-n", ns, "addr", "add", f"{a4}/24", "dev", ifname],
                    ["ip", "-n", ns, "addr", "add", f"{a6}/64", "dev", ifname, "nodad"],
                    ["ip", "-n", ns, "link", "set", ifname, "up"],
                ]
        for step in steps:
            proc = _sh(*step)
            assert proc.returncode == 0, f"{step}: {proc.stderr}"
        # Resolve the neighbours once (the clones would wait in the neighbour queue anyway).
        send(NS_PBX, [pkt("warm", PBX_MIRROR_SIDE, 40999, MIRROR, 9),
                      pkt("warm", PBX6_MIRROR_SIDE, 40999, MIRROR6, 9),
                      pkt("warm", PBX, 40999, PEER, 9), pkt("warm", PBX6, 40999, PEER6, 9)])
        send(NS_PEER, [pkt("warm", PEER, 40999, PBX, 9), pkt("warm", PEER6, 40999, PBX6, 9)])
        # Wait (bounded) until they are resolved, so that no warm-up packet is still
        # queued when a test starts capturing.
        for ns, addr in ((NS_PBX, MIRROR), (NS_PBX, MIRROR6), (NS_PBX, PEER), (NS_PBX, PEER6),
                         (NS_PEER, PBX), (NS_PEER, PBX6)):
            for _ in range(100):
                if "lladdr" in _sh("ip", "-n", ns, "neigh", "show", addr).stdout:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"{ns}: neighbour {addr} not resolved within 5 s")
        time.sleep(0.3)
        yield
    finally:
        teardown()


@pytest.fixture(autouse=True)
def clean(request):
    if "topo" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("topo")
    yield
    tee("down")
    for tool in ("iptables", "ip6tables"):
        for op in ("-F", "-X"):
            ns_run(NS_PBX, tool, "-t", "mangle", op)


# ---------------------------------------------------------------------------------- tests

def test_mirrors_exactly_sip_and_rtp_in_both_directions(topo):
    tee_ok("up", *UP_ARGS)
    outbound = [
        pkt("sip-dport", PBX, 40000, PEER, 5060),
        pkt("sip-sport", PBX, 5080, PEER, 40001),
        pkt("sip-both", PBX, 5060, PEER, 5060),
        pkt("sip-from-rtp-port", PBX, 20000, PEER, 5060),  # fits SIP and RTP: one copy
        pkt("rtp-low", PBX, 16384, PEER, 40002),
        pkt("rtp-high", PBX, 40003, PEER, 32768),
        pkt("rtp-both", PBX, 30000, PEER, 30002),
        pkt("other", PBX, 40004, PEER, 9999),
        pkt("below-range", PBX, 40005, PEER, 16383),
        pkt("above-range", PBX, 40006, PEER, 32769),
        pkt("sip-big-out", PBX, 5060, PEER, 5060, size=4000),
    ]
    inbound = [
        pkt("in-sip", PEER, 40010, PBX, 5060),
        pkt("in-rtp", PEER, 18000, PBX, 18002),
        pkt("in-other", PEER, 40011, PBX, 8000),
        pkt("in-sip-big", PEER, 40012, PBX, 5080, size=4000),  # arrives as 3 fragments
    ]
    with Capture(NS_MIRROR, "m0") as mirror, Capture(NS_PEER, "q0") as peer:
        send(NS_PBX, outbound)
        send(NS_PEER, inbound)

    copies = mirror.tagged()
    expected = {p["tag"]: p for p in outbound + inbound
                if p["tag"] not in ("other", "below-range", "above-range", "in-other")}
    assert sorted(copies) == sorted(expected), mirror.datagrams
    for tag, p in expected.items():
        assert len(copies[tag]) == 1, f"{tag}: {len(copies[tag])} copies"
        c = copies[tag][0]
        assert (c["src"], c["sport"], c["dst"], c["dport"]) == (p["src"], p["sport"], p["dst"], p["dport"]), tag
        assert c["len"] == max(p["size"], len(f"T:{tag}|")), tag
    assert copies["sip-big-out"][0]["frags"] > 1 and copies["in-sip-big"][0]["frags"] > 1
    # Only clones reach the mirror: nothing addressed to it, no UDP/TCP beyond the copies.
    assert all(d["dst"] in (PBX, PEER) for d in mirror.datagrams), mirror.datagrams
    assert len(mirror.datagrams) == len(expected)
    assert mirror.result["incomplete"] == []
    # The originals went on to the peer untouched, each once, mirrored or not.
    got = peer.tagged()
    for p in outbound:
        assert len(got.get(p["tag"], [])) == 1, p["tag"]
        assert got[p["tag"]][0]["dst"] == PEER


def test_sip_tcp_and_no_fragments(topo):
    syn = [{"tcp": True, "src": PBX, "sport": 40020, "dst": PEER, "dport": 5060}]
    big_in = [pkt("big", PEER, 40021, PBX, 5060, size=4000)]

    tee_ok("up", *UP_ARGS)
    with Capture(NS_MIRROR, "m0") as mirror:
        send(NS_PBX, syn)
    assert not [d for d in mirror.datagrams if d["proto"] == 6], "TCP mirrored without --sip-tcp"

    tee_ok("up", *UP_ARGS, "--sip-tcp", "--no-fragments")
    with Capture(NS_MIRROR, "m0") as mirror:
        send(NS_PBX, syn)
        send(NS_PEER, big_in)
    tcp = [d for d in mirror.datagrams if d["proto"] == 6]
    # The SYN going out and the peer's RST coming back (no listener on 5060).
    assert {(d["sport"], d["dport"]) for d in tcp} == {(40020, 5060), (5060, 40020)}, tcp
    # Without the fragment rule only the first fragment (it has the UDP header) is copied.
    assert mirror.tagged() == {}
    assert len(mirror.result["incomplete"]) == 1 and mirror.result["incomplete"][0]["offsets"] == [0]


def test_up_is_idempotent(topo):
    tee_ok("up", *UP_ARGS)
    once = mangle()
    tee_ok("up", *UP_ARGS)
    twice = mangle()
    assert twice == once
    assert len(jumps(twice, "PREROUTING")) == 1 and len(jumps(twice, "POSTROUTING")) == 1
    assert twice.count("-j TEE --gateway") == 3  # SIP, RTP, fragments

    # Other arguments replace the rules and the jumps, still one jump each.
    tee_ok("up", f"--gateway={MIRROR}", "--sip-ports", "5060", "--interface", "q1")
    changed = mangle()
    assert jumps(changed, "PREROUTING") == ["-A PREROUTING -i q1 -j RTP2WS_TEE"]
    assert jumps(changed, "POSTROUTING") == ["-A POSTROUTING -o q1 -j RTP2WS_TEE"]
    assert "--ports 5060 -j TEE" in changed and "5080" not in changed

    # More than 15 multiport slots are split over several rules.
    many = ",".join(str(p) for p in range(5060, 5080))
    tee_ok("up", "--gateway", MIRROR, "--sip-ports", many)
    assert mangle().count("-j TEE --gateway") == 4


def test_down_restores_the_table_exactly(topo):
    for tool in ("iptables", "ip6tables"):
        for rule in (["-A", "PREROUTING", "-p", "tcp", "--dport", "22", "-j", "MARK", "--set-mark", "7"],
                     ["-A", "POSTROUTING", "-p", "udp", "--dport", "53", "-j", "RETURN"],
                     ["-N", "OTHER"], ["-A", "OTHER", "-j", "RETURN"],
                     ["-A", "POSTROUTING", "-j", "OTHER"]):
            ns_run(NS_PBX, tool, "-t", "mangle", *rule, check=True)
    before4, before6 = mangle(4), mangle(6)

    tee_ok("up", *UP_ARGS, "--gateway6", MIRROR6, "--sip-tcp")
    up4, up6 = mangle(4), mangle(6)
    assert "RTP2WS_TEE" in up4 and "RTP2WS_TEE" in up6
    # The user's rules are still there, after our jump.
    assert jumps(up4, "PREROUTING") == ["-A PREROUTING ! -i lo -j RTP2WS_TEE"]
    pre = [line for line in up4.splitlines() if line.startswith("-A PREROUTING")]
    assert len(pre) == 2 and pre[0].endswith("-j RTP2WS_TEE") and "-j MARK" in pre[1]

    proc = tee_ok("down")
    assert "removed" in proc.stdout
    assert mangle(4) == before4
    assert mangle(6) == before6

    proc = tee_ok("down")
    assert "nothing to remove" in proc.stdout
    assert mangle(4) == before4 and mangle(6) == before6


def test_status(topo):
    proc = tee("status")
    assert proc.returncode == 3 and "not installed" in proc.stdout

    tee_ok("up", *UP_ARGS)
    send(NS_PBX, [pkt(f"s{i}", PBX, 40030 + i, PEER, 5060) for i in range(3)])
    proc = tee("status")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "IPv4: installed" in proc.stdout
    counters = [(int(m[1]), m[2]) for m in
                re.finditer(r"^\s*\d+\s+(\d+)\s+\d+\s+TEE\s.*ports (\S+)", proc.stdout, re.M)]
    # 3 datagrams sent, 6 counted: each clone passes POSTROUTING on its way to the
    # gateway and matches again (TEE then does nothing, the kernel never clones a clone).
    assert (6, "5060,5080") in counters, proc.stdout
    assert "jump from PREROUTING" in proc.stdout and "jump from POSTROUTING" in proc.stdout

    # A jump removed behind the script's back: not fully installed.
    ns_run(NS_PBX, "iptables", "-t", "mangle", "-D", "POSTROUTING", "1", check=True)
    proc = tee("status")
    assert proc.returncode == 3 and "INCOMPLETE" in proc.stdout

    tee_ok("down")
    assert tee("status").returncode == 3


def test_ipv6(topo):
    tee_ok("up", *UP_ARGS, "--gateway6", MIRROR6)
    save6 = mangle(6)
    assert f"-j TEE --gateway {MIRROR6}" in save6
    assert len(jumps(save6, "PREROUTING")) == 1 and len(jumps(save6, "POSTROUTING")) == 1
    assert "IPv6: installed" in tee("status").stdout

    with Capture(NS_MIRROR, "m0") as mirror:
        send(NS_PBX, [pkt("v6-sip", PBX6, 40040, PEER6, 5060),
                      pkt("v6-other", PBX6, 40041, PEER6, 9999)])
        send(NS_PEER, [pkt("v6-rtp-in", PEER6, 20000, PBX6, 20002)])
    copies = mirror.tagged()
    assert sorted(copies) == ["v6-rtp-in", "v6-sip"], mirror.result
    assert copies["v6-sip"][0]["dst"] == PEER6 and copies["v6-sip"][0]["v"] == 6
    assert copies["v6-rtp-in"][0]["dst"] == PBX6 and len(copies["v6-rtp-in"]) == 1

    # up without --gateway6 takes the IPv6 rules away again; down removes the rest.
    proc = tee_ok("up", *UP_ARGS)
    assert "RTP2WS_TEE" not in mangle(6) and "removing the IPv6 rules" in proc.stderr
    tee_ok("up", *UP_ARGS, "--gateway6", MIRROR6)
    tee_ok("down")
    assert "RTP2WS_TEE" not in mangle(6) and "RTP2WS_TEE" not in mangle(4)


@pytest.mark.parametrize("args, message", [
    (["up", "--gateway", "300.1.1.1"], "not an IPv4 address"),
    (["up", "--gateway", "10.77.1"], "not an IPv4 address"),
    (["up", "--gateway", "224.0.0.5"], "multicast"),
    (["up", "--gateway", MIRROR, "--rtp-ports", "32768-16384"], "reversed"),
    (["up", "--gateway", MIRROR, "--sip-ports", "5060,abc"], "'abc' is not a port"),
    (["up", "--gateway", MIRROR, "--sip-ports", "70000"], "out of range"),
    (["up", "--gateway", MIRROR, "--sip-ports", "5060,,5080"], "empty item"),
    (["up", "--gateway", MIRROR, "--bogus"], "unknown option '--bogus'"),
    (["up", "--gateway"], "needs a value"),
    (["up"], "needs --gateway"),
    (["up", "--gateway6", "fd77::zz"], "not an IPv6 address"),
    (["up", "--gateway6", "fe80::1"], "link-local"),
    (["up", "--gateway", MIRROR, "--chain", "bad name!"], "not a valid chain name"),
    (["up", "--gateway", MIRROR, "--chain", "POSTROUTING"], "built-in name"),
    (["sideways"], "unknown command 'sideways'"),
    (["up", "down"], "one command only"),
    ([], "no command"),
    (["up", "--gateway", PBX], "address of this host"),
    (["up", "--gateway", "10.77.9.5"], "not reachable"),
])
def test_bad_arguments_exit_2_without_changes(topo, args, message):
    before = mangle()
    proc = tee(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    assert mangle() == before


def test_gateway_behind_a_router_is_refused(topo):
    ns_run(NS_PBX, "ip", "route", "add", "10.77.9.0/24", "via", PEER, check=True)
    try:
        before = mangle()
        proc = tee("up", "--gateway", "10.77.9.5")
        assert proc.returncode == 2
        assert "not on a directly connected network" in proc.stderr
        assert mangle() == before
    finally:
        ns_run(NS_PBX, "ip", "route", "del", "10.77.9.0/24")


def test_not_root(topo):
    proc = tee("up", *UP_ARGS, user=65534)
    assert proc.returncode == 2 and "must be run as root" in proc.stderr
    assert "RTP2WS_TEE" not in mangle()
    # --dry-run works without root: it shows what a clean install runs.
    proc = tee("up", *UP_ARGS, "--dry-run", user=65534)
    assert proc.returncode == 0, proc.stderr
    assert f"-j TEE --gateway {MIRROR}" in proc.stdout


def test_dry_run_changes_nothing(topo):
    before4, before6 = mangle(4), mangle(6)
    proc = tee_ok("up", *UP_ARGS, "--gateway6", MIRROR6, "--dry-run")
    out = proc.stdout
    assert (f"iptables -w 10 -t mangle -A RTP2WS_TEE -p udp -m multiport --ports 5060,5080 "
            f"-j TEE --gateway {MIRROR}") in out
    assert "iptables -w 10 -t mangle -I PREROUTING 1 ! -i lo -j RTP2WS_TEE" in out
    assert "iptables -w 10 -t mangle -I POSTROUTING 1 ! -o lo -j RTP2WS_TEE" in out
    assert f"ip6tables -w 10 -t mangle -A RTP2WS_TEE -p udp -m frag -j TEE --gateway {MIRROR6}" in out
    assert mangle(4) == before4 and mangle(6) == before6

    tee_ok("up", *UP_ARGS)
    installed = mangle()
    proc = tee_ok("down", "--dry-run")
    assert "iptables -w 10 -t mangle -X RTP2WS_TEE" in proc.stdout
    assert mangle() == installed


@pytest.mark.parametrize("mode", ["extension", "kernel"])
def test_missing_tee_target_exit_2_without_changes(topo, tmp_path, mode):
    real = shutil.which("iptables")
    assert real
    if mode == "extension":  # libxt_TEE.so missing: every use of -j TEE fails
        cond = '" $* " == *" TEE "*'
        msg = "iptables v1.8.9: Couldn't load target `TEE':No such file or directory"
    else:  # userspace fine, the kernel refuses the rule
        cond = '" $* " == *" -A "*" TEE "*'
        msg = "Warning: Extension TEE revision 0 not supported, missing kernel module?"
    shim = tmp_path / "iptables"
    shim.write_text(f'#!/bin/bash\nif [[ {cond} ]]; then echo "{msg}" >&2; exit 2; fi\n'
                    f'exec {real} "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}")
    before = mangle()
    proc = tee("up", *UP_ARGS, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "TEE" in proc.stderr and "modprobe xt_TEE" in proc.stderr
    assert "CONFIG_NETFILTER_XT_TARGET_TEE" in proc.stderr
    assert "Nothing was changed" in proc.stderr
    assert mangle() == before  # not even the probe chain is left


def test_help():
    proc = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0
    for word in ("up", "down", "status", "--gateway6", "--sip-ports", "--rtp-ports",
                 "--sip-tcp", "--chain", "--dry-run"):
        assert word in proc.stdout
