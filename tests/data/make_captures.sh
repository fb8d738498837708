#!/usr/bin/env bash
# Regenerate the real-tool captures committed in tests/data/:
#
#   sipp_uac_pcap.pcap            SIPp built-in "uac_pcap" call (mode A)
#   demo_speech.pcap              README demo: speech in both directions (mode B)
#   demo_speech_caller_8k.wav     8 kHz source audio of the caller sentence
#   demo_speech_callee_8k.wav     8 kHz source audio of the callee sentence
#   relay_call.pcap               a call through a SIP proxy + transcoding media relay:
#                                 each direction is two concurrent RTP flows (mode C)
#   sipp_g722_reinvite.pcap       a PCMU call that re-INVITEs to G.722: SIPp plays a PCMU pcap,
#                                 re-INVITEs, plays a G.722 pcap made by spandsp's encoder
#                                 (tools/make_g722_rtp.py, run with the project's .venv python)
#
# Usage: make_captures.sh [all|sipp|demo|relay|g722]   (default all)
#
# Needs root and the Debian packages sip-tester tcpdump espeak-ng sox libspandsp-dev
# (tshark optional, for the summary).  Traffic stays on the loopback interface.
# Call-IDs and packet timestamps differ on every run; the audio is
# deterministic for a given espeak-ng/sox version.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOLS=$(cd "$HERE/../tools" && pwd)

CALLER_TEXT="Hello, this is the rtp2ws demo call. Please tell me your account number."
CALLEE_TEXT="Sure. My account number is four five six seven. Thank you."
CALLER_VOICE=en-us
CALLEE_VOICE=en-gb+f3
LEAD=0.5   # caller starts talking 0.5 s after the answer
GAP=0.8    # callee answers 0.8 s after the caller stops
TAIL=0.6   # both legs keep sending silence this long after the callee stops

ONLY=${1:-all}
case $ONLY in all|sipp|demo|relay|g722) ;; *) echo "usage: $0 [all|sipp|demo|relay|g722]" >&2; exit 2;; esac
want() { [[ $ONLY == all || $ONLY == "$1" ]]; }

