"""An ``--out-dir`` that cannot be created (``replay``, ``live``, ``sink``): one line
``rtp2ws: error: --out-dir PATH: REASON`` and exit status 2, no traceback.

The places: a path under a regular file, a regular file, and a read-only file
system (a read-only tmpfs mounted in a mount namespace of the command's own, so
root cannot write there either; without root, a directory without write
permission)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from rtp2ws import cli

from skips import can_capture

PY = sys.executable
CAPTURE = "tests/data/demo_speech.pcap"
COMMANDS = {
    "replay": ["replay", CAPTURE],
    "live": ["live", "-i", "lo", "--bpf", "udp and port 9"],
    "sink": ["sink", "--listen", "127.0.0.1:0"],
}


def _read_only_mount_works() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=30)
    return r.returncode == 0


def _run(command: str, out_dir, *, mount_read_only=None) -> subprocess.CompletedProcess:
    argv = [PY, "-m", "rtp2ws.cli", *COMMANDS[command], "--out-dir", str(out_dir)]
    if mount_read_only is not None:
        argv = ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o ro rtp2ws-test "$0" && exec "$@"',
                str(mount_read_only), *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _needs(command: str) -> None:
    if command == "live" and not can_capture():
        pytest.skip("live opens the capture before the output: needs root or CAP_NET_RAW")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_out_dir_under_a_regular_file(tmp_path, command):
    _needs(command)
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "out"
    r = _run(command, out)
    assert (r.returncode, r.stderr) == (2, f"rtp2ws: error: --out-dir {out}: Not a directory\n"), r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_out_dir_in_a_read_only_place(tmp_path, command):
    _needs(command)
    place = tmp_path / "ro"
    place.mkdir()
    out = place / "out"
    if _read_only_mount_works():
        r = _run(command, out, mount_read_only=place)
        reason = "Read-only file system"
    elif os.geteuid() != 0:
        place.chmod(0o555)
        r = _run(command, out)
        reason = "Permission denied"
    else:
        pytest.skip("root without unshare(1): no place it cannot write")
    assert (r.returncode, r.stderr) == (2, f"rtp2ws: error: --out-dir {out}: {reason}\n"), r.stderr
    assert not out.exists()


def test_replay_out_dir_that_is_a_file(tmp_path, capsys):
    out = tmp_path / "calls"
    out.write_text("not a directory")
    assert cli.main(["replay", CAPTURE, "--out-dir", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"rtp2ws: error: --out-dir {out}: File exists\n"
    assert captured.out == "" and out.read_text() == "not a directory"
