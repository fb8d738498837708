#!/usr/bin/env bash
#
# tee.sh - mirror a PBX's SIP and RTP packets to an rtp2ws host with the iptables TEE target
#
#   sudo tee.sh up --gateway 192.0.2.10 [--gateway6 2001:db8::10] [--sip-ports 5060,5080]
#                  [--rtp-ports 16384-32768] [--sip-tcp] [--interface IF] [--no-fragments]
#                  [--chain RTP2WS_TEE] [--dry-run]
#   sudo tee.sh down   [--chain RTP2WS_TEE] [--dry-run]
#   sudo tee.sh status [--chain RTP2WS_TEE]
#   tee.sh --help
#
# WHAT IT DOES
#   rtp2ws only listens: it needs a copy of the PBX's SIP and RTP packets on the host where
#   it runs.  Run on the PBX, this script makes the Linux kernel produce that copy.  The
#   TEE target of iptables (mangle table) clones every packet a rule matches and sends the
#   clone to the MAC address of --gateway as its next hop.  The clone keeps the original
#   IP addresses and ports; the original packet goes on untouched (TEE changes nothing in
#   it, drops nothing, and its rule does not end the chain).  Because only the next hop is
#   changed, the gateway must be on a directly connected network (the same Ethernet
#   segment as one of the PBX's interfaces): given any other address, the kernel would hand
#   the clone to a router, which would deliver it to the packet's real destination.
#
#   `up` installs, in the mangle table:
#     - a chain of its own (default RTP2WS_TEE) holding one TEE rule per kind of traffic:
#       SIP over UDP (source OR destination port in --sip-ports), SIP over TCP (only with
#       --sip-tcp), RTP (source OR destination port in --rtp-ports), and IPv4 UDP fragments
#       (see FRAGMENTS).  Each TEE rule is followed by a RETURN with the same match, so a
#       packet that fits several kinds (SIP to 5060 sent from an ephemeral port inside the
#       RTP range) is cloned once, not twice;
#     - one jump into that chain at the top of PREROUTING (packets arriving at the PBX) and
#       one at the top of POSTROUTING (packets leaving it), so both directions of every
#       call are copied.  Loopback traffic is skipped (every packet on lo would pass both
#       hooks and be copied twice); --interface IF restricts the jumps to -i IF / -o IF.
#   With --gateway6 the same rules go into the ip6tables mangle table as well.
#   `up` is idempotent: it re-creates the chain's content and leaves exactly one jump in
#   each of the two built-in chains.  The installed state is the one the last `up`
#   describes (an IPv6 chain left from an earlier `up --gateway6` is removed when the new
#   `up` has no --gateway6, and vice versa).
#   `down` removes the two jumps and the chain, in both families, and nothing else: the
#   mangle table is left exactly as it was before `up`.  Nothing installed: no-op, exit 0.
#   `status` lists the chain and the jumps with their packet and byte counters.
#
# WHY NOT THE ONE-LINER
#   The usual recipe, `iptables -t mangle -F` then `-j TEE` on all UDP in PREROUTING and
#   POSTROUTING, deletes every other mangle rule on the host (firewalls, VPNs, Docker and
#   Kubernetes put rules there), copies all UDP (DNS, NTP, syslog, monitoring) at the cost
#   of one clone per packet, and cannot be undone without knowing what was there before.
#
# LOOPS
#   Clones are never copied again: the kernel flags the packet it is duplicating
#   (nf_dup_ipv4/nf_dup_ipv6) and TEE does nothing while the flag is set, so the clone
#   passing OUTPUT/POSTROUTING on its way to the gateway is not cloned again.  It still
#   matches the rules there, so the counters `status` shows count each mirrored packet
#   twice (with --interface: only when the clone leaves through that interface).
#
# FRAGMENTS
#   An IPv4 datagram larger than the path MTU (a SIP INVITE with a long SDP offer: many
#   codecs, ICE candidates, SRTP keys, long Via/Record-Route lists) travels as fragments.
#   Only the first fragment carries the UDP header, so no port rule can match the others.
#   - Leaving the PBX: the kernel fragments after POSTROUTING, so the chain sees the whole
#     datagram, clones it, and the clone is fragmented on its way to the gateway.
#   - Arriving: if connection tracking is active (a stateful firewall or NAT), netfilter
#     reassembles before the mangle table and the chain again sees whole datagrams.
#     Otherwise the fragments arrive one by one: the first matches the port rules, the
#     others only a rule without ports.
#   The chain therefore ends with `-p udp -f -j TEE` (IPv6: `-p udp -m frag` after a RETURN
#   for first fragments): every non-first UDP fragment is cloned, whatever datagram it
#   belongs to, because nothing in it says which ports the datagram had.  rtp2ws
#   reassembles fragments and drops incomplete datagrams after a timeout, so the occasional
#   stray fragment of another large UDP datagram costs one clone and nothing else.  The
#   alternatives are worse: no fragment rule loses large incoming SIP messages (the calls
#   they set up are missed), and forcing reassembly (a conntrack match) would switch on
#   connection tracking, with its table limit, on a PBX that may not use it.
#   --no-fragments leaves the fragment rules out.
#
# EXIT STATUS
#   0 success; 1 an iptables command failed; 2 bad arguments, not root, TEE target not
#   available, or a gateway that cannot work (nothing is changed); 3 `status`: not (fully)
#   installed.

