"""``rtp2ws.sinks.wav.WavSink``: where files go (``calls/<name>/`` beside the run's own
files), when they are made (with the first audio), and the journal mode live uses
(``calls.jsonl``, a line per call as it ends, nothing kept)."""

import json
import os

import numpy as np
import pytest

from rtp2ws import cli
from rtp2ws.pipeline.sink import Sink, Tee
from rtp2ws.run.replay import replay
from rtp2ws.sinks.wav import WavSink, read_wav, safe_name

import callgen
from callgen import Call, Party, expected_16k, frames_of, rtp_packets, tone

A_IP, B_IP = "10.0.0.1", "10.0.0.2"
CALLS_DIR, MANIFEST, JOURNAL = "calls", "calls.json", "calls.jsonl"      # the documented layout


def talking_call(call_id: str, i: int, t0: float, n: int = 1600, seconds: float = 0.4) -> tuple[list, np.ndarray]:
    """Call ``i`` (its own RTP ports, its own tone on the caller leg): setup, audio, BYE."""
    a = Party(A_IP, 5060, 4000 + 2 * i, "1000")
    b = Party(B_IP, 5060, 5000 + 2 * i, "2000")
    c = Call(call_id, a, b, from_tag=f"f{i}")
    pcm = tone(300 + 37 * i, n)
    frames = frames_of(c.setup(t0), rtp_packets(a, b, t0 + 0.1, pcm, ssrc=0x1000 + i), c.bye(t0 + seconds))
    return frames, pcm


def silent_call(call_id: str, i: int, t0: float) -> list:
    """An INVITE with SDP and nothing after it (what an INVITE flood sends)."""
    a = Party(A_IP, 5060, 20000 + 2 * i, "1000")
    b = Party(B_IP, 5060, 30000 + 2 * i, "2000")
    return Call(call_id, a, b, from_tag=f"s{i}").request(t0, "INVITE", body=callgen.sdp(A_IP, a.rtp_port),
                                                        to_tag=False)


def replay_to_dir(tmp_path, frames, *args) -> tuple[int, dict, str]:
    path = callgen.write(tmp_path / "c.pcap", sorted(frames, key=lambda f: f[0]))
    out = tmp_path / "out"
    rc = cli.main(["replay", path, "--out-dir", str(out), "--no-progress", *args])
    with open(out / MANIFEST) as f:
        return rc, json.load(f), str(out)


def caller_wav(out: str, call: dict) -> np.ndarray:
    (leg,) = [x for x in call["legs"] if x["tag"] == "caller"]
    data, rate, _ = read_wav(os.path.join(out, leg["wav"]))
    assert rate == 16000
    return data


# --------------------------------------------------------------------------- names

def test_folder_names():
    from rtp2ws.sinks.wav import folder_name
    assert folder_name("1-14710@127.0.0.1") == "1-14710@127.0.0.1"          # safe as it is: kept
    for odd in (".", "..", "", "a/b", "a b", "x" * 500, "ü@x", "calls.json#2"):
        name = folder_name(odd)
        assert name not in (".", "..", "") and "/" not in name
        assert len(name.encode()) <= 119 and name.startswith(safe_name(odd)[:110])
        assert "~" in name and folder_name(odd) == name                   # marked, and stable
    assert len({folder_name(k) for k in ("a b", "a_b", "a/b", "a\tb")}) == 4
    assert folder_name("x" * 300 + "1") != folder_name("x" * 300 + "2")


