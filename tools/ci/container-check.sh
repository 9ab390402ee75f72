#!/usr/bin/env bash
# Build the project's container image and run it for real, as CI does after
# the test suite (.ci/run). Needs root on a Debian machine; installs Debian's
# docker.io, docker-compose and debootstrap when they are missing.
#
#   bash tools/ci/container-check.sh
#
# Nothing here touches the machine's own Docker (if any), firewall, forwarding
# or network configuration:
#
# * A private *build* engine runs in the machine's network namespace, so that
#   `docker build --network host` reaches the package mirrors, but with
#   --bridge=none --iptables=false --ip6tables=false --ip-forward=false
#   --ip-masq=false: it creates no interface and no firewall rule and leaves
#   net.ipv4.ip_forward alone. Its own socket, data root (kept between runs
#   as the build cache: /var/lib/tcpstack-ci/docker), exec root and pidfile.
# * A private *run* engine runs inside a network namespace made for this run.
#   Its default bridge, the containers' addresses and the published ports
#   (docker-proxy, since there are no iptables rules) exist only there; the
#   checks run there too ("the host" below is that namespace). Its data root
#   is a temporary directory. The image goes from one engine to the other
#   with `docker save | docker load`.
# * Both engines are stopped by PID at the end (a trap), the namespace is
#   deleted and the temporary data root removed.
#
# Base image: an official Python image when a registry is reachable, else a
# Debian bookworm image made with debootstrap (tools/docker-base-image.sh),
# kept in the build engine and as a tarball in /var/cache/tcpstack-ci/ (made
# anew when older than a week or when its recipe changed).
#
# Checks: the image's own layers stay within the size budget and hold no
# build tools, the engine is the mypyc-compiled build; in a container with a published port, HTTP via curl and echo
# via nc through the published ports, the health status turning "healthy",
# the daemon running with a non-root UID and no capabilities, `docker stop`
# succeeding with exit code 0; then the same with docker/compose.yaml.
#
# It skips (exit 0, saying why) only where Docker cannot run at all: not
# root, no /dev/net/tun or network namespaces, docker.io not installable, or
# an engine that does not start. Environment: TCPSTACK_CI_BASE_IMAGE forces a
# base image; TCPSTACK_CI_KEEP_IMAGES=1 keeps the built image's tag afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

prog=container-check
t_start=$SECONDS
log() { printf '%s: %s\n' "$prog" "$*"; }
die() { printf '%s: FAILED: %s\n' "$prog" "$*" >&2; exit 1; }
skip() {
    printf '%s: SKIPPED (Docker cannot run here): %s\n' "$prog" "$*"
    exit 0
}
phase_t=$SECONDS
phase() { # phase NAME: log the time the previous phase took, start the next
    log "-- $1 (+$((SECONDS - phase_t))s, total $((SECONDS - t_start))s)"
    phase_t=$SECONDS
}

STATE_DIR=/var/lib/tcpstack-ci
CACHE_DIR=/var/cache/tcpstack-ci
RUN_DIR=/run/tcpstack-ci.$$
BUILD_SOCK=unix://$RUN_DIR/build.sock
RUN_SOCK=unix://$RUN_DIR/run.sock
NETNS=tcpstack-ci-$$
IMAGE=tcpstack:ci-$$
MAX_PROJECT_MB=60
HTTP_PORT=8080
ECHO_PORT=8007
BASE_SUITE=bookworm
OFFICIAL_BASE=python:3.12-slim-bookworm

# --- can Docker run here at all? --------------------------------------------
((EUID == 0)) || skip "needs root"
[[ -c /dev/net/tun ]] || skip "/dev/net/tun is missing"
command -v ip >/dev/null || skip "iproute2's ip is missing"
command -v nsenter >/dev/null || skip "util-linux's nsenter is missing"

