#!/usr/bin/env bash
# Record ONE real SIP/RTP call between two SIPp instances on the loopback
# interface with tcpdump.
#
# Usage:
#   record_sipp_call.sh OUT.pcap [options]
#
# Mode A (default): UAC runs SIPp's built-in "uac_pcap" scenario, which plays
#   the A-law sample shipped with Debian's sip-tester package
#   (/usr/share/sip-tester/g711a.pcap, 30 ms packets) followed by an RFC 2833
#   DTMF "1" (dtmf_2833_1.pcap).  The UAS is tests/tools/uas_answer.xml
#   (answers PCMA, sends no media) or, with --builtin-uas, "sipp -sn uas".
#
# Mode B: --scenario UAC.xml --audio-pcap CALLER.pcap
#   UAC runs the given scenario (normally tests/tools/uac_play.xml) which plays
#   CALLER.pcap; the UAS runs tests/tools/uas_play.xml (or --uas-scenario)
#   which plays --uas-audio-pcap back, so both legs carry audio.  The scenarios
#   reference their audio by the relative names uac_audio.pcap/uas_audio.pcap;
#   this script symlinks the given files under those names into each SIPp's
#   private working directory.  The UAC's <pause/> length (-d) defaults to the
#   longer of the two pcaps + 1 s.
#
# Options:
#   --scenario FILE        UAC scenario XML (selects mode B)
#   --audio-pcap FILE      RTP pcap played by the UAC (mode B, required)
#   --audio-pcap2 FILE     a second RTP pcap the UAC scenario may play, as uac_audio2.pcap
#                          (uac_reinvite_g722.xml: the G.722 part after its re-INVITE)
#   --uas-scenario FILE    UAS scenario XML (default: uas_play.xml in mode B,
#                          uas_answer.xml in mode A)
#   --uas-audio-pcap FILE  RTP pcap played by the UAS (mode B; default: the
#                          SIPp sample g711a.pcap)
#   --builtin-uas          mode A only: use "sipp -sn uas" as the UAS
#   --pause-ms N           UAC pause between ACK and BYE (mode B)
#   --ip ADDR              loopback address for everything (default 127.0.0.1)
#   --uac-sip-port N       default 15060
#   --uas-sip-port N       default 15062
#   --uac-rtp-port N       default 16000 (sipp -mp of the UAC)
#   --uas-rtp-port N       default 16100 (sipp -mp of the UAS)
#   --sipp-pcap-dir DIR    where g711a.pcap/dtmf_2833_1.pcap live (mode A)
#   --keep-logs DIR        copy the SIPp/tcpdump logs to DIR
#   --relay                put tests/tools/media_relay.py (SIP proxy + transcoding
#                          RTP relay) between the two: the UAC calls the relay's SIP
#                          port, and each direction's RTP is two flows, party -> relay
#                          and relay -> other party (capture taken on the relay's host)
#   --relay-sip-port N     default 15064
#   --relay-rtp-port N     default 16200 (caller side; the callee side is N + 2)
#
# Needs root (tcpdump on lo; SIPp's play_pcap_audio sends through a raw
# socket, i.e. root or CAP_NET_RAW).  All traffic stays on 127.0.0.0/8.
# Every process this script starts is killed on exit (trap) and every wait is
# bounded.
set -euo pipefail

die() { echo "record_sipp_call: error: $*" >&2; exit 1; }
log() { echo "record_sipp_call: $*" >&2; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

[[ $# -ge 1 && $1 != -* ]] || { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
OUT=$1; shift

SCENARIO=""; AUDIO=""; AUDIO2=""; UAS_SCENARIO=""; UAS_AUDIO=""; BUILTIN_UAS=0; PAUSE_MS=""
IP=127.0.0.1; UAC_SIP=15060; UAS_SIP=15062; UAC_RTP=16000; UAS_RTP=16100
SIPP_PCAP_DIR=""; KEEP_LOGS=""; RELAY=0; RELAY_SIP=15064; RELAY_RTP=16200
while [[ $# -gt 0 ]]; do
    case $1 in
        --scenario) SCENARIO=$2; shift 2;;
        --audio-pcap) AUDIO=$2; shift 2;;
        --audio-pcap2) AUDIO2=$2; shift 2;;
        --uas-scenario) UAS_SCENARIO=$2; shift 2;;
        --uas-audio-pcap) UAS_AUDIO=$2; shift 2;;
        --builtin-uas) BUILTIN_UAS=1; shift;;
        --pause-ms) PAUSE_MS=$2; shift 2;;
        --ip) IP=$2; shift 2;;
        --uac-sip-port) UAC_SIP=$2; shift 2;;
        --uas-sip-port) UAS_SIP=$2; shift 2;;
        --uac-rtp-port) UAC_RTP=$2; shift 2;;
        --uas-rtp-port) UAS_RTP=$2; shift 2;;
        --sipp-pcap-dir) SIPP_PCAP_DIR=$2; shift 2;;
        --keep-logs) KEEP_LOGS=$2; shift 2;;
        --relay) RELAY=1; shift;;
        --relay-sip-port) RELAY_SIP=$2; shift 2;;
        --relay-rtp-port) RELAY_RTP=$2; shift 2;;
        -h|--help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
        *) die "unknown option: $1";;
    esac
