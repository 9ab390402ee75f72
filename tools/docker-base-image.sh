#!/bin/bash
# Build a local Debian base image for the tcpstack Dockerfile, for hosts that
# cannot pull from a container registry but can reach a Debian mirror.
#
#   sudo tools/docker-base-image.sh [--suite SUITE] [--tag IMAGE:TAG]
#                                   [--mirror URL] [--security-mirror URL] [--force]
#
# It runs `debootstrap --variant=minbase --include=python3 SUITE ROOTFS MIRROR`
# in a fresh mktemp directory (Debian plus its python3: the counterpart of the
# official slim Python images), imports the result with `docker import`,
# removes the directory and prints the `docker build` command that uses the
# new image as BASE_IMAGE.
# The mirror defaults to the one the host's apt uses. An existing image with the
# same tag is kept (nothing is rebuilt) unless --force is given.
set -euo pipefail

SUITE=${SUITE:-bookworm}
TAG=${TAG:-}
MIRROR=${MIRROR:-}
SECURITY_MIRROR=${SECURITY_MIRROR:-}
FORCE=0

prog=${0##*/}
log() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,14s/^# \{0,1\}//p' "$0"
}

while (($#)); do
    case $1 in
        --suite) SUITE=${2:?--suite needs a value}; shift 2 ;;
        --suite=*) SUITE=${1#*=}; shift ;;
        --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
        --tag=*) TAG=${1#*=}; shift ;;
        --mirror) MIRROR=${2:?--mirror needs a value}; shift 2 ;;
        --mirror=*) MIRROR=${1#*=}; shift ;;
        --security-mirror) SECURITY_MIRROR=${2:?--security-mirror needs a value}; shift 2 ;;
        --security-mirror=*) SECURITY_MIRROR=${1#*=}; shift ;;
        --force) FORCE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
TAG=${TAG:-tcpstack-base:$SUITE}

[[ $SUITE =~ ^[a-z][a-z0-9-]*$ ]] || die "suite name looks wrong: $SUITE"

