#!/bin/bash
# Container entrypoint for tcpstack.
#
#   (no args) or options   -> exec tcpstack serve [env-derived options] [options]
#   serve [options]        -> the same
#   an executable (bash..) -> exec it as is (debugging: docker run ... tcpstack bash)
#   anything else          -> exec tcpstack "$@" (other subcommands)
#
# Environment (each unset/empty variable leaves the daemon's default):
#   TCPSTACK_INTERFACE     --interface       TCPSTACK_HTTP_PORT     --http-port
#   TCPSTACK_HOST_ADDRESS  --host-address    TCPSTACK_ECHO_PORT     --echo-port
#   TCPSTACK_ADDRESS       --address         TCPSTACK_DISCARD_PORT  --discard-port
#   TCPSTACK_MTU           --mtu             TCPSTACK_WWW           --www
#   TCPSTACK_LOG_LEVEL     --log-level       TCPSTACK_USER          --user
#   TCPSTACK_ARGS          extra options, split on whitespace
#   The image sets TCPSTACK_USER=tcpstack: the daemon sets up the TUN as root,
#   then serves as that user with no capabilities. TCPSTACK_USER= keeps root.
#   Options given on the command line come last and so win.
#
#   TCPSTACK_PUBLISH="80 7 9"  forward these TCP ports arriving on the
#       container's own interfaces (eth0, ...) to the stack's address, so that
#       `docker run -p 8080:80 ...` reaches it. An entry may also be OUTER:INNER
#       (container port OUTER to stack port INNER). Needs IPv4 forwarding in the
#       container: `docker run --sysctl net.ipv4.ip_forward=1` (compose: sysctls).
#
# The daemon is exec'd (under tini, PID 1), so SIGTERM from `docker stop` and
# SIGINT from Ctrl-C reach it directly and it exits 0 after a clean shutdown.
set -euo pipefail

log() { printf 'tcpstack-entrypoint: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- decide what to run -----------------------------------------------------
if (($# > 0)); then
    case $1 in
        serve) shift ;;
        -*) ;;
        *)
            if [[ $1 != */* ]] && command -v -- "$1" >/dev/null 2>&1; then
                exec "$@"
            elif [[ $1 == */* && -x $1 ]]; then
                exec "$@"
            fi
            exec tcpstack "$@"
            ;;
    esac
fi

# --- tcpstack serve: options from the environment -------------------------
cli=("$@")
args=()
add() { # add OPTION VALUE: only when VALUE is non-empty
    if [[ -n $2 ]]; then args+=("$1" "$2"); fi
}
add --interface "${TCPSTACK_INTERFACE:-}"
add --host-address "${TCPSTACK_HOST_ADDRESS:-}"
add --address "${TCPSTACK_ADDRESS:-}"
add --mtu "${TCPSTACK_MTU:-}"
add --http-port "${TCPSTACK_HTTP_PORT:-}"
add --echo-port "${TCPSTACK_ECHO_PORT:-}"
add --discard-port "${TCPSTACK_DISCARD_PORT:-}"
add --www "${TCPSTACK_WWW:-}"
add --log-level "${TCPSTACK_LOG_LEVEL:-}"
add --user "${TCPSTACK_USER:-}"
if [[ -n ${TCPSTACK_ARGS:-} ]]; then
    read -r -a extra <<<"$TCPSTACK_ARGS"
    args+=("${extra[@]}")
fi
args+=("${cli[@]}")

# The effective interface, address and user (last occurrence wins, as in argparse).
ifname=tcpstack0
address=10.0.0.2
user=
prev=
for a in "${args[@]}"; do
    case $prev in
        --interface|-i) ifname=$a ;;
        --address|-a) address=$a ;;
        --user) user=$a ;;
    esac
    case $a in
        --interface=*) ifname=${a#*=} ;;
        --address=*) address=${a#*=} ;;
        --user=*) user=${a#*=} ;;
        -i?*) ifname=${a#-i} ;;
        -a?*) address=${a#-a} ;;
    esac
    prev=$a
done

# --- sanity checks with helpful messages ------------------------------------
if [[ ! -c /dev/net/tun ]]; then
    die "/dev/net/tun is missing: run the container with --device /dev/net/tun --cap-add NET_ADMIN"
fi
capeff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)
if [[ -n $capeff ]] && (((16#$capeff >> 12 & 1) == 0)); then # CAP_NET_ADMIN is bit 12
    die "CAP_NET_ADMIN is missing: run the container with --cap-add NET_ADMIN"
fi
# Switching to --user needs CAP_SETGID (bit 6) and CAP_SETUID (bit 7).
if [[ -n $user && -n $capeff ]] && (((16#$capeff >> 6 & 3) != 3)); then
    die "switching to user '$user' needs CAP_SETUID and CAP_SETGID (in Docker's" \
        "default set): add them back, or run as root with -e TCPSTACK_USER="
fi

# --- optional port publishing: eth0:PORT -> ADDRESS:PORT ---------------------
publish() {
    local spec outer inner rules=()
    for spec in ${TCPSTACK_PUBLISH//,/ }; do
        if [[ $spec =~ ^([0-9]+)(:([0-9]+))?$ ]]; then
            outer=${BASH_REMATCH[1]}
            inner=${BASH_REMATCH[3]:-$outer}
        else
            die "TCPSTACK_PUBLISH: bad entry '$spec' (want PORT or OUTER:INNER)"
        fi
        if ((outer < 1 || outer > 65535 || inner < 1 || inner > 65535)); then
            die "TCPSTACK_PUBLISH: port out of range in '$spec'"
        fi
        rules+=("        iifname != { \"lo\", \"$ifname\" } tcp dport $outer dnat to $address:$inner")
        log "publishing container tcp/$outer -> $address:$inner"
    done
    ((${#rules[@]})) || return 0

    [[ $address =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] \
        || die "TCPSTACK_PUBLISH needs an IPv4 --address, got '$address'"
    command -v nft >/dev/null || die "TCPSTACK_PUBLISH needs nft (nftables)"

    if [[ $(cat /proc/sys/net/ipv4/ip_forward) != 1 ]]; then
        if ! { echo 1 >/proc/sys/net/ipv4/ip_forward; } 2>/dev/null; then
            die "TCPSTACK_PUBLISH needs IPv4 forwarding in the container:" \
                "run it with --sysctl net.ipv4.ip_forward=1"
        fi
    fi

    # One atomic transaction; replaces the table if it exists already.
    {
        echo 'table ip tcpstack_publish'
        echo 'delete table ip tcpstack_publish'
        echo 'table ip tcpstack_publish {'
        echo '    chain prerouting {'
        echo '        type nat hook prerouting priority dstnat; policy accept;'
        printf '%s\n' "${rules[@]}"
        echo '    }'
        echo '}'
    } | nft -f - || die "could not install the nftables DNAT rules"
}
if [[ -n ${TCPSTACK_PUBLISH:-} ]]; then
    publish
fi

exec tcpstack serve "${args[@]}"