set -euo pipefail

PROG=${0##*/}

CHAIN=RTP2WS_TEE
GATEWAY=""
GATEWAY6=""
SIP_PORTS=5060,5080
RTP_PORTS=16384-32768
SIP_TCP=0
IFACE=""
FRAGMENTS=1
DRY_RUN=0
COMMAND=""

usage() {
    cat <<EOF
Usage: $PROG up|down|status [options]

Mirror a PBX's SIP and RTP packets to an rtp2ws host with the iptables TEE target.

Commands:
  up        install (or re-install) the mirroring rules
  down      remove exactly what up installed (IPv4 and IPv6); no-op if nothing is installed
  status    show the rules and their packet counters; exit 0 if installed, 3 if not

Options:
  --gateway ADDR      IPv4 address of the rtp2ws host; it must be on a directly connected
                      network (TEE sends each clone to its MAC address)
  --gateway6 ADDR     IPv6 address of the rtp2ws host: mirror IPv6 too (ip6tables)
  --sip-ports LIST    SIP ports, e.g. 5060,5080 or 5060-5070 (default $SIP_PORTS)
  --rtp-ports RANGE   RTP port range, e.g. 16384-32768 (default $RTP_PORTS, FreeSWITCH's)
  --sip-tcp           also mirror SIP over TCP on the SIP ports
  --interface IF      mirror only what arrives on / leaves through IF (default: every
                      interface except lo)
  --no-fragments      do not mirror UDP fragments (large SIP messages may be lost)
  --chain NAME        name of the chain holding the rules (default RTP2WS_TEE)
  --dry-run           print the iptables commands instead of running them
  -h, --help          this help

Either option form works: --gateway 192.0.2.10 or --gateway=192.0.2.10.
Exit status: 0 ok, 1 an iptables command failed, 2 bad usage or TEE unavailable
(nothing changed), 3 status: not installed.
EOF
}

err() { printf '%s: %s\n' "$PROG" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() { err "error: $*"; exit 2; }          # usage / precondition errors: nothing changed
fail() { err "error: $*"; exit 1; }         # an iptables command failed

# ---------------------------------------------------------------------------- validation

valid_ipv4() {  # dotted quad, no leading zeros (inet_aton would read 010 as octal)
    local a=$1 o
    [[ $a =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || return 1
    local IFS=.
    # shellcheck disable=SC2086  # split on dots on purpose
    set -- $a
    for o in "$@"; do
        [[ $o == 0 || $o != 0* ]] || return 1
        (( 10#$o <= 255 )) || return 1
    done
}

check_gateway4() {
    local a=$1 first
    valid_ipv4 "$a" || die "--gateway: '$a' is not an IPv4 address (dotted quad like 192.0.2.10)"
    first=${a%%.*}
    (( first != 0 && first != 127 )) || die "--gateway: $a is not a usable unicast address"
    (( first < 224 )) || die "--gateway: $a is multicast, broadcast or reserved; give the rtp2ws host's own address"
}

valid_ipv6() {
    local a=$1 head tail g n=0 groups
    [[ -n $a && $a =~ ^[0-9A-Fa-f:.]+$ ]] || return 1
    [[ $a != *:::* ]] || return 1
    if [[ $a == *.* ]]; then                    # embedded IPv4 tail, e.g. ::ffff:192.0.2.1
        valid_ipv4 "${a##*:}" || return 1
        [[ ${a%:*} != "$a" ]] || return 1
        a="${a%:*}:0:0"                          # it takes the room of two groups
    fi
    case $a in
        *::*::*) return 1 ;;
        :[!:]* | *[!:]:) return 1 ;;              # a single leading or trailing colon
    esac
    if [[ $a == *::* ]]; then
        head=${a%%::*}; tail=${a#*::}
    else
        head=$a; tail=""
    fi
    local IFS=:
    for groups in "$head" "$tail"; do
        [[ -n $groups ]] || continue
        # shellcheck disable=SC2086
        set -- $groups
        for g in "$@"; do
            [[ $g =~ ^[0-9A-Fa-f]{1,4}$ ]] || return 1
            n=$((n + 1))
        done
    done
    if [[ $a == *::* ]]; then (( n <= 7 )); else (( n == 8 )); fi
}

check_gateway6() {
    local a=$1 lower
    valid_ipv6 "$a" || die "--gateway6: '$a' is not an IPv6 address (like 2001:db8::10)"
    lower=$(printf '%s' "$a" | tr 'A-F' 'a-f')
    case $lower in
        :: | ::1 | 0:0:0:0:0:0:0:0 | 0:0:0:0:0:0:0:1)
            die "--gateway6: $a is not a usable unicast address" ;;
        ff*) die "--gateway6: $a is multicast; give the rtp2ws host's own address" ;;
        fe[89ab]?:*)
            die "--gateway6: $a is link-local; give a global or unique-local (fc00::/7) address of the rtp2ws host" ;;
    esac
}

# port_list NAME LIST -> prints the list in iptables multiport syntax (a,b,lo:hi)
port_list() {
    local name=$1 list=$2 item lo hi out=""
    [[ -n $list ]] || die "$name: empty port list"
    [[ $list != ,* && $list != *, && $list != *,,* ]] || die "$name: '$list': empty item in the list"
    local IFS=,
    for item in $list; do
        if [[ $item =~ ^([0-9]{1,5})[-:]([0-9]{1,5})$ ]]; then
            lo=${BASH_REMATCH[1]}; hi=${BASH_REMATCH[2]}
        elif [[ $item =~ ^[0-9]{1,5}$ ]]; then
            lo=$item; hi=$item
        else
            die "$name: '$item' is not a port (1-65535) or a range LOW-HIGH"
        fi
        lo=$((10#$lo)); hi=$((10#$hi))
        (( lo >= 1 && lo <= 65535 )) || die "$name: port $lo out of range 1-65535"
        (( hi >= 1 && hi <= 65535 )) || die "$name: port $hi out of range 1-65535"
        (( lo <= hi )) || die "$name: range $item is reversed (low port first: $hi-$lo)"
        if (( lo == hi )); then out+="${out:+,}$lo"; else out+="${out:+,}$lo:$hi"; fi
    done
    printf '%s\n' "$out"
}

# chunks LIST -> the list split into lines of at most 15 multiport slots (a range takes 2)
chunks() {
    local item line="" slots=0 need
    local IFS=,
    for item in $1; do
        if [[ $item == *:* ]]; then need=2; else need=1; fi
        if (( slots + need > 15 )); then
            printf '%s\n' "$line"; line=""; slots=0
        fi
        line+="${line:+,}$item"; slots=$((slots + need))
    done
    printf '%s\n' "$line"
}

# ------------------------------------------------------------------------------ iptables

ipt_cmd() {  # FAMILY -> name of the tool
    if [[ $1 == 6 ]]; then echo ip6tables; else echo iptables; fi
}

have_tool() { command -v "$(ipt_cmd "$1")" >/dev/null 2>&1; }

# run FAMILY ARGS...: a change to the mangle table (printed instead with --dry-run)
run() {
    local tool
    tool=$(ipt_cmd "$1"); shift
    if (( DRY_RUN )); then
        printf '%s -w 10 -t mangle %s\n' "$tool" "$*"
        return 0
    fi
    "$tool" -w 10 -t mangle "$@" || fail "command failed: $tool -t mangle $*"
}

# query FAMILY ARGS...: read-only look at the mangle table (never printed; fails quietly)
query() {
    local tool
    tool=$(ipt_cmd "$1"); shift
    (( CAN_READ )) || return 1
    "$tool" -w 10 -t mangle "$@" 2>/dev/null
}

chain_exists() { query "$1" -S "$CHAIN" >/dev/null; }

# jump_numbers FAMILY HOOK -> rule numbers (highest first) of the rules jumping to CHAIN
jump_numbers() {
    local rules
    rules=$(query "$1" -S "$2") || return 0
    printf '%s\n' "$rules" | awk -v c="$CHAIN" '
        NR > 1 { for (i = 1; i < NF; i++) if (($i == "-j" || $i == "-g") && $(i + 1) == c) { print NR - 1; break } }
    ' | sort -rn
}

jump_match() {  # HOOK -> the match of our jump rule
    if [[ $1 == PREROUTING ]]; then
        if [[ -n $IFACE ]]; then echo "-i $IFACE"; else echo "! -i lo"; fi
    else
        if [[ -n $IFACE ]]; then echo "-o $IFACE"; else echo "! -o lo"; fi
    fi
}

# Is the TEE target usable?  Userspace extension first (no change), then the kernel: a
# TEE rule in a scratch chain that nothing jumps to, removed again at once.
check_tee() {
    local fam=$1 gw=$2 tool probe="${CHAIN}_CHK" ok=1 what="TEE" module=xt_TEE
    tool=$(ipt_cmd "$fam")
    local how="load it with 'modprobe xt_TEE' (kernel option CONFIG_NETFILTER_XT_TARGET_TEE; with the nf_tables backend also nft_compat, CONFIG_NFT_COMPAT), or install the package with the iptables extensions (libxt_TEE.so)"
    local help
    help=$("$tool" -j TEE --help 2>/dev/null) || help=""
    if [[ $help != *"TEE target options"* ]]; then
        die "the iptables TEE target is not available to $tool: $how.  Nothing was changed."
    fi
    (( DRY_RUN )) && return 0
    if "$tool" -w 10 -t mangle -F "$probe" >/dev/null 2>&1; then    # left by an interrupted run
        "$tool" -w 10 -t mangle -X "$probe" >/dev/null 2>&1 || true
    fi
    "$tool" -w 10 -t mangle -N "$probe" >/dev/null 2>&1 || fail "cannot create a chain in the $tool mangle table"
    if ! "$tool" -w 10 -t mangle -A "$probe" -j TEE --gateway "$gw" >/dev/null 2>&1; then
        ok=0
    elif ! "$tool" -w 10 -t mangle -A "$probe" -p udp -m multiport --ports 1,2:3 -j RETURN >/dev/null 2>&1; then
        ok=0; what="multiport match"; module=xt_multiport
        how="load it with 'modprobe xt_multiport' (CONFIG_NETFILTER_XT_MATCH_MULTIPORT)"
    elif [[ $fam == 6 ]] && (( FRAGMENTS )) \
        && ! "$tool" -w 10 -t mangle -A "$probe" -p udp -m frag --fragfirst -j RETURN >/dev/null 2>&1; then
        ok=0; what="frag match"; module=ip6t_frag
        how="load it with 'modprobe ip6t_frag' (CONFIG_IP6_NF_MATCH_FRAG), or use --no-fragments"
    fi
    "$tool" -w 10 -t mangle -F "$probe" >/dev/null 2>&1 || true
    "$tool" -w 10 -t mangle -X "$probe" >/dev/null 2>&1 || true
    if (( ! ok )); then
        if [[ $what == TEE ]]; then
            die "the kernel does not accept the TEE target ($tool): $how.  Nothing was changed."
        fi
        die "the kernel does not accept the $what ($module) for $tool: $how.  Nothing was changed."
    fi
}

# The gateway must be on-link and not one of our own addresses.
check_route() {
    local fam=$1 gw=$2 route
    command -v ip >/dev/null 2>&1 || return 0
    if ! route=$(ip "-$fam" route get "$gw" 2>&1); then
        die "gateway $gw is not reachable from this host (ip route get: ${route//$'\n'/ })"
    fi
    route=${route%%$'\n'*}
    case "$route " in
        local\ *) die "gateway $gw is an address of this host; give the rtp2ws host's address" ;;
        *" via "*)
            die "gateway $gw is not on a directly connected network (route: $route).  TEE sends each clone to the gateway's MAC address, so the rtp2ws host must share a network segment with the PBX; otherwise the router would deliver the clones to their original destinations" ;;
    esac
}

install_family() {
    local fam=$1 gw=$2 sip rtp line hook n
    sip=$(port_list --sip-ports "$SIP_PORTS")
    rtp=$(port_list --rtp-ports "$RTP_PORTS")
    if chain_exists "$fam"; then run "$fam" -F "$CHAIN"; else run "$fam" -N "$CHAIN"; fi
    while IFS= read -r line; do
        run "$fam" -A "$CHAIN" -p udp -m multiport --ports "$line" -j TEE --gateway "$gw"
        run "$fam" -A "$CHAIN" -p udp -m multiport --ports "$line" -j RETURN
    done < <(chunks "$sip")
    if (( SIP_TCP )); then
        while IFS= read -r line; do
            run "$fam" -A "$CHAIN" -p tcp -m multiport --ports "$line" -j TEE --gateway "$gw"
            run "$fam" -A "$CHAIN" -p tcp -m multiport --ports "$line" -j RETURN
        done < <(chunks "$sip")
    fi
    while IFS= read -r line; do
        run "$fam" -A "$CHAIN" -p udp -m multiport --ports "$line" -j TEE --gateway "$gw"
        run "$fam" -A "$CHAIN" -p udp -m multiport --ports "$line" -j RETURN
    done < <(chunks "$rtp")
    if (( FRAGMENTS )); then
        if [[ $fam == 4 ]]; then
            run "$fam" -A "$CHAIN" -p udp -f -j TEE --gateway "$gw"
        else
            run "$fam" -A "$CHAIN" -p udp -m frag --fragfirst -j RETURN
            run "$fam" -A "$CHAIN" -p udp -m frag -j TEE --gateway "$gw"
        fi
    fi
    for hook in PREROUTING POSTROUTING; do
        # New jump first, then drop the old ones (numbers shift by one after the insert):
        # mirroring never stops, and exactly one jump is left.
        local old
        old=$(jump_numbers "$fam" "$hook")
        # shellcheck disable=SC2046  # the match is several words on purpose
        run "$fam" -I "$hook" 1 $(jump_match "$hook") -j "$CHAIN"
        for n in $old; do
            run "$fam" -D "$hook" $((n + 1))
        done
    done
}

# remove_family FAMILY -> 0 if something was removed, 1 if nothing was installed
remove_family() {
    local fam=$1 hook n found=1
    have_tool "$fam" || return 1
    for hook in PREROUTING POSTROUTING; do
        for n in $(jump_numbers "$fam" "$hook"); do
            run "$fam" -D "$hook" "$n"; found=0
        done
    done
    if chain_exists "$fam"; then
        run "$fam" -F "$CHAIN"
        run "$fam" -X "$CHAIN"
        found=0
    fi
    return "$found"
}

# status_family FAMILY -> prints; returns 0 installed, 1 absent, 2 partial
status_family() {
    local fam=$1 tool hook n pre post label
    tool=$(ipt_cmd "$fam")
    if [[ $fam == 6 ]]; then label=IPv6; else label=IPv4; fi
    have_tool "$fam" || { echo "$label: $tool not found"; return 1; }
    pre=$(jump_numbers "$fam" PREROUTING | wc -l)
    post=$(jump_numbers "$fam" POSTROUTING | wc -l)
    if ! chain_exists "$fam"; then
        if (( pre + post == 0 )); then
            echo "$label: not installed (no chain $CHAIN in the $tool mangle table)"
            return 1
        fi
        echo "$label: BROKEN: jumps to $CHAIN without the chain; run '$PROG down'"
        return 2
    fi
    echo "$label ($tool -t mangle): chain $CHAIN"
    query "$fam" -L "$CHAIN" -v -n -x --line-numbers
    for hook in PREROUTING POSTROUTING; do
        echo "  jump from $hook:"
        query "$fam" -L "$hook" -v -n -x --line-numbers \
            | awk -v c="$CHAIN" 'NR == 2 || $4 == c { print "  " $0 }'
    done
    echo "  (the clones, on their way to the gateway, pass POSTROUTING too and are counted"
    echo "   there once more; they are not copied again)"
    if (( pre == 1 && post == 1 )); then
        echo "$label: installed"
        return 0
    fi
    echo "$label: INCOMPLETE: $pre jump(s) from PREROUTING, $post from POSTROUTING (expected 1 each); run '$PROG up' again or '$PROG down'"
    return 2
}

# ---------------------------------------------------------------------------- arguments

need_value() {  # OPTION REMAINING-ARG-COUNT
    (( $2 >= 2 )) || die "option $1 needs a value (see $PROG --help)"
}

while (( $# )); do
    opt=$1
    case $opt in
        --*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; continue ;;
    esac
    case $opt in
        up | down | status)
            [[ -z $COMMAND ]] || die "one command only (got '$COMMAND' and '$opt')"
            COMMAND=$opt ;;
        --gateway) need_value "$opt" $#; GATEWAY=$2; shift ;;
        --gateway6) need_value "$opt" $#; GATEWAY6=$2; shift ;;
        --sip-ports) need_value "$opt" $#; SIP_PORTS=$2; shift ;;
        --rtp-ports) need_value "$opt" $#; RTP_PORTS=$2; shift ;;
        --interface) need_value "$opt" $#; IFACE=$2; shift ;;
        --chain) need_value "$opt" $#; CHAIN=$2; shift ;;
        --sip-tcp) SIP_TCP=1 ;;
        --no-fragments) FRAGMENTS=0 ;;
        --dry-run) DRY_RUN=1 ;;
        -h | --help) usage; exit 0 ;;
        -*) die "unknown option '$opt' (see $PROG --help)" ;;
        *) die "unknown command '$opt' (expected up, down or status)" ;;
    esac
    shift
