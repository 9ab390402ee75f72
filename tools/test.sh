#!/usr/bin/env bash
# Run the whole check suite on a Debian machine, as root: install what is missing
# (apt packages, a virtualenv with the package and its test extras), then ruff,
# mypy and pytest. Extra arguments go to pytest. Integration tests create their own
# network namespaces and need root; without root they skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."

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
if ((${#need[@]})); then
    echo "== installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark's package asks whether non-root users may capture; answer no.
    echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

VENV=${TCPSTACK_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e '.[test]'

echo "== ruff"
"$VENV/bin/ruff" check .
echo "== mypy"
"$VENV/bin/mypy"
echo "== pytest"
exec "$VENV/bin/python" -m pytest "$@"