done

[[ $IP == 127.* ]] || die "--ip must be a loopback address (127.0.0.0/8), got $IP"
for p in "$UAC_SIP" "$UAS_SIP" "$UAC_RTP" "$UAS_RTP" "$RELAY_SIP" "$RELAY_RTP"; do
    if ! [[ $p =~ ^[0-9]+$ ]] || (( p <= 1024 || p >= 65000 )); then die "bad port: $p"; fi
done
for tool in sipp tcpdump python3 timeout; do
    command -v "$tool" >/dev/null || die "'$tool' not found (apt-get install sip-tester tcpdump python3 coreutils)"
done
[[ $(id -u) -eq 0 ]] || log "warning: not root; tcpdump and SIPp play_pcap_audio (raw socket) will probably fail"

abspath() { python3 -c 'import os,sys; print(os.path.abspath(sys.argv[1]))' "$1"; }

# pcap duration in ms (stdlib only; classic pcap, either byte order / ts resolution)
pcap_ms() {
    python3 - "$1" <<'EOF'
import struct, sys
d = open(sys.argv[1], "rb").read()
magic = d[:4]
order = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}.get(magic)
if order is None:
    sys.exit("not a classic pcap file: " + sys.argv[1])
div = 1e9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e6
off, first, last = 24, None, None
while off + 16 <= len(d):
    s, frac, incl, _ = struct.unpack(order + "IIII", d[off:off + 16])
    t = s + frac / div
    first = t if first is None else first
    last = t
    off += 16 + incl
print(0 if first is None else int(round((last - first) * 1000)) + 20)
EOF
}

if [[ -n $SCENARIO ]]; then MODE=B; else MODE=A; fi