done

[[ -n $COMMAND ]] || { usage >&2; die "no command given (expected up, down or status)"; }

[[ $CHAIN =~ ^[A-Za-z][A-Za-z0-9_-]{0,23}$ ]] \
    || die "--chain: '$CHAIN' is not a valid chain name (a letter, then letters, digits, _ or -; at most 24 characters)"
case $CHAIN in
    PREROUTING | INPUT | FORWARD | OUTPUT | POSTROUTING | ACCEPT | DROP | RETURN | QUEUE | TEE | MARK)
        die "--chain: '$CHAIN' is a built-in name; choose a chain name of your own" ;;
esac
if [[ -n $IFACE ]]; then
    [[ $IFACE =~ ^[A-Za-z0-9_.:@-]{1,15}\+?$ ]] || die "--interface: '$IFACE' is not an interface name"
    [[ $IFACE != lo ]] || die "--interface: mirroring loopback traffic is not supported"
fi
[[ -z $GATEWAY ]] || check_gateway4 "$GATEWAY"
[[ -z $GATEWAY6 ]] || check_gateway6 "$GATEWAY6"
port_list --sip-ports "$SIP_PORTS" >/dev/null
port_list --rtp-ports "$RTP_PORTS" >/dev/null

if [[ $COMMAND == up && -z $GATEWAY && -z $GATEWAY6 ]]; then
    die "up needs --gateway (IPv4 address of the rtp2ws host) and/or --gateway6"
