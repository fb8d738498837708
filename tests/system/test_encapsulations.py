"""A call mirrored through every encapsulation the decoder opens (GRE, ERSPAN I/II/III,
IP in IP, VXLAN, over Ethernet and Linux cooked captures) replays to the same WAV files
and manifest legs as the call itself; the fast path (C and its Python twin) changes
nothing on them (``fastcheck.check_equivalent``)."""

from __future__ import annotations

import json

import pytest

from rtp2ws import cli
from rtp2ws.net.packet import DLT_EN10MB, DLT_LINUX_SLL, DLT_LINUX_SLL2

import callgen
import fastcheck
import netgen
from callgen import Call, Party, frames_of, rtp_packets, tone

A = Party("10.0.0.1", 5060, 4000, "1000")
B = Party("10.0.0.2", 5060, 5000, "2000")
A6 = Party("2001:db8::1", 5060, 4000, "1000")
B6 = Party("2001:db8::2", 5060, 5000, "2000")


def _call(a: Party, b: Party) -> list:
    c = Call(f"tunnel-{a.ip}@test", a, b)
    return frames_of(c.setup(100), rtp_packets(a, b, 100.1, tone(440, 8000), ssrc=1),
                     rtp_packets(b, a, 100.1, tone(650, 8000), ssrc=2, law="ulaw", pt=0), c.bye(101.2))


def _vxlan(ip: bytes) -> bytes:
    return netgen.udp("172.31.0.5", 55000, "172.31.0.9", 4789, b"\x08\0\0\0\0\0\x01\0" + netgen.ethernet(ip))


def _replay(tmp_path, name, frames, linktype=DLT_EN10MB) -> tuple[dict, dict]:
    path = callgen.write(tmp_path / f"{name}.pcap", frames, linktype)
    out = tmp_path / name
    assert cli.main(["replay", path, "--out-dir", str(out), "--no-progress"]) == 0
    manifest = json.loads((out / "calls.json").read_text())
    wavs = {p.name: p.read_bytes() for p in sorted(out.rglob("*.wav"))}
    return manifest, wavs


def _legs(manifest: dict) -> list:
    return [[{k: v for k, v in leg.items() if k not in ("wav",)} for leg in call["legs"]]
            for call in manifest["calls"]]


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_a_call_in_every_tunnel_replays_to_the_same_wavs(tmp_path, fam):
    a, b = (A, B) if fam == "v4" else (A6, B6)
    frames = _call(a, b)
    ref_manifest, ref_wavs = _replay(tmp_path, "plain", frames)
    assert len(ref_wavs) == 2 and all(len(w) > 30000 for w in ref_wavs.values())
    wrapped = {kind: lambda ip, kind=kind: netgen.tunnel(kind, ip) for kind in netgen.TUNNELS}
    wrapped["vxlan"] = _vxlan
    for kind, wrap in wrapped.items():
        for linktype in (DLT_EN10MB, DLT_LINUX_SLL2) if kind in ("erspan3-sub", "gre") else (DLT_EN10MB,):
            manifest, wavs = _replay(tmp_path, f"{kind}-{linktype}", [(t, wrap(ip)) for t, ip in frames], linktype)
            assert wavs == ref_wavs, kind
            assert _legs(manifest) == _legs(ref_manifest), kind


@pytest.mark.parametrize("kind,linktype", [("erspan3-sub", DLT_EN10MB), ("gretap", DLT_LINUX_SLL),
                                           ("ipip6", DLT_LINUX_SLL2)])
def test_the_fast_path_changes_nothing_on_tunnelled_calls(tmp_path, kind, linktype):
    frames = [(t, netgen.tunnel(kind, ip)) for t, ip in _call(A, B)]
    path = callgen.write(tmp_path / "t.pcap", frames, linktype)
    fastcheck.check_equivalent(path, budgets=(1024,), delivers=(0,), flushes=(0,), sharded=False)
