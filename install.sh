#!/usr/bin/env bash
# rtp2ws set-up, in one command, on a fresh Debian/Ubuntu machine:
#   system packages (libpcap-dev for pypcap, gcc, Python headers and liburing-dev for the native
#   extensions, spandsp/bcg729/libopus for G.722/G.729/Opus,
#   sipp/tcpdump/espeak-ng/sox/tshark/shellcheck/nats-server used by the tests), a virtual
#   environment in .venv with rtp2ws and its test, bench, sink and nats extras installed in it (a
#   warning names any C extension that could not be built), then the demo: the bundled speech call
#   replayed into out/demo/ (one WAV per leg, a stereo WAV, calls.json).
#   Before the demo, deploy/install-system.sh: /usr/local/bin/rtp2ws (a link to .venv/bin/rtp2ws,
#   what the systemd unit deploy/rtp2ws.service runs) and the documentation in /usr/share/doc/rtp2ws/.
# Options: --no-demo skips the demo; --no-apt skips the system packages; --no-system skips
# /usr/local/bin/rtp2ws and /usr/share/doc/rtp2ws/ (an install without root, for development).
set -euo pipefail
cd "$(dirname "$0")"
demo=1 apt=1 system=1
for arg in "$@"; do
  case "$arg" in
    --no-demo) demo=0 ;;
    --no-apt) apt=0 ;;
    --no-system) system=0 ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
if [ "$apt" = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends \
    python3 python3-venv python3-dev gcc libpcap-dev liburing-dev \
    sip-tester tcpdump tshark espeak-ng sox iproute2 iptables procps shellcheck nats-server \
    libspandsp-dev libbcg729-dev libopus-dev
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,bench,sink,nats]'
# pip -q hides setup.py's warning when a C extension could not be built: say it here
echo "installed: $(.venv/bin/rtp2ws --version)"
.venv/bin/python -c 'from rtp2ws.speedups import missing_warning as m; w = m(); w and print("WARNING:", w)'
if [ "$system" = 1 ]; then
  $SUDO deploy/install-system.sh
fi
if [ "$demo" = 1 ]; then
  # The main job on the bundled capture: replay the demo call into the built-in sink
  # (rtp2ws sink, the reference analysis server) over WebSocket, and to files.
  rm -rf out/demo && mkdir -p out/demo
  .venv/bin/rtp2ws sink --listen 127.0.0.1:0 --out-dir out/demo/received > out/demo/sink.log 2>&1 &
  sink_pid=$!
  trap 'kill "$sink_pid" 2>/dev/null || true' EXIT
  url=""
  for _ in $(seq 100); do
    url=$(grep -o 'ws://[^ ]*' out/demo/sink.log | head -n 1 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { cat out/demo/sink.log >&2; echo "install.sh: the demo sink did not start" >&2; exit 1; }
  .venv/bin/rtp2ws replay tests/data/demo_speech.pcap --ws-url "$url/audio" --out-dir out/demo/files
  if kill -TERM "$sink_pid"; then wait "$sink_pid" || true; fi
  trap - EXIT
  echo "demo: streamed audio in out/demo/received/ (what the analysis server got), files in out/demo/files/"
fi
