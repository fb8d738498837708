#!/usr/bin/env python3
"""Record a WebRTC caller's call through a PBX, as a mirror of the PBX's host sees it.

Usage: record_webrtc_call.py OUT.pcap [--seconds 1.0]

In a network namespace of its own (lo up), ``tcpdump -i lo`` records:

* SIP over WebSocket (RFC 7118, ws:// on 127.0.0.1:5066), made with the ``websockets``
  package on both sides: a client in SIP.js's place (REGISTER, INVITE with a WebRTC
  SDP offer: ``UDP/TLS/RTP/SAVPF``, ``a=fingerprint``, ``a=setup:actpass``, ICE; ACK;
  BYE) and a server in FreeSWITCH's (``101`` with ``Sec-WebSocket-Protocol: sip``;
  ``200 OK`` to REGISTER; ``100 Trying``, then ``200 OK`` with its DTLS answer to
  INVITE; ``200 OK`` to BYE).  Client frames are masked, as RFC 6455 wants; the INVITE
  goes as two fragments (a text frame and a continuation) with a ping between them.
* DTLS on the WebRTC media addresses (127.0.0.1:30000 <-> 127.0.0.1:30002): a real
  DTLS 1.2 handshake and a few records, by ``openssl s_server`` / ``s_client -dtls1_2``.
* The PBX's plain call to the PSTN side, SIP over UDP and A-law RTP both ways
  (tests/livecall.py's ``PhoneCall``: 127.0.0.1:5060 <-> 127.0.0.2:5060, RTP
  127.0.0.1:20000 <-> 127.0.0.2:20002, 440 Hz and 1000 Hz tones, ``--seconds`` long).

Needs root (``ip netns``, tcpdump) and openssl.  Every process it starts is ended, and
the namespace deleted."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from netns import rerun_inside

TESTS = Path(__file__).resolve().parent.parent
WS_PORT, DTLS_CLIENT, DTLS_SERVER = 5066, 30000, 30002
FILTER = "(tcp port 5066) or (udp and (port 5060 or portrange 20000-20003 or portrange 30000-30003))"
CALL_ID = "webrtc-call@sipjs.invalid"
PSTN_CALL_ID = "pstn-bleg@pbx"
FINGERPRINT = ("sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3D:9E:0C:3B:"
               "2E:59:D1:4A:6A:2C:5B:10")


def sdp(port: int, setup: str, session: str) -> str:
    """A WebRTC audio offer or answer: DTLS-SRTP (RFC 5763/8842), ICE, rtcp-mux."""
    return "\r\n".join([
        "v=0", f"o=- {session} 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0",
        "a=msid-semantic: WMS", f"m=audio {port} UDP/TLS/RTP/SAVPF 111 0 8 126", "c=IN IP4 127.0.0.1",
        f"a=rtcp:{port} IN IP4 127.0.0.1", f"a=candidate:1 1 udp 2122260223 127.0.0.1 {port} typ host",
        "a=ice-ufrag:Fx3k", "a=ice-pwd:Zq9v2k3Jd8aPw0s9Xn2mLr7c", "a=ice-options:trickle",
        f"a=fingerprint:{FINGERPRINT}", f"a=setup:{setup}", "a=mid:0", "a=sendrecv", "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1", "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000", "a=rtpmap:126 telephone-event/8000", "",
    ])


def sip(start: str, headers: list[tuple[str, str]], body: str = "") -> str:
    lines = [start, *(f"{k}: {v}" for k, v in headers)]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")       # SIP.js sends one; RFC 7118 needs none
    return "\r\n".join(lines) + "\r\n\r\n" + body


def headers(method: str, cseq: int, to_tag: bool) -> list[tuple[str, str]]:
    return [("Via", f"SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK{method.lower()}{cseq}"),
            ("Max-Forwards", "70"), ("To", "<sip:2000@pbx.example.com>" + (";tag=fs-tag-1" if to_tag else "")),
            ("From", "<sip:alice@pbx.example.com>;tag=sipjs-tag-1"), ("Call-ID", CALL_ID),
            ("CSeq", f"{cseq} {method}"), ("Contact", "<sip:alice@df7jal23ls0d.invalid;transport=ws>"),
            ("User-Agent", "SIP.js/0.21.2")]


def reply(status: str, request: str, body: str = "") -> str:
    method = request.split(" ", 1)[0]
    cseq = next(int(line.split()[1]) for line in request.split("\r\n") if line.startswith("CSeq:"))
    return sip(f"SIP/2.0 {status}", headers(method, cseq, method != "REGISTER"), body)


def pbx(conn, bleg) -> None:
    """FreeSWITCH's side of the WebSocket: answers, and places the B leg for the INVITE."""
    for message in conn:
        text = message if isinstance(message, str) else message.decode()
        method = text.split(" ", 1)[0]
        if method == "REGISTER" or method == "BYE":
            conn.send(reply("200 OK", text))
            if method == "BYE":
                bleg.bye()
        elif method == "INVITE":
            conn.send(reply("100 Trying", text))
            bleg.setup()
            conn.send(reply("200 OK", text, sdp(DTLS_SERVER, "passive", "4001")))


