"""``rtp2ws live`` in a process of its own, and a phone call on loopback sent with real
UDP sockets: what the tests of ``live`` share (the fixtures ``live_factory`` and
``call_factory`` that hand them out are in conftest.py)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from rtp2ws.codec import g711
from rtp2ws.codec.resample import upsample_2x
from rtp2ws.media.rtp import RtpPacket, serialize_rtp

from callgen import sdp, sip, tone

PY = sys.executable
A_IP, B_IP = "127.0.0.1", "127.0.0.2"


def _filter(sip_port: int, rtp_lo: int) -> str:
    return f"udp and host 127.0.0.1 and (port {sip_port} or portrange {rtp_lo}-{rtp_lo + 100})"


class LiveProcess:
    """``rtp2ws live`` in its own process; stderr collected by a thread."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([PY, "-m", "rtp2ws.cli", "live", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.err.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, text: str, timeout: float = 15.0, path: Path | None = None) -> None:
        """Until ``text`` is in stderr (or in the file ``path``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.stderr if path is None else (path.read_text() if path.exists() else "")
            if text in got:
                return
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise AssertionError(f"live exited with {self.proc.returncode}: {self.stderr}")
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not seen within {timeout} s: {self.stderr}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 40.0) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out = self.proc.stdout.read()
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise
        self._reader.join(5)
        return rc, out, self.stderr

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class PhoneCall:
    """A call between A (127.0.0.1) and B (127.0.0.2) sent with real UDP sockets."""

    def __init__(self, call_id: str, sip_port: int, rtp_a: int, rtp_b: int):
        self.call_id = call_id
        self.sip_port = sip_port
        self.rtp = {"a": rtp_a, "b": rtp_b}
        self.socks = {}
        for name, ip, port in (("sip_a", A_IP, sip_port), ("sip_b", B_IP, sip_port),
                               ("rtp_a", A_IP, rtp_a), ("rtp_b", B_IP, rtp_b)):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((ip, port))
            self.socks[name] = s
        self.payloads = {"caller": [], "callee": []}
        self.seq = {"caller": 1000, "callee": 5000}
        self.ts = {"caller": 80000, "callee": 160000}
        self.pos = 0

    def close(self):
        for s in self.socks.values():
            s.close()

    def _headers(self, method: str, cseq: int, from_a: bool, to_tag: bool) -> list:
        via_ip = A_IP if from_a else B_IP
        return [
            ("Via", f"SIP/2.0/UDP {via_ip}:{self.sip_port};branch=z9hG4bK{method}{cseq}{int(from_a)}"),
            ("From", f"<sip:1000@{A_IP}>;tag=caller1"),
            ("To", f"<sip:2000@{B_IP}>" + (";tag=callee1" if to_tag else "")),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:{'1000' if from_a else '2000'}@{via_ip}:{self.sip_port}>"),
        ]

    def _send_sip(self, data: bytes, from_a: bool):
        src = self.socks["sip_a" if from_a else "sip_b"]
        src.sendto(data, (B_IP if from_a else A_IP, self.sip_port))

    def setup(self):
        self._send_sip(sip(f"INVITE sip:2000@{B_IP}:{self.sip_port} SIP/2.0", self._headers("INVITE", 1, True, False),
                           sdp(A_IP, self.rtp["a"], pts=(8, 101))), True)
        time.sleep(0.01)
        self._send_sip(sip("SIP/2.0 200 OK", self._headers("INVITE", 1, True, True),
                           sdp(B_IP, self.rtp["b"], pts=(8, 101))), False)
        time.sleep(0.01)
        self._send_sip(sip(f"ACK sip:2000@{B_IP}:{self.sip_port} SIP/2.0", self._headers("ACK", 1, True, True)), True)
        time.sleep(0.05)

    def media(self, seconds: float, lose: dict[str, set[int]] | None = None, paired: tuple[str, ...] = ()):
        """20 ms of A-law each way every 20 ms, paced on an absolute schedule; ``lose``:
        per leg (caller, callee) the packets, counted from 0 in this call of media, that
        are not sent (their sequence numbers are skipped: lost on the way); the legs in
        ``paired`` send their packets two at a time, each even one held back 20 ms and
        sent with the next (every interarrival D is then 20 ms)."""
        lose = lose or {}
        held: dict[str, tuple] = {}
        n = round(seconds / 0.02)
        t0 = time.monotonic()
        for i in range(n):
            for tag, src, dst, freq in (("caller", "rtp_a", (B_IP, self.rtp["b"]), 440),
                                        ("callee", "rtp_b", (A_IP, self.rtp["a"]), 1000)):
                payload = g711.encode_alaw(tone(freq, 160, start=self.pos))
                pkt = RtpPacket(self.seq[tag] & 0xFFFF, self.ts[tag], 0x1111 if tag == "caller" else 0x2222,
                                8, i == 0 and not self.payloads[tag], payload)
                if i not in lose.get(tag, ()):
                    if tag in paired and i % 2 == 0 and i + 1 < n:
                        held[tag] = (serialize_rtp(pkt), dst)
                    else:
                        if tag in held:
                            self.socks[src].sendto(*held.pop(tag))
                        self.socks[src].sendto(serialize_rtp(pkt), dst)
                    self.payloads[tag].append(bytes(payload))
                self.seq[tag] += 1
                self.ts[tag] += 160
            self.pos += 160
            delay = t0 + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def bye(self):
        self._send_sip(sip(f"BYE sip:2000@{B_IP}:{self.sip_port} SIP/2.0", self._headers("BYE", 2, True, True)), True)
        time.sleep(0.01)
        self._send_sip(sip("SIP/2.0 200 OK", self._headers("BYE", 2, True, True)), False)

    def expected(self, tag: str) -> np.ndarray:
        return upsample_2x(g711.decode_alaw(b"".join(self.payloads[tag])))
