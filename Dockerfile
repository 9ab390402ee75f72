# tcpstack: the userspace TCP/IP stack daemon in a container.
#
#   docker build -t tcpstack .
#   docker run -d --name tcpstack --cap-add NET_ADMIN --device /dev/net/tun tcpstack
#   docker exec tcpstack curl -s http://10.0.0.2/
#
# Without registry access, build on a local Debian base image instead
# (tools/docker-base-image.sh makes one):
#   docker build --network host --build-arg BASE_IMAGE=tcpstack-base:bookworm -t tcpstack .
#
# Extra CA certificates (a TLS-intercepting proxy in front of PyPI) go into
# docker/ca-certificates/*.crt before building; they are used by the build
# stage only and do not reach the final image. See docker/README.md.
#
# BASE_IMAGE may be an official Python image (Python under /usr/local) or plain
# Debian (Debian's python3 is installed with apt if the image has none).
#
# Works with BuildKit and with the legacy builder. The legacy builder leaves
# the build stage behind as an untagged image; it carries the label
# org.tcpstack.stage=build, so this removes it (and nothing else):
#   docker image prune -f --filter label=org.tcpstack.stage=build

ARG BASE_IMAGE=python:3.12-slim-bookworm

# ---------------------------------------------------------------------------
# runtime-base: the OS packages the daemon and its users need at run time.
FROM ${BASE_IMAGE} AS runtime-base

ARG DEBIAN_FRONTEND=noninteractive

# curl, ping and nc for poking at the stack, iproute2 and procps for
# debugging, nftables for TCPSTACK_PUBLISH, tini as PID 1; Python from apt
# only if the base image has none. Documentation, manual pages and
# translations of these packages are not installed (copyright files are),
# and apt's caches and lists are removed in the same layer.
RUN set -eux; \
    printf '%s\n' \
        'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
        'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' \
        'path-exclude=/usr/share/locale/*' 'path-exclude=/usr/share/lintian/*' \
        >/etc/dpkg/dpkg.cfg.d/tcpstack-slim; \
    packages="curl iproute2 iputils-ping netcat-openbsd nftables procps tini"; \
    if ! command -v python3 >/dev/null 2>&1; then packages="$packages python3"; fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends $packages; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log \
        /var/cache/debconf/*-old /var/lib/dpkg/*-old; \
    python3 --version

# ---------------------------------------------------------------------------
# build: the package and its dependencies in a virtualenv at /opt/tcpstack.
FROM runtime-base AS build

LABEL org.tcpstack.stage=build
ARG DEBIAN_FRONTEND=noninteractive
# Optional custom package index (e.g. a local mirror); unset means PyPI. These
# are build-stage arguments only: they do not end up in the final image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PIP_ROOT_USER_ACTION=ignore \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt

# Build tools: CA certificates (plus any from docker/ca-certificates/), a C
# compiler for the mypyc-compiled engine, binutils for strip, and Debian's
# python3-venv and python3-dev when Python comes from apt. None of them reaches
# the final image.
COPY docker/ca-certificates/ /tmp/tcpstack-ca/
RUN set -eux; \
    packages="binutils ca-certificates gcc libc6-dev"; \
    if dpkg-query -W -f='${Status}' python3 2>/dev/null | grep -q 'install ok installed'; then \
        packages="$packages python3-venv python3-dev"; \
    fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends $packages; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /usr/local/share/ca-certificates/tcpstack; \
    find /tmp/tcpstack-ca -type f -name '*.crt' -exec cp -t /usr/local/share/ca-certificates/tcpstack/ {} +; \
    update-ca-certificates; \
    python3 -m venv /opt/tcpstack

# Dependencies (and build requirements) first, read from pyproject.toml alone:
# this layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml /src/pyproject.toml
RUN set -eux; \
    [ -n "${PIP_INDEX_URL:-}" ] || unset PIP_INDEX_URL; \
    [ -n "${PIP_EXTRA_INDEX_URL:-}" ] || unset PIP_EXTRA_INDEX_URL; \
    [ -n "${PIP_TRUSTED_HOST:-}" ] || unset PIP_TRUSTED_HOST; \
    /opt/tcpstack/bin/python -c 'import tomllib; m = tomllib.load(open("/src/pyproject.toml", "rb")); print("\n".join(m.get("build-system", {}).get("requires", []) + m["project"].get("dependencies", [])))' \
        >/tmp/requirements.txt; \
    cat /tmp/requirements.txt; \
    /opt/tcpstack/bin/pip install -q -r /tmp/requirements.txt; \
    rm /tmp/requirements.txt

# The package itself (a regular, non-editable install; no test extras),
# compiled with mypyc (TCPSTACK_BUILD=compiled fails the build rather than
# silently installing the slower pure-Python modules). Its build requirements
# are already in the venv, so this needs no network. Then the build-only
# packages leave the venv (mypy, setuptools, pip: the compiled modules carry
# their own runtime) and the extension modules lose their debugging symbols.
COPY README.md setup.py /src/
COPY tcpstack /src/tcpstack
RUN set -eux; \
    cd /src; \
    TCPSTACK_BUILD=compiled /opt/tcpstack/bin/pip install -q --no-build-isolation --no-deps /src; \
    /opt/tcpstack/bin/pip uninstall -q -y mypy mypy_extensions pathspec librt; \
    /opt/tcpstack/bin/pip check; \
    /opt/tcpstack/bin/pip uninstall -q -y setuptools pip; \
    find /opt/tcpstack -name '*.so' -exec strip --strip-unneeded {} +; \
    /opt/tcpstack/bin/tcpstack --help >/dev/null; \
    /opt/tcpstack/bin/python -c 'import tcpstack.cli, tcpstack.apps, tcpstack.aio.network, uvloop'; \
    /opt/tcpstack/bin/tcpstack --version | tee /dev/stderr | grep -q 'compiled'

# ---------------------------------------------------------------------------
# final image: runtime packages, the virtualenv, the entrypoint, a user.
FROM runtime-base

# The daemon creates and configures the TUN as root, then runs as this user
# with no capabilities (tcpstack serve --user; TCPSTACK_USER= keeps root).
RUN useradd --system --no-log-init --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin tcpstack

COPY --from=build /opt/tcpstack /opt/tcpstack
COPY docker/entrypoint.sh /usr/local/bin/tcpstack-entrypoint
COPY docker/healthcheck.py /usr/local/bin/tcpstack-healthcheck

ENV PATH=/opt/tcpstack/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TCPSTACK_USER=tcpstack

ARG VERSION=0.1.0
ARG REVISION=
ARG SOURCE=
LABEL org.opencontainers.image.title="tcpstack" \
      org.opencontainers.image.description="Userspace TCP/IP stack over a TUN device (run with --cap-add NET_ADMIN --device /dev/net/tun)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT"

# Healthy when the stack answers on its own address: an HTTP request if HTTP
# is enabled, else an echo round trip or a TCP handshake (see the script).
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/tcpstack-healthcheck"]

# tini forwards SIGTERM/SIGINT to the daemon and reaps children; the
# entrypoint execs `tcpstack serve`, so `docker stop` ends it cleanly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "-s", "--", "/usr/local/bin/tcpstack-entrypoint"]
CMD []