def test_call_ids_naming_the_run_files_do_not_break_the_manifest(tmp_path):
    """Call-IDs ``calls.json``, ``calls.json.tmp``, ``calls.jsonl``, ``calls``: their
    folders are under calls/, so the manifest is written and lists every call."""
    ids = ["calls.json", "calls.json.tmp", "calls.jsonl", "calls", "."]
    frames, pcms = [], {}
    for i, cid in enumerate(ids):
        f, pcms[cid] = talking_call(cid, i, 100.0 + i)
        frames += f
    rc, m, out = replay_to_dir(tmp_path, frames, "--stereo")
    assert rc == 0
    assert sorted(c["call_id"] for c in m["calls"]) == sorted(ids)
    assert sorted(os.listdir(out)) == [CALLS_DIR, MANIFEST]
    for call in m["calls"]:
        assert np.array_equal(caller_wav(out, call), expected_16k(pcms[call["call_id"]]))
        assert call["stereo_wav"].startswith(CALLS_DIR + "/")
    assert len(os.listdir(os.path.join(out, CALLS_DIR))) == len(ids)


def test_call_ids_that_collide_never_share_a_folder(tmp_path):
    """Call-IDs that one safe name could stand for (cut at 120 characters, unsafe
    characters, ``..``), a Call-ID used twice, and names that differ only in case, each
    get a folder of their own: every call's WAV holds its own tone."""
    long_a, long_b = "L" * 200 + "@a", "L" * 200 + "@b"
    ids = ["a b@x", "a_b@x", "a/b@x", "..", long_a, long_b, "CASE@x", "case@x"]
    frames, pcms = [], {}
    for i, cid in enumerate(ids):
        f, pcms[cid] = talking_call(cid, i, 100.0 + i)
        frames += f
    again, pcm_again = talking_call("a_b@x", len(ids), 200.0)      # the Call-ID again, long after
    frames += again
    rc, m, out = replay_to_dir(tmp_path, frames)
    assert rc == 0 and len(m["calls"]) == len(ids) + 1
    folders = set()
    for call in m["calls"]:
        wav = [x["wav"] for x in call["legs"] if x["tag"] == "caller"][0]
        folder = os.path.dirname(wav)
        assert os.path.dirname(folder) == CALLS_DIR
        assert len(os.path.basename(folder).encode()) <= 255
        folders.add(folder)
        want = pcm_again if call["start"].startswith("1970-01-01T00:03:20") else pcms[call["call_id"]]
        assert np.array_equal(caller_wav(out, call), expected_16k(want)), call["call_id"]
    assert len(folders) == len(m["calls"])


def test_a_folder_already_there_is_never_reused(tmp_path):
    """What a case-insensitive file system answers for ``case@x`` once ``CASE@x`` exists,
    or what a run before left in the same --out-dir: mkdir finds the name taken, and the
    call goes to ``-2``; the folder there is left as it was."""
    out = tmp_path / "out"
    taken = out / CALLS_DIR / "case@x"
    taken.mkdir(parents=True)
    (taken / "caller.wav").write_bytes(b"not ours")
    frames, pcm = talking_call("case@x", 0, 100.0)
    rc, m, out = replay_to_dir(tmp_path, frames)
    assert rc == 0
    assert (taken / "caller.wav").read_bytes() == b"not ours"
    (call,) = m["calls"]
    assert [x["wav"] for x in call["legs"] if x["wav"]] == ["calls/case@x-2/caller.wav"]
    assert np.array_equal(caller_wav(out, call), expected_16k(pcm))


# --------------------------------------------------------------------------- lazily, and journal mode

def test_invites_without_audio_make_no_folders(tmp_path):
    """An INVITE flood: every INVITE is a call in the manifest, none gets a folder; the
    one call with audio still gets its WAVs."""
    frames = []
    for i in range(300):
        frames += silent_call(f"flood-{i}@x", i, 100.0 + i * 0.001)
    talk, pcm = talking_call("talk@x", 0, 100.5)
    rc, m, out = replay_to_dir(tmp_path, frames + talk)
    assert rc == 0 and len(m["calls"]) == 301
    assert sorted(os.listdir(out)) == [CALLS_DIR, MANIFEST]
    assert os.listdir(os.path.join(out, CALLS_DIR)) == ["talk@x"]
    (call,) = [c for c in m["calls"] if c["call_id"] == "talk@x"]
    assert np.array_equal(caller_wav(out, call), expected_16k(pcm))
    flood = [c for c in m["calls"] if c["call_id"] != "talk@x"]
    assert all(leg["wav"] is None for c in flood for leg in c["legs"])


