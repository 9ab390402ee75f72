# tcpstack: the userspace TCP/IP stack daemon in a container.
#
#   docker build -t tcpstack .
#   docker run --rm --cap-add NET_ADMIN --device /dev/net/tun tcpstack
#   docker exec <container> curl http://10.0.0.2/
#
# Without registry access, build on a local Debian base image instead
# (tools/docker-base-image.sh makes one):
#   docker build --build-arg BASE_IMAGE=tcpstack-base:bookworm -t tcpstack .
#
# Extra CA certificates (a TLS-intercepting proxy in front of PyPI) go into
# docker/ca-certificates/*.crt before building; see docker/README.md.
#
# BASE_IMAGE may be an official Python image (Python under /usr/local) or plain
# Debian without Python (then Debian's python3 is installed with apt).

ARG BASE_IMAGE=python:3.12-slim-bookworm

# ---------------------------------------------------------------------------
# runtime-base: the OS layer shared by the build and the final image.
FROM ${BASE_IMAGE} AS runtime-base

ARG DEBIAN_FRONTEND=noninteractive

# Pip, requests, curl and Python's ssl all use the system bundle, which then
# includes any certificates supplied in docker/ca-certificates/.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    LANG=C.UTF-8

COPY docker/ca-certificates/ /tmp/tcpstack-ca/

# Runtime tools: curl/ping/nc for poking at the stack, iproute2/procps for
# debugging, nftables for TCPSTACK_PUBLISH, tini as PID 1. Python comes from
# apt only if the base image has none.
RUN set -eux; \
    packages="ca-certificates curl iproute2 iputils-ping netcat-openbsd nftables procps tini"; \
    if ! command -v python3 >/dev/null 2>&1; then packages="$packages python3"; fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends $packages; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /usr/local/share/ca-certificates/tcpstack; \
    find /tmp/tcpstack-ca -type f -name '*.crt' -exec cp -t /usr/local/share/ca-certificates/tcpstack/ {} +; \
    rm -rf /tmp/tcpstack-ca; \
    update-ca-certificates; \
    python3 --version

# ---------------------------------------------------------------------------
# build: install the package into a virtualenv at /opt/tcpstack.
FROM runtime-base AS build

ARG DEBIAN_FRONTEND=noninteractive
# Optional custom package index (e.g. a local mirror); unset means PyPI. These
# are build-stage arguments only: they do not end up in the final image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120

# Debian's python3 needs python3-venv for `python3 -m venv`.
RUN set -eux; \
    if dpkg-query -W -f='${Status}' python3 2>/dev/null | grep -q 'install ok installed'; then \
        apt-get update; \
        apt-get install -y --no-install-recommends python3-venv; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
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
    /opt/tcpstack/bin/pip install -r /tmp/requirements.txt; \
    rm /tmp/requirements.txt

# The package itself (a regular, non-editable install; no test extras). Its
# build requirements are already in the venv, so this needs no network.
COPY . /src
RUN set -eux; \
    /opt/tcpstack/bin/pip install --no-build-isolation --no-deps /src; \
    /opt/tcpstack/bin/pip check; \
    /opt/tcpstack/bin/tcpstack --help >/dev/null

# ---------------------------------------------------------------------------
# final image
FROM runtime-base

COPY --from=build /opt/tcpstack /opt/tcpstack
COPY docker/entrypoint.sh /usr/local/bin/tcpstack-entrypoint
RUN chmod 0755 /usr/local/bin/tcpstack-entrypoint

ENV PATH=/opt/tcpstack/bin:$PATH \
    PYTHONUNBUFFERED=1

LABEL org.opencontainers.image.title="tcpstack" \
      org.opencontainers.image.description="Userspace TCP/IP stack over a TUN device (needs --cap-add NET_ADMIN --device /dev/net/tun)"

# tini forwards SIGTERM/SIGINT to the daemon and reaps children; the
# entrypoint execs `tcpstack serve`, so `docker stop` ends it cleanly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "-s", "--", "/usr/local/bin/tcpstack-entrypoint"]
CMD []
