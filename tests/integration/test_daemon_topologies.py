"""The daemon beyond the one-namespace setup: routed clients, and several workers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpstack.apps.http import iter_pattern
from tests.integration.daemon import (
    STACK_ADDRESS,
    DaemonFactory,
    assert_clean_exit,
    link_exists,
    parse_counters,
    run_client,
)
from tests.netns import NetNS


@pytest.fixture
def serve(netns: NetNS, tmp_path: Path) -> Iterator[DaemonFactory]:
    factory = DaemonFactory(netns, tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


def _expected_sha256(n: int) -> str:
    h = hashlib.sha256()
    for chunk in iter_pattern(n):
        h.update(chunk)
    return h.hexdigest()


def test_routed_client_from_another_subnet_is_answered(
    netns: NetNS, serve: DaemonFactory
) -> None:
    """A client outside the TUN's subnet, routed through the daemon's namespace,
    gets answers: the stack replies to any source address that reaches it."""
    d = serve()
    with NetNS(prefix="tcpst-client") as client:
        veth_a, veth_b = f"tsa{client.name[-6:]}", f"tsb{client.name[-6:]}"
        netns.ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        netns.ip("link", "set", veth_b, "netns", client.name)
        netns.ip("addr", "add", "10.77.0.1/24", "dev", veth_a)
        netns.ip("link", "set", veth_a, "up")
        client.ip("addr", "add", "10.77.0.2/24", "dev", veth_b)
        client.ip("link", "set", veth_b, "up")
        client.ip("route", "add", "10.0.0.0/24", "via", "10.77.0.1")
        netns.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)

        size = 4 * 1024 * 1024
        out = client.run(
            ["curl", "-s", "-m", "30", "-o", "-", f"http://{STACK_ADDRESS}/bytes/{size}"],
            capture_output=True, timeout=40,
        )
        assert out.returncode == 0, out.stderr
        assert hashlib.sha256(out.stdout).hexdigest() == _expected_sha256(size)

        fields = run_client(client, f"""
            import socket
            s = socket.create_connection(("{STACK_ADDRESS}", 7), timeout=10)
            s.sendall(b"routed hello\\n")
            data = b""
            while not data.endswith(b"\\n"):
                data += s.recv(100)
            emit(echo=data.decode(), peer=s.getsockname()[0])
            s.close()
        """)
        assert fields["echo"] == "routed hello\n"
        assert fields["peer"] == "10.77.0.2"

        ping = client.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", STACK_ADDRESS],
                          capture_output=True, text=True, timeout=10)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    assert_clean_exit(d.stop())


def test_two_workers_share_the_connections_and_stop_cleanly(
    netns: NetNS, serve: DaemonFactory
) -> None:
    """--workers 2: each worker owns one TUN queue; flows spread over both and every
    connection completes; SIGTERM stops both and removes the interface."""
    d = serve("--workers", "2")
    fields = run_client(netns, f"""
        import socket, concurrent.futures
        def one(i):
            s = socket.create_connection(("{STACK_ADDRESS}", 7), timeout=10)
            msg = (b"%05d" % i) * 2000
            s.sendall(msg)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            s.close()
            return got == msg
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(64)))
        emit(ok=sum(results), total=len(results))
    """, timeout=60)
    assert fields == {"ok": 64, "total": 64}

    size = 8 * 1024 * 1024
    out = netns.run(["curl", "-s", "-m", "30", "-o", "-", f"http://{STACK_ADDRESS}/bytes/{size}"],
                    capture_output=True, timeout=40)
    assert out.returncode == 0
    assert hashlib.sha256(out.stdout).hexdigest() == _expected_sha256(size)

    result = d.stop()
    assert result.returncode == 0, result.log
    assert "Traceback" not in result.log
    started = [line for line in result.log.splitlines() if "serving" in line]
    assert {("[worker 0]" in ln, "[worker 1]" in ln) for ln in started} == {
        (True, False), (False, True)}
    stopped = [ln for ln in result.log.splitlines() if "stopped; counters:" in ln]
    assert len(stopped) == 2
    accepted = [parse_counters(ln).get("tcp_syn_accepted", 0) for ln in stopped]
    assert sum(accepted) >= 65
    assert all(n > 0 for n in accepted), f"flows were not spread over queues: {accepted}"
    assert not link_exists(netns)


def test_workers_flag_rejects_out_of_range_values(netns: NetNS) -> None:
    proc = netns.run(["python3", "-m", "tcpstack", "serve", "--workers", "0"],
                     capture_output=True, text=True, timeout=20,
                     env=netns.python_env(), cwd=str(Path(__file__).resolve().parents[2]))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("tcpstack: error:")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not link_exists(netns)




def test_sigterm_while_workers_are_still_starting_stops_them_cleanly(
    netns: NetNS, serve: DaemonFactory
) -> None:
    """A stop signal that arrives before a worker's event loop handles signals waits
    for it (blocked across the fork): every worker stops cleanly, exit 0 -- not a
    worker killed by the default action and the daemon exiting 1."""
    for _ in range(3):
        d = serve("--workers", "2", probe_port=None)  # stopped as soon as the link is up
        result = d.stop()
        assert result.returncode == 0, result.log
        assert "Traceback" not in result.log, result.log
        assert not link_exists(netns)