fi

DRYTAG=""
(( ! DRY_RUN )) || DRYTAG="(dry run) "
CAN_READ=1
if [[ $(id -u) != 0 ]]; then
    if (( DRY_RUN )); then
        CAN_READ=0
        warn "not root: the current rules cannot be read; showing the commands for a host without them"
    else
        die "must be run as root (it changes the mangle table); try: sudo $0 $COMMAND ..."
    fi
fi

if [[ $COMMAND != status ]] && (( ! DRY_RUN )) && ! have_tool 4 && ! have_tool 6; then
    die "neither iptables nor ip6tables found in PATH"
fi

# ---------------------------------------------------------------------------- commands

case $COMMAND in
    up)
        # Every check first; only then change anything.
        if [[ -n $GATEWAY ]]; then
            have_tool 4 || die "iptables not found in PATH"
            check_tee 4 "$GATEWAY"
            (( ! CAN_READ )) || check_route 4 "$GATEWAY"
        fi
        if [[ -n $GATEWAY6 ]]; then
            have_tool 6 || die "--gateway6 given but ip6tables not found in PATH"
            check_tee 6 "$GATEWAY6"
            (( ! CAN_READ )) || check_route 6 "$GATEWAY6"
        fi
        if [[ -n $GATEWAY ]]; then
            install_family 4 "$GATEWAY"
        elif remove_family 4; then
            echo "$PROG: ${DRYTAG}removing the IPv4 rules of an earlier up (no --gateway this time)" >&2
        fi
        if [[ -n $GATEWAY6 ]]; then
            install_family 6 "$GATEWAY6"
        elif remove_family 6; then
            echo "$PROG: ${DRYTAG}removing the IPv6 rules of an earlier up (no --gateway6 this time)" >&2
        fi
        if (( ! DRY_RUN )); then
            proto=udp
            (( ! SIP_TCP )) || proto=udp+tcp
            echo "$PROG: mirroring SIP ($proto $SIP_PORTS) and RTP ($RTP_PORTS) to${GATEWAY:+ $GATEWAY}${GATEWAY6:+ $GATEWAY6} (chain $CHAIN)"
        fi
        ;;
    down)
        removed=0
        if remove_family 4; then removed=1; fi
        if remove_family 6; then removed=1; fi
        if (( ! DRY_RUN )); then
            if (( removed )); then
                echo "$PROG: removed chain $CHAIN and its jumps"
            else
                echo "$PROG: nothing to remove (chain $CHAIN is not installed)"
            fi
        fi
        ;;
    status)
        rc4=0; rc6=0
        status_family 4 || rc4=$?
        status_family 6 || rc6=$?
        if (( rc4 == 2 || rc6 == 2 )) || (( rc4 == 1 && rc6 == 1 )); then
            exit 3
        fi
        ;;
esac
exit 0