class Watch(Sink):
    """Placed after a WavSink in a Tee: what the WavSink holds once it has seen each end."""

    def __init__(self, wav: WavSink) -> None:
        self.wav = wav
        self.held: list[int] = []

    def call_ended(self, call, legs):
        self.held.append(self.wav.in_progress())


def test_journal_mode_writes_each_call_as_it_ends_and_keeps_nothing(tmp_path):
    """Journal mode (live): each ended call is a line in calls.jsonl at once, and the sink
    forgets it, so it holds no more than the calls in progress; calls.json at close
    lists the same calls.  A second run into the same directory appends to the journal,
    and its calls.json has only its own calls."""
    frames, pcms = [], {}
    for i in range(40):                        # one call after another, each ended by BYE
        f, pcms[f"seq-{i}@x"] = talking_call(f"seq-{i}@x", i, 100.0 + i)
        frames += f
    for i in range(50):
        frames += silent_call(f"flood-{i}@x", i, 100.2 + i * 0.01)
    path = callgen.write(tmp_path / "c.pcap", sorted(frames, key=lambda f: f[0]))
    out = tmp_path / "out"
    wav = WavSink(str(out), journal=True)
    watch = Watch(wav)
    replay(path, Tee(wav, watch))
    assert len(watch.held) == 90
    assert max(watch.held) <= 1                # at most the one call talking meanwhile
    assert wav.in_progress() == 0 and wav.manifest == [] and wav.ended == 90
    lines = (out / JOURNAL).read_text().splitlines()
    assert len(lines) == 90
    journal = [json.loads(line) for line in lines]
    assert len({c["call_id"] for c in journal}) == 90
    wav.close({"calls": 90})
    doc = json.loads((out / MANIFEST).read_text())
    assert doc["calls"] == journal and doc["summary"] == {"calls": 90}
    for call in journal:
        if call["call_id"] in pcms:
            assert np.array_equal(caller_wav(str(out), call), expected_16k(pcms[call["call_id"]]))
    assert sorted(os.listdir(out / CALLS_DIR)) == sorted(pcms)

    # a run before stopped mid-line; the next run starts on a line of its own
    with open(out / JOURNAL, "ab") as f:
        f.write(b'{"call_id": "cut off')
    second = WavSink(str(out), journal=True)
    f, pcm = talking_call("seq-0@x", 0, 500.0)
    path2 = callgen.write(tmp_path / "d.pcap", f)
    replay(path2, second)
    second.close()
    lines = (out / JOURNAL).read_text().splitlines()
    assert len(lines) == 92 and lines[90] == '{"call_id": "cut off'
    (call,) = json.loads((out / MANIFEST).read_text())["calls"]
    assert call == json.loads(lines[91])
    assert caller_wav(str(out), call) is not None and call["legs"][0]["wav"] == "calls/seq-0@x-2/caller.wav"


@pytest.mark.parametrize("journal", [False, True])
def test_manifest_shape_is_the_same_in_both_modes(tmp_path, journal):
    frames, pcm = talking_call("shape@x", 0, 100.0)
    path = callgen.write(tmp_path / "c.pcap", frames)
    wav = WavSink(str(tmp_path / "out"), stereo=True, journal=journal)
    replay(path, wav)
    wav.close({"calls": 1})
    doc = json.loads((tmp_path / "out" / MANIFEST).read_text())
    (call,) = doc["calls"]
    assert call["stereo_wav"] == "calls/shape@x/stereo.wav" and doc["summary"] == {"calls": 1}
    assert (tmp_path / "out" / JOURNAL).exists() == journal
