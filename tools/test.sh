#!/usr/bin/env bash
# Run the whole check suite on a Debian machine, as root: install what is missing
# (apt packages, a virtualenv with the package and its test extras), then ruff,
# mypy and pytest -- the whole suite against the pure-Python modules, then the
# engine's share of it against the same source compiled with mypyc (built in a
# scratch copy of the tree): the unit, simulation and fuzz tests, the daemon's
# end-to-end transfers and the observer's tests (COMPILED_TESTS below; with
# --build compiled, or with explicit pytest arguments, the compiled pass runs the
# same as the pure one). Integration tests create their own network namespaces
# and need root; without root they skip with a reason.
#
#   tools/test.sh [--repeat N] [--stress] [--build pure|compiled|both] [PYTEST ARGS...]
#
#   --repeat N  run the suite N times, stop at the first failing run and say which
#   --stress    run pytest with a CPU hog alongside: one busy loop per core at
#               low priority (nice TCPSTACK_STRESS_NICE, default 10), each
#               bounded by TCPSTACK_STRESS_SECONDS (default 3600) and stopped by
#               PID when the runs end
#   --build B   which builds to test (default: both)
#
# Other arguments go to pytest. Installer output goes to a log file that is
# shown only if the step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,15s/^# \{0,1\}//p' "$0"; }
die() { printf 'tools/test.sh: error: %s\n' "$*" >&2; exit 2; }
# say WHAT: a progress line with the time since the script started.
say() { printf '== %s  [%dm%02ds]\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)); }

repeat=1
stress=0
builds=both
pytest_args=()
while (($#)); do
    case $1 in
        --repeat) [[ $# -ge 2 ]] || die "--repeat needs a number"; repeat=$2; shift 2 ;;
        --repeat=*) repeat=${1#*=}; shift ;;
        --stress) stress=1; shift ;;
        --build) [[ $# -ge 2 ]] || die "--build needs pure, compiled or both"; builds=$2; shift 2 ;;
        --build=*) builds=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; pytest_args+=("$@"); break ;;
        *) pytest_args+=("$1"); shift ;;
    esac
done
[[ $repeat =~ ^[1-9][0-9]{0,4}$ ]] || die "--repeat wants a whole number from 1 to 99999, got '$repeat'"
[[ $builds =~ ^(pure|compiled|both)$ ]] || die "--build wants pure, compiled or both, got '$builds'"
stress_nice=${TCPSTACK_STRESS_NICE:-10}
stress_seconds=${TCPSTACK_STRESS_SECONDS:-3600}
[[ $stress_nice =~ ^[0-9]+$ ]] && ((stress_nice <= 19)) \
    || die "TCPSTACK_STRESS_NICE must be 0..19, got '$stress_nice'"
[[ $stress_seconds =~ ^[1-9][0-9]*$ ]] \
    || die "TCPSTACK_STRESS_SECONDS must be a positive number of seconds, got '$stress_seconds'"

setup_log=$(mktemp "${TMPDIR:-/tmp}/tcpstack-test-setup.XXXXXX")
compiled_tree=
compile_pid=
compile_log=
hogs=()
cleanup() {
    local pid
    if [[ -n $compile_pid ]]; then
        kill -TERM "$compile_pid" 2>/dev/null || true
        wait "$compile_pid" 2>/dev/null || true
    fi
    for pid in "${hogs[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${hogs[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -f "$setup_log" ${compile_log:+"$compile_log"}
    if [[ -n $compiled_tree ]]; then
        rm -rf "$compiled_tree"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# apt_get ARGS...: apt-get, one at a time with the container check (which .ci/run
# starts alongside this script and which may install packages too).
apt_locked() { flock /var/lock/tcpstack-apt.lock "$@"; }
apt_get() { apt_locked apt-get "$@"; }

# step WHAT COMMAND...: run quietly into the log; on failure show the log's end.
step() {
    local what=$1
    shift
    if ! "$@" >>"$setup_log" 2>&1; then
        printf '== %s FAILED; its output:\n' "$what" >&2
        tail -n 40 "$setup_log" >&2
        exit 1
    fi
}

need=()
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
command -v curl >/dev/null || need+=(curl)
command -v nc >/dev/null || need+=(netcat-openbsd)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v sysctl >/dev/null || need+=(procps)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v ab >/dev/null || need+=(apache2-utils)
command -v tshark >/dev/null || need+=(tshark)
command -v openssl >/dev/null || need+=(openssl)  # the https bench workload (smoke test)
command -v iptables >/dev/null || need+=(iptables)  # path-MTU test: ICMP dropped in a router namespace
if [[ $builds != pure ]]; then
    # The compiled build needs a C compiler and the Python headers.
    command -v gcc >/dev/null || need+=(gcc)
    python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(
        os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null \
        || need+=(python3-dev)
fi
if ((${#need[@]})); then
    say "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark's package asks whether non-root users may capture; answer no.
    echo 'wireshark-common wireshark-common/install-setuid boolean false' \
        | step "debconf" apt_locked debconf-set-selections
    step "apt-get update" apt_get update -q
    step "apt-get install" apt_get install -y -q --no-install-recommends "${need[@]}"
fi

# The dashboard is tested in a real headless browser (tests/integration/
# test_dashboard_browser.py): Debian's chromium and chromium-driver. Where they
# cannot be installed (no package for this architecture, no network), the suite
# still runs and that one test skips, saying why (TCPSTACK_NO_BROWSER).
browser=()
command -v chromium >/dev/null || browser+=(chromium)
command -v chromedriver >/dev/null || browser+=(chromium-driver)
if ((${#browser[@]})); then
    if ! command -v apt-get >/dev/null; then
        export TCPSTACK_NO_BROWSER="${browser[*]} missing and there is no apt-get to install them"
    else
        say "installing Debian packages for the browser test: ${browser[*]}"
        export DEBIAN_FRONTEND=noninteractive
        if { ((${#need[@]})) || apt_get update -q >>"$setup_log" 2>&1; } \
                && apt_get install -y -q --no-install-recommends "${browser[@]}" \
                    >>"$setup_log" 2>&1; then
            :
        else
            why=$(grep -E '^(E|W): ' "$setup_log" | tail -n 1 || true)
            export TCPSTACK_NO_BROWSER="apt-get could not install ${browser[*]}: ${why:-see its output}"
        fi
    fi
    if [[ -n ${TCPSTACK_NO_BROWSER:-} ]]; then
        say "WARNING: the headless-browser test will skip: $TCPSTACK_NO_BROWSER" >&2
    fi
fi

VENV=$(realpath -m "${TCPSTACK_VENV:-.venv}")  # absolute: the compiled suite runs elsewhere
stamp=$VENV/.tcpstack-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -x $VENV/bin/python ]]; then
    say "creating the virtualenv $VENV"
    step "python3 -m venv" python3 -m venv "$VENV"
    step "pip upgrade" "$VENV/bin/python" -m pip install --upgrade pip
fi
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]] \
        || ! "$VENV/bin/python" -c 'import tcpstack, pytest, mypy, ruff' 2>/dev/null; then
    say "installing tcpstack (editable, pure Python) with its test extras into $VENV"
    step "pip install" env TCPSTACK_BUILD=pure "$VENV/bin/python" -m pip install -e '.[test]'
    echo "$want" >"$stamp"
else
    say "$VENV is up to date (pyproject.toml unchanged)"
fi

say "ruff"
"$VENV/bin/ruff" check .
say "mypy"
"$VENV/bin/mypy"
"$VENV/bin/mypy" --strict docker/healthcheck.py

if ((stress)); then
    cores=$(nproc)
    for ((i = 0; i < cores; i++)); do
        timeout "$stress_seconds" nice -n "$stress_nice" bash -c 'while :; do :; done' &
        hogs+=($!)
    done
    say "stress: $cores busy loop(s) at nice $stress_nice (PIDs ${hogs[*]}, at most ${stress_seconds}s)"
fi

# The compiled build: the same tree, copied, with the hot modules compiled in place
# (an extension module wins over the .py beside it), tested from the copy.
if [[ $builds != pure ]]; then
    compiled_tree=$(mktemp -d "${TMPDIR:-/tmp}/tcpstack-compiled.XXXXXX")
    say "compiling the wire layer, the engine, the demux, the runtime and the observer with mypyc (in $compiled_tree)"
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -co --exclude-standard -z | tar --null -cf - -T - | tar -xf - -C "$compiled_tree"
    else
        tar --exclude=./.venv --exclude='./*.egg-info' -cf - . | tar -xf - -C "$compiled_tree"
    fi
    # In the background, while the pure-Python pass runs (it takes a core for about two
    # minutes); at low priority, so that the timing-sensitive tests of that pass keep
    # the CPU they need (the build is done long before the pass is); waited for, and
    # checked, before the compiled pass.
    compile_log=$(mktemp "${TMPDIR:-/tmp}/tcpstack-mypyc.XXXXXX")
    (cd "$compiled_tree" && exec nice -n 10 env TCPSTACK_BUILD=compiled \
        "$VENV/bin/python" setup.py -q build_ext --inplace) >"$compile_log" 2>&1 &
    compile_pid=$!
fi

# wait_for_compiled_build: the background compile's result, once.
wait_for_compiled_build() {
    [[ -n $compile_pid ]] || return 0
    local status=0
    wait "$compile_pid" || status=$?
    compile_pid=
    if ((status != 0)); then
        printf '== mypyc build FAILED (exit %d); its output:\n' "$status" >&2
        tail -n 40 "$compile_log" >&2
        exit 1
    fi
    step "compiled build check" env -C "$compiled_tree" "$VENV/bin/python" -c \
        'import sys, tcpstack.build as b; sys.exit(not b.is_compiled())'
    say "the compiled build is ready"
}

# Test artifacts (the dashboard's screenshot) land in this checkout for both builds.
export TCPSTACK_ARTIFACTS=${TCPSTACK_ARTIFACTS:-$PWD/test-artifacts}

# What the compiled pass runs by default: every unit test (the engine's and the
# observer's among them) and the integration tests that drive the compiled code
# through real clients (transfers, loss, captures, ladders, ss, metrics), all of them
# through the compiled runtime and TUN device. The rest (the asyncio API, attacks,
# topologies, the container's helpers) exercise code that is not compiled, on top of
# the same engine and runtime (whose own unit tests run here).
COMPILED_TESTS=(
    tests/unit tests/sim tests/fuzz
    tests/integration/test_daemon.py
    tests/integration/test_daemon_clients.py
    tests/integration/test_capture_clean_link.py
    # Impaired transfers: the compiled sender under every impairment, the compiled
    # receiver's reassembly under reordering (the pure pass runs all twelve; keeping
    # .ci/run within its 15 minutes).
    tests/integration/test_impaired_transfers.py::test_download_50_mib_byte_exact
    "tests/integration/test_impaired_transfers.py::test_upload_50_mib_echoed_back_byte_exact[reorder]"
    tests/integration/test_observe.py
    tests/integration/test_tcp_md5_kernel.py
    tests/integration/test_tcp_ecn_kernel.py
    tests/integration/test_tcp_ao_stacks.py
    tests/integration/test_tcp_fastopen_kernel.py
    tests/integration/test_bbr_daemon.py
)

run_suite() { # run_suite LABEL DIR [PYTEST ARGS...]: pytest from DIR
    local label=$1 dir=$2
    shift 2
    say "pytest ($label)"
    (cd "$dir" && "$VENV/bin/python" -m pytest "$@")
}

for ((run = 1; run <= repeat; run++)); do
    if ((repeat > 1)); then
        say "run $run of $repeat"
    fi
    status=0
    if [[ $builds != compiled ]]; then
        run_suite "pure Python" . "${pytest_args[@]}" || status=$?
    fi
    if ((status == 0)) && [[ $builds != pure ]]; then
        wait_for_compiled_build
        if [[ $builds == both ]] && ((${#pytest_args[@]} == 0)); then
            run_suite "compiled with mypyc: the engine's tests" "$compiled_tree" \
                "${COMPILED_TESTS[@]}" || status=$?
        else
            run_suite "compiled with mypyc" "$compiled_tree" "${pytest_args[@]}" || status=$?
        fi
    fi
    if ((status != 0)); then
        if ((repeat > 1)); then
            passed=$((run - 1))
            say "run $run of $repeat FAILED (pytest exit $status); $passed run(s) before it passed" >&2
        fi
        exit "$status"
    fi
done
if ((repeat > 1)); then
    say "all $repeat runs passed"
fi
