"""Path MTU over a real routed path in private namespaces.

    client ns ---- router ns ------------ daemon ns (tcpstack on a TUN)
    10.2.0.2   10.2.0.1 | 10.1.0.2   10.1.0.1 | 10.0.0.1 -> 10.0.0.2
               MTU 1280 (toward the client)

The client's own interface has MTU 1500, so its SYN offers MSS 1460 and tcpstack
sends 1500-byte packets, which the router cannot forward: it answers with ICMP
"fragmentation needed" (RFC 1191) -- or, with a firewall rule (iptables-nft, i.e.
nftables) dropping that inside the router namespace, says nothing (a black hole)
and tcpstack must find out by itself (RFC 4821-style probing). Everything is
inside namespaces made here.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcpstack.apps.http import iter_pattern
from tests.integration.daemon import (
    STACK_ADDRESS,
    DaemonFactory,
    assert_clean_exit,
    parse_counters,
)
from tests.netns import NetNS

SIZE = 2 * 1024 * 1024
BOTTLENECK_MTU = 1280


def _sha256_of_pattern(n: int) -> str:
    h = hashlib.sha256()
    for chunk in iter_pattern(n):
        h.update(chunk)
    return h.hexdigest()


@pytest.fixture
def serve(netns: NetNS, tmp_path: Path) -> Iterator[DaemonFactory]:
    factory = DaemonFactory(netns, tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def path(netns: NetNS) -> Iterator[tuple[NetNS, NetNS]]:
    """(router, client) namespaces wired to the daemon's namespace ``netns``."""
    with NetNS(prefix="tcpst-rtr") as router, NetNS(prefix="tcpst-cli") as client:
        tag = router.name[-6:]
        d_r, r_d, r_c, c_r = (f"pd{tag}", f"pr{tag}", f"pc{tag}", f"px{tag}")
        netns.ip("link", "add", d_r, "type", "veth", "peer", "name", r_d)
        netns.ip("link", "set", r_d, "netns", router.name)
        router.ip("link", "add", r_c, "type", "veth", "peer", "name", c_r)
        router.ip("link", "set", c_r, "netns", client.name)
        netns.ip("addr", "add", "10.1.0.1/24", "dev", d_r)
        netns.ip("link", "set", d_r, "up")
        router.ip("addr", "add", "10.1.0.2/24", "dev", r_d)
        router.ip("addr", "add", "10.2.0.1/24", "dev", r_c)
        router.ip("link", "set", r_c, "mtu", str(BOTTLENECK_MTU))
        router.ip("link", "set", r_d, "up")
        router.ip("link", "set", r_c, "up")
        client.ip("addr", "add", "10.2.0.2/24", "dev", c_r)
        client.ip("link", "set", c_r, "up")
        client.ip("route", "add", "10.0.0.0/24", "via", "10.2.0.1")
        router.ip("route", "add", "10.0.0.0/24", "via", "10.1.0.1")
        netns.ip("route", "add", "10.2.0.0/24", "via", "10.1.0.2")
        for ns in (netns, router):
            ns.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        yield router, client


def _download(client: NetNS) -> float:
    """Fetch SIZE bytes over the narrow path; return the seconds it took."""
    start = time.monotonic()
    out = client.run(["curl", "-s", "-m", "60", "-o", "-", f"http://{STACK_ADDRESS}/bytes/{SIZE}"],
                     capture_output=True, timeout=70)
    took = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    assert hashlib.sha256(out.stdout).hexdigest() == _sha256_of_pattern(SIZE)
    return took


def test_frag_needed_from_the_router_lowers_the_mss(
        serve: DaemonFactory, path: tuple[NetNS, NetNS]) -> None:
    _router, client = path
    d = serve()
    took = _download(client)
    result = d.stop()
    assert_clean_exit(result)
    counters = parse_counters(result.log)
    assert counters.get("icmp_frag_needed", 0) >= 1, counters
    assert counters.get("tcp_pmtu_lowered", 0) >= 1, counters
    assert counters.get("tcp_plpmtud_lowered", 0) == 0, counters  # ICMP was enough
    print(f"\npath MTU {BOTTLENECK_MTU} with ICMP: {SIZE} bytes in {took:.2f} s")


def test_black_hole_without_icmp_is_found_by_probing(
        serve: DaemonFactory, path: tuple[NetNS, NetNS]) -> None:
    router, client = path
    # Inside the router namespace only: its ICMP "fragmentation needed" never
    # leaves (iptables-nft programs nftables; the image has no nft binary).
    iptables = shutil.which("iptables-nft") or shutil.which("iptables")
    if iptables is None:
        pytest.skip("iptables-nft (or iptables) is needed to filter ICMP in the router")
    router.run([iptables, "-A", "OUTPUT", "-p", "icmp", "--icmp-type",
                "fragmentation-needed", "-j", "DROP"], check=True)
    d = serve()
    took = _download(client)
    result = d.stop()
    assert_clean_exit(result)
    counters = parse_counters(result.log)
    assert counters.get("icmp_frag_needed", 0) == 0, counters  # nothing got through
    assert counters.get("tcp_plpmtud_lowered", 0) >= 1, counters
    print(f"\npath MTU {BOTTLENECK_MTU}, ICMP dropped: {SIZE} bytes in {took:.2f} s "
          "(PLPMTUD recovered)")
