#!/usr/bin/env bash
# Record a two-way PCMU RTP session with real RTCP between two GStreamer rtpbin
# instances on the loopback interface, then give it SIP signalling.
#
# Usage: record_gst_rtcp.sh OUT.pcap [--seconds N] [--loss P]
#
# Side A (RTP 16000, RTCP 16001) sends a 440 Hz tone, side B (RTP 16100, RTCP
# 16101) a 1000 Hz tone, 20 ms PCMU packets each way, through rtpbin (AVPF
# profile, so RTCP comes every second or so): SR with report blocks, SDES and
# BYE, from GStreamer's own RTCP code (gstreamer1.0-plugins-good).  A's RTP
# passes an "identity drop-probability=P" (default 0.04) after rtpbin, so B
# really loses packets and says so in its reports.  tcpdump records it all;
# then tests/tools/add_sip.py puts an INVITE/200/ACK before the media and a BYE
# after it, with SDP naming those addresses, so rtp2ws sees one call.
#
# Needs root and the Debian packages gstreamer1.0-tools gstreamer1.0-plugins-base
# gstreamer1.0-plugins-good tcpdump (and python3 with this repository's tests/
# for add_sip.py).  Traffic stays on lo.
set -euo pipefail
OUT=${1:?usage: $0 OUT.pcap [--seconds N] [--loss P]}
shift
SECONDS_=10
LOSS=0.04
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) SECONDS_=$2; shift 2;;
    --loss) LOSS=$2; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
BUFFERS=$((SECONDS_ * 50))

side() {  # side MY_RTP PEER_RTP FREQ DROP
  timeout $((SECONDS_ + 3)) gst-launch-1.0 -q -e rtpbin name=rb rtp-profile=avpf \
    audiotestsrc is-live=true num-buffers="$BUFFERS" samplesperbuffer=160 wave=sine freq="$3" \
      ! audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay pt=0 ! rb.send_rtp_sink_0 \
    rb.send_rtp_src_0 ! identity drop-probability="$4" ! udpsink host=127.0.0.1 port="$2" sync=false async=false \
    rb.send_rtcp_src_0 ! udpsink host=127.0.0.1 port=$(($2 + 1)) sync=false async=false \
    udpsrc port="$1" caps="application/x-rtp,media=audio,clock-rate=8000,encoding-name=PCMU,payload=0" \
      ! rb.recv_rtp_sink_0 \
    rb. ! rtppcmudepay ! fakesink \
    udpsrc port=$(($1 + 1)) caps="application/x-rtcp" ! rb.recv_rtcp_sink_0 || true
}

tcpdump -i lo -w "$TMP/media.pcap" -U 'udp and portrange 16000-16101' 2>/dev/null &
TCPDUMP=$!
sleep 1
side 16000 16100 440 "$LOSS" &
A=$!
side 16100 16000 1000 0 &
B=$!
wait "$A" "$B"
sleep 0.5
kill "$TCPDUMP"
wait "$TCPDUMP" || true
"${PYTHON:-python3}" "$HERE/add_sip.py" "$TMP/media.pcap" "$OUT" --caller 127.0.0.1:16000 --callee 127.0.0.1:16100
