#!/usr/bin/env bash
# Run the whole check suite on a Debian machine, as root: install what is missing
# (apt packages, a virtualenv with the package and its test extras), then ruff,
# mypy and pytest. Integration tests create their own network namespaces and need
# root; without root they skip with a reason.
#
#   tools/test.sh [--repeat N] [--stress] [PYTEST ARGS...]
#
#   --repeat N  run pytest N times, stop at the first failing run and say which
#   --stress    run pytest with a CPU hog alongside: one busy loop per core at
#               low priority (nice TCPSTACK_STRESS_NICE, default 10), each
#               bounded by TCPSTACK_STRESS_SECONDS (default 3600) and stopped by
#               PID when the runs end
#
# Other arguments go to pytest. Installer output goes to a log file that is
# shown only if the step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,15s/^# \{0,1\}//p' "$0"; }
die() { printf 'tools/test.sh: error: %s\n' "$*" >&2; exit 2; }

repeat=1
stress=0
pytest_args=()
while (($#)); do
    case $1 in
        --repeat) [[ $# -ge 2 ]] || die "--repeat needs a number"; repeat=$2; shift 2 ;;
        --repeat=*) repeat=${1#*=}; shift ;;
        --stress) stress=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; pytest_args+=("$@"); break ;;
        *) pytest_args+=("$1"); shift ;;
    esac
done
[[ $repeat =~ ^[1-9][0-9]{0,4}$ ]] || die "--repeat wants a whole number from 1 to 99999, got '$repeat'"
stress_nice=${TCPSTACK_STRESS_NICE:-10}
stress_seconds=${TCPSTACK_STRESS_SECONDS:-3600}
[[ $stress_nice =~ ^[0-9]+$ ]] && ((stress_nice <= 19)) \
    || die "TCPSTACK_STRESS_NICE must be 0..19, got '$stress_nice'"
[[ $stress_seconds =~ ^[1-9][0-9]*$ ]] \
    || die "TCPSTACK_STRESS_SECONDS must be a positive number of seconds, got '$stress_seconds'"

setup_log=$(mktemp "${TMPDIR:-/tmp}/tcpstack-test-setup.XXXXXX")
hogs=()
cleanup() {
    local pid
    for pid in "${hogs[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${hogs[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -f "$setup_log"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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
# The dashboard is tested in a real headless browser (tests/integration/test_dashboard_browser.py).
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if ((${#need[@]})); then
    echo "== installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark's package asks whether non-root users may capture; answer no.
    echo 'wireshark-common wireshark-common/install-setuid boolean false' \
        | step "debconf" debconf-set-selections
    step "apt-get update" apt-get update -q
    step "apt-get install" apt-get install -y -q --no-install-recommends "${need[@]}"
fi

VENV=${TCPSTACK_VENV:-.venv}
stamp=$VENV/.tcpstack-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -x $VENV/bin/python ]]; then
    echo "== creating the virtualenv $VENV"
    step "python3 -m venv" python3 -m venv "$VENV"
    step "pip upgrade" "$VENV/bin/python" -m pip install --upgrade pip
fi
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]] \
        || ! "$VENV/bin/python" -c 'import tcpstack, pytest, mypy, ruff' 2>/dev/null; then
    echo "== installing tcpstack (editable) with its test extras into $VENV"
    step "pip install" "$VENV/bin/python" -m pip install -e '.[test]'
    echo "$want" >"$stamp"
else
    echo "== $VENV is up to date (pyproject.toml unchanged)"
fi

echo "== ruff"
"$VENV/bin/ruff" check .
echo "== mypy"
"$VENV/bin/mypy"
"$VENV/bin/mypy" --strict docker/healthcheck.py

if ((stress)); then
    cores=$(nproc)
    for ((i = 0; i < cores; i++)); do
        timeout "$stress_seconds" nice -n "$stress_nice" bash -c 'while :; do :; done' &
        hogs+=($!)
    done
    echo "== stress: $cores busy loop(s) at nice $stress_nice (PIDs ${hogs[*]}, at most ${stress_seconds}s)"
fi

for ((run = 1; run <= repeat; run++)); do
    if ((repeat > 1)); then
        echo "== pytest, run $run of $repeat"
    else
        echo "== pytest"
    fi
    status=0
    "$VENV/bin/python" -m pytest "${pytest_args[@]}" || status=$?
    if ((status != 0)); then
        if ((repeat > 1)); then
            passed=$((run - 1))
            echo "== run $run of $repeat FAILED (pytest exit $status); $passed run(s) before it passed" >&2
        fi
        exit "$status"
    fi
done
if ((repeat > 1)); then
    echo "== all $repeat runs passed"
fi