def dtls(workdir: Path) -> None:
    """A real DTLS 1.2 handshake and a few records between the WebRTC media addresses."""
    key, cert = workdir / "key.pem", workdir / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=WebRTC", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=30)
    server = subprocess.Popen(["openssl", "s_server", "-dtls1_2", "-accept", f"127.0.0.1:{DTLS_SERVER}",
                               "-cert", cert, "-key", key, "-quiet"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        client = subprocess.Popen(["openssl", "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{DTLS_SERVER}",
                                   "-bind", f"127.0.0.1:{DTLS_CLIENT}", "-quiet"], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)                # the handshake
            assert client.stdin is not None and server.stdin is not None
            client.stdin.write(b"client record\n")
            client.stdin.flush()
            server.stdin.write(b"server record\n")
            server.stdin.flush()
            time.sleep(0.2)
        finally:
            client.kill()                  # s_client stays until killed
            client.wait(5)
    finally:
        server.kill()
        server.wait(5)


def conversation(seconds: float, workdir: Path) -> None:
    sys.path.insert(0, str(TESTS))
    from websockets.sync.client import connect
    from websockets.sync.server import serve

    from livecall import PhoneCall

    bleg = PhoneCall(PSTN_CALL_ID, 5060, 20000, 20002)
    server = serve(lambda conn: pbx(conn, bleg), "127.0.0.1", WS_PORT, subprotocols=["sip"],
                   compression=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with connect(f"ws://127.0.0.1:{WS_PORT}/ws", subprotocols=["sip"], compression=None) as ws:
            ws.send(sip("REGISTER sip:pbx.example.com SIP/2.0", headers("REGISTER", 1, False)))
            assert ws.recv(timeout=5).startswith("SIP/2.0 200")
            invite = sip("INVITE sip:2000@pbx.example.com SIP/2.0", headers("INVITE", 1, False),
                         sdp(DTLS_CLIENT, "actpass", "3001")).encode()
            half = len(invite) // 2       # two fragments, a ping between them (RFC 6455 5.4)
            with ws.protocol_mutex:
                ws.protocol.send_text(invite[:half], fin=False)
                ws.protocol.send_ping(b"ka")
                ws.protocol.send_continuation(invite[half:], fin=True)
                ws.send_data()
            assert ws.recv(timeout=5).startswith("SIP/2.0 100")
            assert ws.recv(timeout=5).startswith("SIP/2.0 200")
            ws.send(sip("ACK sip:2000@pbx.example.com SIP/2.0", headers("ACK", 1, True)))
            dtls(workdir)
            bleg.media(seconds)
            ws.send(sip("BYE sip:2000@pbx.example.com SIP/2.0", headers("BYE", 2, True)))
            assert ws.recv(timeout=5).startswith("SIP/2.0 200")
    finally:
        server.shutdown()
        thread.join(5)
        bleg.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    if not a.in_namespace:
        return rerun_inside("r2wrtc", __file__, [out, "--seconds", str(a.seconds)], 90)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-n", "-Z", "root", "-w", out, FILTER],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert dump.stderr is not None
        lines: list[str] = []
        while not any("listening on" in x for x in lines):
            lines.append(dump.stderr.readline())
            if not lines[-1]:
                raise SystemExit(f"tcpdump did not start: {''.join(lines)}")
        with tempfile.TemporaryDirectory() as tmp:
            conversation(a.seconds, Path(tmp))
        time.sleep(0.2)
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