build_hint() {
    local here
    here=$(cd "$(dirname "$0")/.." && pwd)
    cat <<EOF

Base image ready: $TAG
Build tcpstack on it (from $here):

  docker build --network host --build-arg BASE_IMAGE=$TAG -t tcpstack .

EOF
    # A TLS-intercepting proxy's CA must reach pip inside the build.
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null \
        && ! compgen -G "$here/docker/ca-certificates/*.crt" >/dev/null; then
        cat <<EOF
This host trusts extra CA certificates (/usr/local/share/ca-certificates).
If PyPI is reached through a TLS-intercepting proxy, copy them into the
build context first (they are git-ignored there):

  cp /usr/local/share/ca-certificates/*.crt $here/docker/ca-certificates/

EOF
    fi
}

command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine (is dockerd running?)"

if docker image inspect "$TAG" >/dev/null 2>&1 && ((FORCE == 0)); then
    log "image $TAG already exists; use --force to rebuild it"
    build_hint
    exit 0
fi

((EUID == 0)) || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"

# --- find the Debian mirror the host's apt uses ---------------------------
# Prints "URI SUITE" pairs from the host's apt sources (one-line and deb822).
apt_sources() {
    local f
    if [[ -f /etc/apt/sources.list ]]; then
        awk '$1 == "deb" {
                 i = 2
                 if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                 print $i, $(i + 1)
             }' /etc/apt/sources.list
    fi
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        # deb822: paragraphs separated by blank lines; keys are case-insensitive.
        awk 'function flush() {
                 if (types ~ /(^| )deb( |$)/ && enabled != "no")
                     for (u = 1; u <= nu; u++)
                         for (s = 1; s <= ns; s++) print uris[u], suites[s]
                 types = ""; enabled = ""; nu = 0; ns = 0
             }
             /^[ \t]*#/ { next }
             /^[ \t]*$/ { flush(); next }
             {
                 key = tolower($1); sub(/:$/, "", key)
                 $1 = ""; sub(/^ +/, "")
                 if (key == "types") types = $0
                 else if (key == "enabled") enabled = tolower($0)
                 else if (key == "uris") nu = split($0, uris, " ")
                 else if (key == "suites") ns = split($0, suites, " ")
             }
             END { flush() }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        awk '$1 == "deb" {
                 i = 2
                 if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                 print $i, $(i + 1)
             }' "$f"
    done
}

if [[ -z $MIRROR ]]; then
    MIRROR=$(apt_sources | awk -v s="$SUITE" '$2 == s { print $1; exit }')
    if [[ -z $MIRROR ]]; then
        # Host runs another release: take any mirror that serves Debian itself.
        MIRROR=$(apt_sources | awk '$2 !~ /-security$/ && $1 ~ /\/debian\/?$/ { print $1; exit }')
    fi
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi
if [[ -z $SECURITY_MIRROR ]]; then
    SECURITY_MIRROR=$(apt_sources | awk -v s="$SUITE-security" '$2 == s { print $1; exit }')
    SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
fi
MIRROR=${MIRROR%/}
SECURITY_MIRROR=${SECURITY_MIRROR%/}

# debootstrap honours http_proxy; take apt's proxy if the host configured one.
if [[ -z ${http_proxy:-} ]] && command -v apt-config >/dev/null; then
    APT_HTTP_PROXY=
    eval "$(apt-config shell APT_HTTP_PROXY Acquire::http::Proxy)"
    if [[ -n $APT_HTTP_PROXY && $APT_HTTP_PROXY != DIRECT ]]; then
        export http_proxy=$APT_HTTP_PROXY
        log "using apt's HTTP proxy $http_proxy"
    fi
fi

# --- bootstrap in a private temporary directory ----------------------------
workdir=$(mktemp -d "${TMPDIR:-/var/tmp}/tcpstack-base.XXXXXXXX")
rootfs=$workdir/rootfs

cleanup() {
    local rc=$? m
    # debootstrap mounts proc/sys inside the target; never delete through a mount.
    if [[ -d $rootfs ]]; then
        while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done < <(awk -v r="$rootfs" 'index($2, r "/") == 1 { print $2 }' /proc/self/mounts | sort -r)
    fi
    if [[ -n $workdir && $workdir == */tcpstack-base.* && -d $workdir ]]; then
        rm -rf --one-file-system -- "$workdir"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "debootstrap --variant=minbase --include=python3 $SUITE from $MIRROR (into $rootfs)"
debootstrap --variant=minbase --include=python3 "$SUITE" "$rootfs" "$MIRROR" \
    >"$workdir/debootstrap.log" 2>&1 || {
    tail -n 30 "$workdir/debootstrap.log" >&2
    die "debootstrap failed"
}

# apt sources for the image: the release, its updates and its security archive.
case $SUITE in
    sid|unstable|experimental)
        printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$rootfs/etc/apt/sources.list"
        ;;
    *)
        printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
            "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECURITY_MIRROR" "$SUITE" \
            >"$rootfs/etc/apt/sources.list"
        ;;
esac
# Containers do not need downloaded .debs kept around.
printf 'Binary::apt::APT::Keep-Downloaded-Packages "false";\n' \
    >"$rootfs/etc/apt/apt.conf.d/90tcpstack-no-keep-debs"

# Drop host-specific and cached state: Docker provides resolv.conf/hostname.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* \
    "$rootfs"/var/cache/debconf/*-old "$rootfs"/tmp/* "$rootfs"/var/tmp/*
: >"$rootfs/etc/resolv.conf"
printf 'localhost\n' >"$rootfs/etc/hostname"
rm -f "$rootfs/etc/machine-id"

log "importing as $TAG"
tar --numeric-owner --xattrs -C "$rootfs" -c . \
    | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase --include=python3 $SUITE $MIRROR" \
        - "$TAG" >/dev/null

docker image inspect -f '{{.Id}} {{.Size}}' "$TAG" | {
    read -r id size
    log "created $TAG ($id, $((size / 1024 / 1024)) MiB)"
}
build_hint
