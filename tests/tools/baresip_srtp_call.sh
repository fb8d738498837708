#!/usr/bin/env bash
# Records tests/data/baresip_srtp.pcap: a real SRTP call with SDES keys between two
# baresip user agents (Debian's baresip-core: libre's own SRTP, not libsrtp), PCMU,
# AES_CM_128_HMAC_SHA1_80 (mediaenc=srtp-mand), in a network namespace of its own,
# captured by tcpdump on its loopback.  The caller plays a spoken sentence
# (espeak-ng, 8 kHz), the callee a 1 kHz tone (sox); both auto-answer/hang up.
#
#   sudo bash tests/tools/baresip_srtp_call.sh [OUT.pcap]
#
# Needs root (ip netns), baresip-core, tcpdump, espeak-ng, sox.
set -euo pipefail

out=$(realpath -m "${1:-$(dirname "$0")/../data/baresip_srtp.pcap}")
ns=rtp2ws-baresip-$$
work=$(mktemp -d)
cleanup() {
    if [[ -n "${dump:-}" ]]; then kill "$dump" 2>/dev/null || true; fi
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

espeak-ng -w "$work/speech.wav" "This call is encrypted with S R T P. The keys travel in the S D P."
sox "$work/speech.wav" -r 8000 -c 1 -b 16 "$work/caller.wav"
sox -n -r 8000 -c 1 -b 16 "$work/callee.wav" synth 6 sine 1000 vol 0.3

# one config per agent: SIP port, RTP ports, what it plays; no sound card (aubridge)
agent() {   # name sip_port rtp_ports ctrl_port wav
    mkdir -p "$work/$1"
    cat > "$work/$1/config" <<EOF
sip_listen		127.0.0.1:$2
audio_player		aubridge,nowhere
audio_source		aufile,$5
audio_alert		aubridge,nowhere
rtp_ports		$3
module_path		/usr/lib/baresip/modules
module			g711.so
module			aufile.so
module			aubridge.so
module			srtp.so
module_app		account.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		127.0.0.1:$4
EOF
    echo "<sip:$1@127.0.0.1:$2>;regint=0;mediaenc=srtp-mand;answermode=auto;audio_codecs=PCMU" > "$work/$1/accounts"
}
agent a 15060 10000-10010 16060 "$work/caller.wav"
agent b 15080 10020-10030 16080 "$work/callee.wav"

ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" tcpdump -i lo -w "$out" -U udp 2>/dev/null &
dump=$!
sleep 1
ip netns exec "$ns" baresip -n 127.0.0.1 -f "$work/b" -t 9 > "$work/b.log" 2>&1 &
sleep 1
# the caller hangs up at the end of its file (about 4 s)
ip netns exec "$ns" baresip -n 127.0.0.1 -f "$work/a" -t 7 -e "/dial sip:b@127.0.0.1:15080" > "$work/a.log" 2>&1
sleep 2
kill "$dump"
wait "$dump" 2>/dev/null || true
dump=
grep -a "SRTP is Enabled" "$work/a.log" || { cat "$work/a.log"; exit 1; }
cp "$work/caller.wav" "${out%.pcap}_caller_8k.wav"
cp "$work/callee.wav" "${out%.pcap}_callee_8k.wav"
echo "wrote $out"