TMP=$(mktemp -d /tmp/make_captures.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

wav_seconds() {
    python3 -c 'import sys,wave; w=wave.open(sys.argv[1]); print(w.getnframes()/w.getframerate())' "$1"
}
calc() { python3 -c "print(round($1, 2))"; }

# ---------------------------------------------------------------- mode A
if want sipp; then
echo "== sipp_uac_pcap.pcap (sipp -sn uac_pcap)"
"$TOOLS/record_sipp_call.sh" "$HERE/sipp_uac_pcap.pcap"
fi

# ---------------------------------------------------------------- mode B
if want demo; then
echo "== demo_speech.pcap (speech both ways)"
# 1st pass: just measure how long each sentence is
python3 "$TOOLS/make_speech_rtp.py" "$CALLER_TEXT" "$TMP/caller.pcap" --law alaw --voice "$CALLER_VOICE" >/dev/null
python3 "$TOOLS/make_speech_rtp.py" "$CALLEE_TEXT" "$TMP/callee.pcap" --law alaw --voice "$CALLEE_VOICE" >/dev/null
caller_s=$(wav_seconds "$TMP/caller.pcap.raw.wav")
callee_s=$(wav_seconds "$TMP/callee.pcap.raw.wav")
# quantize to whole 20 ms frames (what make_speech_rtp.py does anyway)
callee_lead=$(calc "round(($LEAD + $caller_s + $GAP) / 0.02) * 0.02")
total=$(calc "$callee_lead + $callee_s + $TAIL")

# 2nd pass: both legs send RTP for the whole call (silence while the other talks)
python3 "$TOOLS/make_speech_rtp.py" "$CALLER_TEXT" "$TMP/caller.pcap" --law alaw --voice "$CALLER_VOICE" \
    --lead-silence "$LEAD" --pad-to "$total" --ssrc 0xCA11E401 --seq 1000 --ts 8000
python3 "$TOOLS/make_speech_rtp.py" "$CALLEE_TEXT" "$TMP/callee.pcap" --law alaw --voice "$CALLEE_VOICE" \
    --lead-silence "$callee_lead" --pad-to "$total" --ssrc 0xCA11EE02 --seq 50000 --ts 1600000

"$TOOLS/record_sipp_call.sh" "$HERE/demo_speech.pcap" \
    --scenario "$TOOLS/uac_play.xml" --audio-pcap "$TMP/caller.pcap" \
    --uas-scenario "$TOOLS/uas_play.xml" --uas-audio-pcap "$TMP/callee.pcap"

cp "$TMP/caller.pcap.raw.wav" "$HERE/demo_speech_caller_8k.wav"
cp "$TMP/callee.pcap.raw.wav" "$HERE/demo_speech_callee_8k.wav"
echo "caller speech ${caller_s}s from t=${LEAD}s, callee speech ${callee_s}s from t=${callee_lead}s (relative to the first RTP packet of each leg), legs ${total}s"
fi

# ---------------------------------------------------------------- mode C
if want relay; then
echo "== relay_call.pcap (SIP proxy + transcoding media relay between the two SIPp)"
# caller speaks A-law from 0.3 s, callee answers in u-law from 2.0 s; both send 3.4 s of RTP
python3 "$TOOLS/make_speech_rtp.py" "Please transfer me to billing." "$TMP/relay_caller.pcap" --law alaw \
    --voice en-us --lead-silence 0.3 --pad-to 3.4 --ssrc 0xCA11E401 --seq 1000 --ts 8000
python3 "$TOOLS/make_speech_rtp.py" "One moment please." "$TMP/relay_callee.pcap" --law ulaw \
    --voice en-gb+f3 --lead-silence 2.0 --pad-to 3.4 --ssrc 0xCA11EE02 --seq 50000 --ts 1600000
"$TOOLS/record_sipp_call.sh" "$HERE/relay_call.pcap" --relay \
    --scenario "$TOOLS/uac_play.xml" --audio-pcap "$TMP/relay_caller.pcap" \
    --uas-scenario "$TOOLS/uas_play_pcmu.xml" --uas-audio-pcap "$TMP/relay_callee.pcap"
fi

# ---------------------------------------------------------------- G.722 re-INVITE
if want g722; then
echo "== sipp_g722_reinvite.pcap (PCMU, re-INVITE, G.722: one SSRC, sequence and timestamps going on)"
VENV_PY=${VENV_PY:-$HERE/../../.venv/bin/python}
python3 "$TOOLS/make_speech_rtp.py" "Hello, this call starts in mu law." "$TMP/g722_part1.pcap" --law ulaw \
    --ssrc 0x5EED0722 --seq 2000 --ts 80000
"$VENV_PY" "$TOOLS/make_g722_rtp.py" "And now the same call speaks G seven twenty two, in wide band." \
    "$TMP/g722_part2.pcap" --ssrc 0x5EED0722 --seq 2121 --ts 99360
"$TOOLS/record_sipp_call.sh" "$HERE/sipp_g722_reinvite.pcap" \
    --scenario "$TOOLS/uac_reinvite_g722.xml" --audio-pcap "$TMP/g722_part1.pcap" \
    --audio-pcap2 "$TMP/g722_part2.pcap" --uas-scenario "$TOOLS/uas_reinvite_g722.xml" \
    --uac-sip-port 15160 --uas-sip-port 15162 --uac-rtp-port 16300 --uas-rtp-port 16400
fi

# ---------------------------------------------------------------- summary
echo "== summary"
ls -l "$HERE"/sipp_uac_pcap.pcap "$HERE"/demo_speech.pcap "$HERE"/demo_speech_*_8k.wav "$HERE"/relay_call.pcap \
    "$HERE"/sipp_g722_reinvite.pcap
want sipp && python3 "$TOOLS/pcap_summary.py" "$HERE/sipp_uac_pcap.pcap"
want demo && python3 "$TOOLS/pcap_summary.py" "$HERE/demo_speech.pcap" \
    --ref "$HERE/demo_speech_caller_8k.wav" --ref "$HERE/demo_speech_callee_8k.wav"
want relay && python3 "$TOOLS/pcap_summary.py" "$HERE/relay_call.pcap"
if command -v tshark >/dev/null; then
    for f in "$HERE/sipp_uac_pcap.pcap" "$HERE/demo_speech.pcap" "$HERE/relay_call.pcap" "$HERE/sipp_g722_reinvite.pcap"; do
        echo "-- tshark $f"
        tshark -r "$f" -q -z sip,stat -z rtp,streams 2>/dev/null
    done
fi
