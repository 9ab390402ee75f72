"""``tools/fuzz_daemon.py`` without root: its arguments and its packet generator.

The generator is checked against the sans-I/O :class:`Stack` (the daemon's own
engine, no TUN): its packets reach every class of malformed input, its
conversations get established from the stack's answers, and nothing raises.
"""

from __future__ import annotations

import ipaddress
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tcpstack.stack import Stack, StackConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # tools/ is importable from the checkout
    sys.path.insert(0, str(REPO_ROOT))

from tools.fuzz_daemon import ETH_P_IP, ETH_P_IPV6, PacketSource, build_parser  # noqa: E402


@pytest.mark.parametrize("args", [
    ["--packets", "0"], ["--packets", "many"], ["--seed", "-1"], ["--max-seconds", "0"],
    ["--rss-limit-mib", "nan"], ["--probe-every", "-5"], ["--no-such-flag"],
])
def test_bad_arguments_print_one_error_line_and_exit_2(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "tools.fuzz_daemon", *args],
                          cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fuzz_daemon: error: "), proc.stderr
    assert proc.stdout == ""


def test_defaults_are_the_documented_full_run() -> None:
    args = build_parser().parse_args([])
    assert (args.packets, args.seed) == (1_000_000, 1)
    assert build_parser().parse_args(["--packets", "50_000"]).packets == 50_000


def _packets(seed: int, n: int) -> list[tuple[bytes, int]]:
    src = PacketSource(seed)
    return [(bytes(p), e) for p, e in (src.next_packet(i) for i in range(n))]


def test_the_same_seed_gives_the_same_packets_and_another_seed_others() -> None:
    assert _packets(3, 2000) == _packets(3, 2000)
    assert _packets(3, 2000) != _packets(4, 2000)


def test_generated_packets_reach_every_check_of_the_stack_and_conversations_establish(
) -> None:
    stack = Stack(StackConfig(addresses=(ipaddress.IPv4Address("10.0.0.2"),)),
                  isn_secret=b"generator check!", rng=random.Random(1))
    for port in (80, 7, 9):
        stack.listen(port)
    src = PacketSource(1)
    kinds: Counter[int] = Counter()
    now = 0.0
    established = 0
    for i in range(20_000):
        pkt, ethertype = src.next_packet(i)
        kinds[ethertype] += 1
        # An IPv6 frame reaches the daemon as it is: its version nibble says 6.
        stack.receive(bytes(pkt), now)
        for out in stack.packets_to_send(now):
            src.learn(bytes(out[0]) + bytes(out[1]) if isinstance(out, tuple) else bytes(out))
        established = max(established, sum(1 for t in stack.tcbs.values()
                                           if str(t.state) == "ESTABLISHED"))
        now += 0.0001
    c = stack.counters
    assert c["internal_error"] == 0
    assert kinds[ETH_P_IP] and kinds[ETH_P_IPV6]
    for reason in ("ipv4_bad_checksum", "ipv4_truncated", "ipv4_bad_length", "ipv4_bad_ihl",
                   "ipv4_fragments", "ip_bad_version", "ip_truncated", "ipv6_unsupported",
                   "ip_not_for_us", "ip_bad_source", "tcp_bad_checksum", "tcp_truncated",
                   "tcp_bad_data_offset", "tcp_bad_option_length", "icmp_bad_checksum",
                   "icmp_echo_replied", "udp_port_unreachable", "ip_unknown_protocol",
                   "tcp_closed_port", "tcp_syn_accepted", "tcp_listen_ack_reset"):
        assert c[reason] > 0, f"the generator never produced {reason}: {dict(c)}"
    assert established >= 5, "conversations did not get established from the stack's answers"
    assert src.stats.kinds["conv_data"] > 0 and src.stats.kinds["conv_rst"] > 0