# ---------------------------------------------------------------- mode setup
WORK=$(mktemp -d /tmp/record_sipp_call.XXXXXX)
mkdir -p "$WORK/uas" "$WORK/uac"
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n $KEEP_LOGS ]]; then mkdir -p "$KEEP_LOGS"; cp "$WORK"/*.log "$KEEP_LOGS"/ 2>/dev/null || true; fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $MODE == A ]]; then
    if [[ -z $SIPP_PCAP_DIR ]]; then
        f=$(dpkg -L sip-tester 2>/dev/null | grep '/g711a\.pcap$' | head -n1 || true)
        if [[ -n $f ]]; then SIPP_PCAP_DIR=$(dirname "$f"); fi
    fi
    if [[ -z $SIPP_PCAP_DIR ]]; then
        for d in /usr/share/sip-tester /usr/local/share/sipp/pcap /usr/share/sipp/pcap; do
            [[ -f $d/g711a.pcap ]] && { SIPP_PCAP_DIR=$d; break; }
        done
    fi
    [[ -n $SIPP_PCAP_DIR && -f $SIPP_PCAP_DIR/g711a.pcap && -f $SIPP_PCAP_DIR/dtmf_2833_1.pcap ]] || \
        die "SIPp sample pcaps (g711a.pcap, dtmf_2833_1.pcap) not found; the Debian package sip-tester ships them in /usr/share/sip-tester (check 'dpkg -L sip-tester'), or pass --sipp-pcap-dir DIR"
    # uac_pcap references "pcap/g711a.pcap" and "pcap/dtmf_2833_1.pcap" relative to its cwd
    mkdir -p "$WORK/uac/pcap"
    ln -s "$SIPP_PCAP_DIR/g711a.pcap" "$WORK/uac/pcap/g711a.pcap"
    ln -s "$SIPP_PCAP_DIR/dtmf_2833_1.pcap" "$WORK/uac/pcap/dtmf_2833_1.pcap"
    UAC_ARGS=(-sn uac_pcap)
    if [[ $BUILTIN_UAS -eq 1 ]]; then
        UAS_ARGS=(-sn uas)
    else
        UAS_ARGS=(-sf "$(abspath "${UAS_SCENARIO:-$SCRIPT_DIR/uas_answer.xml}")")
    fi
else
    [[ -f $SCENARIO ]] || die "scenario not found: $SCENARIO"
    [[ -n $AUDIO && -f $AUDIO ]] || die "mode B needs --audio-pcap FILE (got '${AUDIO}')"
    if [[ -z $UAS_AUDIO ]]; then
        f=$(dpkg -L sip-tester 2>/dev/null | grep '/g711a\.pcap$' | head -n1 || true)
        UAS_AUDIO=${f:-/usr/share/sip-tester/g711a.pcap}
    fi
    [[ -f $UAS_AUDIO ]] || die "UAS audio pcap not found: $UAS_AUDIO (use --uas-audio-pcap)"
    UAS_SCENARIO=${UAS_SCENARIO:-$SCRIPT_DIR/uas_play.xml}
    [[ -f $UAS_SCENARIO ]] || die "UAS scenario not found: $UAS_SCENARIO"
    ln -s "$(abspath "$AUDIO")" "$WORK/uac/uac_audio.pcap"
    if [[ -n $AUDIO2 ]]; then
        [[ -f $AUDIO2 ]] || die "second audio pcap not found: $AUDIO2"
        ln -s "$(abspath "$AUDIO2")" "$WORK/uac/uac_audio2.pcap"
    fi
    ln -s "$(abspath "$UAS_AUDIO")" "$WORK/uas/uas_audio.pcap"
    if [[ -z $PAUSE_MS ]]; then
        a=$(pcap_ms "$AUDIO"); b=$(pcap_ms "$UAS_AUDIO")
        PAUSE_MS=$(( (a > b ? a : b) + 1000 ))
    fi
    UAC_ARGS=(-sf "$(abspath "$SCENARIO")" -d "$PAUSE_MS")
    UAS_ARGS=(-sf "$(abspath "$UAS_SCENARIO")")
fi

# Fail early (and clearly) if a port is already taken.
if command -v ss >/dev/null; then
    RELAY_PORTS=()
    if [[ $RELAY -eq 1 ]]; then RELAY_PORTS=("$RELAY_SIP" "$RELAY_RTP" $((RELAY_RTP + 2))); fi
    for p in "$UAC_SIP" "$UAS_SIP" "$UAC_RTP" "$UAS_RTP" $((UAC_RTP + 2)) $((UAS_RTP + 2)) "${RELAY_PORTS[@]}"; do
        if [[ -n $(ss -Hlun "sport = :$p" 2>/dev/null) ]]; then die "UDP port $p is already in use"; fi
    done
fi

# ---------------------------------------------------------------- capture
lo_min=$(( UAC_RTP < UAS_RTP ? UAC_RTP : UAS_RTP ))
lo_max=$(( (UAC_RTP > UAS_RTP ? UAC_RTP : UAS_RTP) + 3 ))
FILTER="udp and host $IP and (port $UAC_SIP or port $UAS_SIP or portrange $lo_min-$lo_max)"
if [[ $RELAY -eq 1 ]]; then
    FILTER="udp and host $IP and (port $UAC_SIP or port $UAS_SIP or port $RELAY_SIP or portrange $lo_min-$lo_max or portrange $RELAY_RTP-$((RELAY_RTP + 3)))"
fi
# -Z root: don't drop privileges to user tcpdump (it could not write here)
tcpdump -i lo -U -n -Z root -w "$WORK/capture.pcap" "$FILTER" 2>"$WORK/tcpdump.log" &
TCPDUMP_PID=$!; PIDS+=("$TCPDUMP_PID")
for _ in $(seq 1 100); do   # up to 10 s
    grep -q "listening on" "$WORK/tcpdump.log" 2>/dev/null && break
    kill -0 "$TCPDUMP_PID" 2>/dev/null || { cat "$WORK/tcpdump.log" >&2; die "tcpdump failed to start"; }
    sleep 0.1
done
grep -q "listening on" "$WORK/tcpdump.log" || die "tcpdump did not start listening within 10 s"
sleep 0.3
log "mode $MODE; capturing on lo: $FILTER"

# ---------------------------------------------------------------- callee (UAS)
COMMON=(-i "$IP" -mi "$IP" -m 1 -nostdin -timeout 55s -timeout_error)
(cd "$WORK/uas" && exec timeout 60 sipp "${UAS_ARGS[@]}" "${COMMON[@]}" -p "$UAS_SIP" -mp "$UAS_RTP" \
    </dev/null >"$WORK/uas.log" 2>&1) &
UAS_PID=$!; PIDS+=("$UAS_PID")
for _ in $(seq 1 50); do   # wait (max 5 s) until the UAS listens
    if command -v ss >/dev/null; then
        [[ -n $(ss -Hlun "sport = :$UAS_SIP" 2>/dev/null) ]] && break
    else
        sleep 1; break
    fi
    kill -0 "$UAS_PID" 2>/dev/null || { tail -n 20 "$WORK/uas.log" >&2; die "UAS sipp exited early"; }
    sleep 0.1
done

# ---------------------------------------------------------------- relay (optional)
TARGET_SIP=$UAS_SIP
if [[ $RELAY -eq 1 ]]; then
    timeout 60 python3 "$SCRIPT_DIR/media_relay.py" --ip "$IP" --sip-port "$RELAY_SIP" \
        --uac "$IP:$UAC_SIP" --uas "$IP:$UAS_SIP" --rtp-ports "$RELAY_RTP,$((RELAY_RTP + 2))" --lifetime 58 \
        </dev/null >"$WORK/relay.log" 2>&1 &
    RELAY_PID=$!; PIDS+=("$RELAY_PID")
    for _ in $(seq 1 50); do   # wait (max 5 s) until the relay listens
        grep -q "SIP $IP:$RELAY_SIP" "$WORK/relay.log" 2>/dev/null && break
        kill -0 "$RELAY_PID" 2>/dev/null || { cat "$WORK/relay.log" >&2; die "media_relay.py exited early"; }
        sleep 0.1
    done
    TARGET_SIP=$RELAY_SIP
fi

# ---------------------------------------------------------------- caller (UAC)
log "placing one call $IP:$UAC_SIP -> $IP:$TARGET_SIP (RTP $UAC_RTP <-> $UAS_RTP)${PAUSE_MS:+, pause ${PAUSE_MS} ms}"
set +e
# run in the background + wait, so that a TERM/INT to this script is handled at once
(cd "$WORK/uac" && exec timeout 60 sipp "${UAC_ARGS[@]}" "$IP:$TARGET_SIP" "${COMMON[@]}" -p "$UAC_SIP" -mp "$UAC_RTP" \
    </dev/null >"$WORK/uac.log" 2>&1) &
UAC_PID=$!; PIDS+=("$UAC_PID")
wait "$UAC_PID"; UAC_RC=$?   # bounded by 'timeout 60'
wait "$UAS_PID"; UAS_RC=$?   # bounded by 'timeout 60'
set -e
sleep 0.5   # let the last packets reach the capture
if [[ $RELAY -eq 1 ]]; then
    kill -TERM "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || true
    sed 's/^/record_sipp_call: /' "$WORK/relay.log" >&2 || true
fi

kill -INT "$TCPDUMP_PID" 2>/dev/null || true
for _ in $(seq 1 50); do kill -0 "$TCPDUMP_PID" 2>/dev/null || break; sleep 0.1; done
wait "$TCPDUMP_PID" 2>/dev/null || true

if [[ $UAC_RC -ne 0 || $UAS_RC -ne 0 ]]; then
    echo "---- uac.log (tail)" >&2; tail -n 40 "$WORK/uac.log" >&2 || true
    echo "---- uas.log (tail)" >&2; tail -n 40 "$WORK/uas.log" >&2 || true
    die "sipp failed (uac rc=$UAC_RC, uas rc=$UAS_RC)"
fi
[[ -s $WORK/capture.pcap ]] || die "capture file is empty"
size=$(stat -c %s "$WORK/capture.pcap")
(( size > 24 )) || die "capture contains no packets"
grep -E "packets (captured|dropped)" "$WORK/tcpdump.log" | sed 's/^/record_sipp_call: tcpdump: /' >&2 || true

mkdir -p "$(dirname "$OUT")"
cp "$WORK/capture.pcap" "$OUT.tmp.$$" && mv -f "$OUT.tmp.$$" "$OUT"
log "wrote $OUT ($size bytes)"