# --- packages -------------------------------------------------------------
need=()
[[ -x /usr/sbin/dockerd && -x /usr/bin/docker ]] || need+=(docker.io)
[[ -x /usr/bin/docker-compose ]] || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v curl >/dev/null || need+=(curl)
command -v nc >/dev/null || need+=(netcat-openbsd)
if ((${#need[@]})); then
    log "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Installing docker.io must not start the system's Docker service (which
    # would add firewall rules and turn forwarding on): policy-rc.d says no.
    made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    ok=1
    # One apt-get at a time with tools/test.sh, which .ci/run runs alongside.
    flock /var/lock/tcpstack-apt.lock apt-get update -qq >/dev/null || ok=0
    if ((ok)); then
        flock /var/lock/tcpstack-apt.lock \
            apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || ok=0
    fi
    if ((made_policy)); then rm -f /usr/sbin/policy-rc.d; fi
    ((ok)) || skip "could not install ${need[*]}"
fi
# Debian's client and compose, whatever else is on PATH.
DOCKER=/usr/bin/docker
COMPOSE=/usr/bin/docker-compose
bdocker() { "$DOCKER" -H "$BUILD_SOCK" "$@"; }
rdocker() { "$DOCKER" -H "$RUN_SOCK" "$@"; }

# --- private engines ----------------------------------------------------------
build_pid=
run_pid=
run_data=
netns_made=0
container=
compose_up=0
www=

stop_pid() { # stop_pid PID NAME: SIGTERM, wait up to 30 s, then SIGKILL
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "$2 (pid $pid) ignored SIGTERM for 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

unmount_under() { # unmount whatever is still mounted below a directory
    local m
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v r="$1" 'index($2, r "/") == 1 { print $2 }' /proc/self/mounts | sort -r)
}

cleanup() {
    local rc=$?
    set +e
    if ((compose_up)); then
        DOCKER_HOST=$RUN_SOCK "$COMPOSE" -p "tcpstackci$$" -f docker/compose.yaml down \
            --remove-orphans >/dev/null 2>&1
    fi
    [[ -n $container ]] && rdocker rm -f "$container" >/dev/null 2>&1
    if [[ -n $build_pid ]] && [[ ${TCPSTACK_CI_KEEP_IMAGES:-0} != 1 ]]; then
        bdocker rmi "$IMAGE" >/dev/null 2>&1
    fi
    stop_pid "$run_pid" "the run engine"
    stop_pid "$build_pid" "the build engine"
    if [[ -n $run_data && -d $run_data ]]; then
        unmount_under "$run_data"
        rm -rf --one-file-system -- "$run_data"
    fi
    [[ -d $RUN_DIR ]] && { unmount_under "$RUN_DIR"; rm -rf --one-file-system -- "$RUN_DIR"; }
    ((netns_made)) && ip netns delete "$NETNS" 2>/dev/null
    [[ -n $www ]] && rm -rf -- "$www"
    if ((rc == 0)); then
        log "done in $((SECONDS - t_start))s"
    else
        log "failed after $((SECONDS - t_start))s (exit $rc)"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$RUN_DIR" "$STATE_DIR" "$CACHE_DIR"
# Flags for both engines: no firewall or NAT rules, no forwarding change,
# published ports through docker-proxy. Where a system containerd runs, dockerd
# uses it; the containerd namespaces given below keep our engines apart from it.
ENGINE_FLAGS=(--iptables=false --ip6tables=false --ip-forward=false --ip-masq=false
              --userland-proxy=true --log-level=warn)

wait_engine() { # wait_engine PID SOCK NAME LOG: up to 60 s for the engine to answer
    local i
    for ((i = 0; i < 600; i++)); do
        if ! kill -0 "$1" 2>/dev/null; then
            tail -n 15 "$4" >&2
            skip "the $3 engine exited at start (log above)"
        fi
        "$DOCKER" -H "$2" version >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tail -n 15 "$4" >&2
    die "the $3 engine did not answer within 60 s"
}

phase "starting a private build engine (no bridge, no iptables, no forwarding)"
/usr/sbin/dockerd -H "$BUILD_SOCK" --data-root "$STATE_DIR/docker" \
    --exec-root "$RUN_DIR/build" --pidfile "$RUN_DIR/build.pid" --bridge=none \
    --containerd-namespace tcpstack-ci-build \
    --containerd-plugins-namespace tcpstack-ci-build-plugins \
    "${ENGINE_FLAGS[@]}" </dev/null >"$RUN_DIR/build.log" 2>&1 &
build_pid=$!
wait_engine "$build_pid" "$BUILD_SOCK" build "$RUN_DIR/build.log"

phase "starting a private run engine in network namespace $NETNS"
ip netns add "$NETNS" || skip "cannot create a network namespace"
netns_made=1
ip -n "$NETNS" link set lo up
run_data=$(mktemp -d /var/tmp/tcpstack-ci-run.XXXXXXXX)
# nsenter (not `ip netns exec`, which remounts /sys and so hides the cgroup
# hierarchy dockerd needs) enters only the network namespace.
nsenter --net="/run/netns/$NETNS" /usr/sbin/dockerd -H "$RUN_SOCK" \
    --data-root "$run_data" --exec-root "$RUN_DIR/run" --pidfile "$RUN_DIR/run.pid" \
    --containerd-namespace "tcpstack-ci-run-$$" \
    --containerd-plugins-namespace "tcpstack-ci-run-$$-plugins" \
    "${ENGINE_FLAGS[@]}" </dev/null >"$RUN_DIR/run.log" 2>&1 &
run_pid=$!
wait_engine "$run_pid" "$RUN_SOCK" run "$RUN_DIR/run.log"
in_ns() { ip netns exec "$NETNS" "$@"; }

# --- base image -------------------------------------------------------------
phase "choosing the base image"
recipe=$(sha256sum tools/docker-base-image.sh | cut -c1-12)
base_tag=tcpstack-base:$BASE_SUITE-$recipe
tarball=$CACHE_DIR/base-$BASE_SUITE-$recipe.tar
find "$CACHE_DIR" -maxdepth 1 -name "base-$BASE_SUITE-*.tar" -mtime +7 -delete
find "$CACHE_DIR" -maxdepth 1 -name "base-$BASE_SUITE-*.tar" ! -name "${tarball##*/}" -delete
if [[ -n ${TCPSTACK_CI_BASE_IMAGE:-} ]]; then
    base=$TCPSTACK_CI_BASE_IMAGE
    bdocker image inspect "$base" >/dev/null 2>&1 || bdocker pull -q "$base" >/dev/null \
        || die "cannot get base image $base"
elif bdocker image inspect "$OFFICIAL_BASE" >/dev/null 2>&1; then
    base=$OFFICIAL_BASE
elif [[ -f $tarball ]] && { bdocker image inspect "$base_tag" >/dev/null 2>&1 \
        || bdocker load -q -i "$tarball" >/dev/null; }; then
    base=$base_tag
elif timeout 30 "$DOCKER" -H "$BUILD_SOCK" pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
    base=$OFFICIAL_BASE
else
    log "no registry reachable: making a Debian $BASE_SUITE base with debootstrap"
    bdocker rmi "$base_tag" >/dev/null 2>&1 || true
    PATH=/usr/bin:/usr/sbin:/bin:/sbin DOCKER_HOST=$BUILD_SOCK \
        bash tools/docker-base-image.sh --suite "$BASE_SUITE" --tag "$base_tag" >/dev/null
    bdocker save -o "$tarball.tmp" "$base_tag" && mv "$tarball.tmp" "$tarball"
    base=$base_tag
fi
log "base image: $base"

# --- build -------------------------------------------------------------------
phase "building the image"
# A TLS-intercepting proxy in front of the package index re-signs with a CA
# that this machine trusts through /usr/local/share/ca-certificates; the
# build stage needs it too (docker/ca-certificates/ is git-ignored and never
# reaches the final image).
for crt in /usr/local/share/ca-certificates/*.crt /usr/local/share/ca-certificates/*/*.crt; do
    [[ -f $crt ]] || continue
    cmp -s "$crt" "docker/ca-certificates/${crt##*/}" || cp "$crt" docker/ca-certificates/
done
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
revision=$(git rev-parse HEAD 2>/dev/null || true)
source_url=$(git remote get-url origin 2>/dev/null || true)
[[ $source_url == https://* ]] || source_url=
build_log=$RUN_DIR/build-image.log
if ! env DOCKER_BUILDKIT=1 "$DOCKER" -H "$BUILD_SOCK" build --progress plain --network host \
        --build-arg BASE_IMAGE="$base" --build-arg VERSION="$version" \
        --build-arg REVISION="$revision" --build-arg SOURCE="$source_url" \
        -t "$IMAGE" . >"$build_log" 2>&1; then
    tail -n 40 "$build_log" >&2
    die "docker build failed (last lines above)"
fi
# The legacy builder would leave the build stage as an untagged image; BuildKit
# leaves none. Either way none may remain.
bdocker image prune -f --filter label=org.tcpstack.stage=build >/dev/null
left=$(bdocker images -q --filter dangling=true --filter label=org.tcpstack.stage=build)
[[ -z $left ]] || die "untagged build-stage images left: $left"
# Keep the build cache bounded.
bdocker builder prune -f --keep-storage 3GB >/dev/null 2>&1 || true

phase "checking the image"
base_bytes=$(bdocker image inspect -f '{{.Size}}' "$base")
image_bytes=$(bdocker image inspect -f '{{.Size}}' "$IMAGE")
project_mb=$(( (image_bytes - base_bytes + 1048575) / 1048576 ))
log "image $((image_bytes / 1048576)) MiB = base $((base_bytes / 1048576)) MiB + project layers ${project_mb} MiB (budget ${MAX_PROJECT_MB} MiB)"
log "the project's layers (docker history, newest first, empty ones left out):"
bdocker history --no-trunc --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" \
    | awk -F'\t' -v n="$(bdocker history -q "$base" | wc -l)" '
        { rows[NR] = $0 }
        END { for (i = 1; i <= NR - n; i++) {
                  split(rows[i], f, "\t")
                  if (f[1] != "0B") printf "    %8s  %s\n", f[1], substr(f[2], 1, 100) } }'
((project_mb <= MAX_PROJECT_MB)) || die "the image's own layers are ${project_mb} MiB"
labels=$(bdocker image inspect -f '{{json .Config.Labels}}' "$IMAGE")
for key in title description version licenses revision source; do
    [[ $labels == *"\"org.opencontainers.image.$key\""* ]] || die "label $key missing: $labels"
done
[[ $labels == *'"org.opencontainers.image.licenses":"MIT"'* ]] || die "licenses label: $labels"
[[ $(bdocker image inspect -f '{{.Config.Healthcheck}}' "$IMAGE") == *tcpstack-healthcheck* ]] \
    || die "the image has no HEALTHCHECK"
bdocker run --rm --network none --entrypoint /bin/sh "$IMAGE" -c '
    for tool in gcc cc strip ld pip pip3; do
        if command -v "$tool" >/dev/null; then echo "build tool in the final image: $tool"; exit 1; fi
    done
    if /opt/tcpstack/bin/python -c "import pip" 2>/dev/null; then echo "pip in the venv"; exit 1; fi
    if /opt/tcpstack/bin/python -c "import setuptools" 2>/dev/null; then echo "setuptools in the venv"; exit 1; fi
    if ls /usr/local/share/ca-certificates/tcpstack/*.crt >/dev/null 2>&1; then echo "build CA certificates in the final image"; exit 1; fi
    ' || die "the final image holds build-time tools or files"
build=$(bdocker run --rm --network none --entrypoint /opt/tcpstack/bin/tcpstack "$IMAGE" --version) \
    || die "tcpstack --version failed in the image"
[[ $build == *compiled* ]] || die "the image runs the pure-Python build: $build"
log "the image runs: $build"

phase "moving the image to the run engine"
bdocker save "$IMAGE" | rdocker load -q >/dev/null
rdocker tag "$IMAGE" tcpstack:latest

# --- checks against a running container ---------------------------------------
daemon_pid() { # the host PID of `tcpstack serve` in container $1 (tini's child)
    local init
    init=$(rdocker inspect -f '{{.State.Pid}}' "$1")
    [[ -n $init && $init != 0 ]] || return 1
    tr ' ' '\n' <"/proc/$init/task/$init/children" | while read -r pid; do
        [[ -n $pid ]] || continue
        if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'tcpstack serve'; then
            echo "$pid"
            break
        fi
    done
}

check_running() { # check_running CONTAINER WHAT [EXPECTED_PAGE_TEXT]
    local c=$1 what=$2 want=${3:-tcpstack} i status page pid uid capeff
    for ((i = 0; i < 300; i++)); do
        page=$(in_ns curl -sS --max-time 5 "http://127.0.0.1:$HTTP_PORT/" 2>/dev/null) && break
        [[ $(rdocker inspect -f '{{.State.Running}}' "$c") == true ]] \
            || { rdocker logs "$c" 2>&1 | tail -n 20 >&2; die "$what: the container exited"; }
        sleep 0.2
    done
    [[ $page == *"$want"* ]] || die "$what: curl through the published port: ${page:0:200}"
    log "$what: curl http://127.0.0.1:$HTTP_PORT/ through the published port: ok"

    local reply
    reply=$(printf 'tcpstack ci echo\n' | in_ns nc -N -w 10 127.0.0.1 "$ECHO_PORT")
    [[ $reply == "tcpstack ci echo" ]] || die "$what: echo through the published port: '$reply'"
    log "$what: echo through nc on 127.0.0.1:$ECHO_PORT: ok"

    pid=$(daemon_pid "$c") || true
    [[ -n $pid ]] || die "$what: no tcpstack serve process in the container"
    uid=$(awk '$1 == "Uid:" { print $2, $3, $4, $5 }' "/proc/$pid/status")
    capeff=$(awk '$1 == "CapEff:" { print $2 }' "/proc/$pid/status")
    for id in $uid; do ((id != 0)) || die "$what: the daemon has uid 0 ($uid)"; done
    ((16#$capeff == 0)) || die "$what: the daemon has capabilities: CapEff $capeff"
    log "$what: daemon pid $pid runs as uid ${uid%% *}, CapEff $capeff: ok"

    for ((i = 0; i < 120; i++)); do
        status=$(rdocker inspect -f '{{.State.Health.Status}}' "$c")
        [[ $status == healthy || $status == unhealthy ]] && break
        sleep 0.5
    done
    [[ $status == healthy ]] || die "$what: health status '$status': $(rdocker inspect -f '{{json .State.Health.Log}}' "$c")"
    log "$what: health status healthy after ~$((i / 2))s: ok"
}

check_stopped() { # check_stopped CONTAINER WHAT STOP_COMMAND...
    local c=$1 what=$2 code logs
    shift 2
    "$@" >"$RUN_DIR/stop.log" 2>&1 || { cat "$RUN_DIR/stop.log" >&2; die "$what: '$*' failed"; }
    code=$(rdocker inspect -f '{{.State.ExitCode}}' "$c")
    logs=$(rdocker logs "$c" 2>&1)
    ((code == 0)) || { tail -n 20 <<<"$logs" >&2; die "$what: exit code $code after stop"; }
    [[ $logs == *"stopped; counters:"* ]] || die "$what: no clean shutdown in the log"
    [[ $logs != *Traceback* ]] || { echo "$logs" >&2; die "$what: traceback in the log"; }
    log "$what: stopped, exit code 0: ok"
}

phase "docker run with published ports"
container=tcpstack-ci-$$
# (The run engine's namespace forwards nothing, so `docker run` warns that
# containers cannot reach out; they need not. The warning goes to a file.)
rdocker run -d --name "$container" --cap-add NET_ADMIN --device /dev/net/tun \
    --sysctl net.ipv4.ip_forward=1 -e TCPSTACK_PUBLISH="80 7" \
    -p "127.0.0.1:$HTTP_PORT:80" -p "127.0.0.1:$ECHO_PORT:7" "$IMAGE" \
    >/dev/null 2>"$RUN_DIR/run-container.log" \
    || { cat "$RUN_DIR/run-container.log" >&2; die "docker run failed"; }
check_running "$container" "docker run"
check_stopped "$container" "docker run" rdocker stop -t 20 "$container"
rdocker rm "$container" >/dev/null
container=

phase "docker-compose up (docker/compose.yaml)"
www=$(mktemp -d)
chmod 0755 "$www"
printf '<!doctype html><title>ci</title><p>served from the compose volume %s</p>\n' "$$" \
    >"$www/index.html"
chmod 0644 "$www/index.html"
compose() { DOCKER_HOST=$RUN_SOCK TCPSTACK_WWW_DIR=$www "$COMPOSE" -p "tcpstackci$$" \
    -f docker/compose.yaml "$@"; }
compose_up=1
compose up -d --no-build >"$RUN_DIR/compose.log" 2>&1 \
    || { cat "$RUN_DIR/compose.log" >&2; die "docker-compose up failed"; }
container=$(compose ps -q tcpstack)
[[ -n $container ]] || die "docker-compose started no tcpstack container"
check_running "$container" "compose" "served from the compose volume $$"
check_stopped "$container" "compose" compose stop -t 20
compose down --remove-orphans >/dev/null 2>&1
compose_up=0
container=

phase "finished"
