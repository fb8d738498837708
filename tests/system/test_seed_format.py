"""``--ws-format seed`` against the test server of the design this project grew from
(``../shared/seeds/003_*.txt``, section 三, ``wsServer2.py``): its logic copied
faithfully below.  That server writes a connection's binary frames to
``pcmFiles/<tag>.pcm``, naming the file from the last text message's ``tag``,
and closes it at ``"type": "end"``.  With rtp2ws's own tags (``caller``,
``callee``) three concurrent calls land in two files; with ``seed`` every stream
gets its own file, and each holds exactly its leg's audio."""

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from rtp2ws.sinks.wav import read_wav
from rtp2ws.ws.formats import wire_tag

import callgen
from callgen import Call, Party, frames_of, rtp_packets, tone

PY = sys.executable
CALL_IDS = ["a84b4c76e66710@pc33", "tricky/call#id with space", "3848276298220188511@10.0.0.3"]


class SeedServer:
    """wsServer2.py's handler, unchanged but for the directory (a test's own) and the
    port (any free one), on websockets' sync server in a thread."""

    def __init__(self, pcm_dir):
        from websockets.sync.server import serve

        self.pcm_dir = pcm_dir
        self.printed = []

        def handler(ws):
            callid, tag = "", 0  # noqa: F841 - as the seed writes it (it never reads callid)
            fout, fName = None, ""
            for msg in ws:
                if type(msg) == str:  # noqa: E721 - as the seed writes it
                    self.printed.append(msg)
                    dtmp = json.loads(msg)
                    var1 = dtmp.get("call_id")
                    if var1:
                        call_id = var1  # noqa: F841 - the seed keeps it and never uses it
                    var2 = dtmp.get("tag")
                    if var2 is not None:
                        tag = var2
                    fName = "%s/%s.pcm" % (self.pcm_dir, tag)  # noqa: UP031 - as the seed writes it
                    if fout is None:
                        fout = open(fName, "wb")
                    if "end" == dtmp.get("type"):
                        fout.close()
                if type(msg) == bytes:  # noqa: E721
                    fout.write(msg)
            return None

        self.server = serve(handler, "127.0.0.1", 0)
        self.port = self.server.socket.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.thread.join(10)


def three_calls(path):
    """Three calls at once, different Call-IDs, addresses and tones."""
    frames = []
    for i, call_id in enumerate(CALL_IDS):
        a = Party(f"10.0.{i}.1", 5060, 4000 + 10 * i, "1000")
        b = Party(f"10.0.{i}.2", 5060, 5000 + 10 * i, "2000")
        c = Call(call_id, a, b)
        n = 8000 * 2
        frames += frames_of(c.setup(100 + 0.01 * i),
                            rtp_packets(a, b, 100.1 + 0.01 * i, tone(300 + 100 * i, n), ssrc=1 + i),
                            rtp_packets(b, a, 100.103 + 0.01 * i, tone(1000 + 100 * i, n, amp=6000), ssrc=11 + i),
                            c.bye(102.3 + 0.01 * i))
    frames.sort(key=lambda f: f[0])
    return callgen.write(path, frames)


def replay(*args):
    r = subprocess.run([PY, "-m", "rtp2ws.cli", "replay", *map(str, args)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def seed_server(tmp_path):
    d = tmp_path / "pcmFiles"
    d.mkdir()
    s = SeedServer(str(d))
    yield s
    s.close()


def reference_legs(tmp_path, cap):
    """Each (call_id, leg tag) -> its int16 samples, from replay's own WAVs."""
    ref = tmp_path / "ref"
    replay(cap, "--out-dir", ref)
    manifest = json.loads((ref / "calls.json").read_text())
    out = {}
    for call in manifest["calls"]:
        for leg in call["legs"]:
            samples, _, _ = read_wav(str(ref / leg["wav"]))
            out[(call["call_id"], leg["tag"])] = samples
    return out


def test_seed_format_gives_every_stream_its_own_file_with_its_audio(tmp_path, seed_server):
    cap = three_calls(tmp_path / "three.pcap")
    want = reference_legs(tmp_path, cap)
    assert len(want) == 6
    replay(cap, "--ws-url", seed_server.url, "--ws-format", "seed")
    files = {p.name: p for p in (tmp_path / "pcmFiles").iterdir()}
    expected = {wire_tag("seed", call_id, tag) + ".pcm": (call_id, tag) for call_id, tag in want}
    assert sorted(files) == sorted(expected)
    for name, key in expected.items():
        got = np.frombuffer(files[name].read_bytes(), "<i2")
        assert len(got) == len(want[key]) and np.array_equal(got, want[key]), name
    # every message the server printed names its stream's own tag and call
    for text in seed_server.printed:
        msg = json.loads(text)
        assert expected[msg["tag"] + ".pcm"][0] == msg["call_id"]


def test_the_default_format_puts_concurrent_calls_into_two_files_there(tmp_path, seed_server):
    """Why ``seed`` exists: rtp2ws's own tags are the leg's, so that server mixes calls."""
    cap = three_calls(tmp_path / "three.pcap")
    replay(cap, "--ws-url", seed_server.url)
    assert sorted(p.name for p in (tmp_path / "pcmFiles").iterdir()) == ["callee.pcm", "caller.pcm"]
