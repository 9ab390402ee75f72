"""TunDevice against the real kernel, each scenario inside its own network namespace.

``TunDevice.open`` talks rtnetlink in the namespace of the *calling process*,
so every scenario runs as a child interpreter started inside the test's
namespace (``netns.exec_python``). The child prints one ``RESULT {json}``
line, which the test parses and checks; where it matters, the namespace is
also inspected from the outside with ``ip`` after the child has exited.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import shutil
import struct
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.netns import NetNS

pytestmark = pytest.mark.root

# Imported by every child script.
_PRELUDE = """
import ipaddress, json, select, struct, subprocess, sys, time
from tcpstack.link.tun import TunDevice, TunError

def emit(**fields):
    print("RESULT " + json.dumps(fields), flush=True)

def sh(*argv):
    return subprocess.run(argv, capture_output=True, text=True).stdout

def inet_checksum(data):
    if len(data) % 2:
        data += b"\\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def echo_request(src, dst, ident, seq, payload):
    icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload)
    struct.pack_into("!H", icmp, 2, inet_checksum(bytes(icmp)))
    ip = bytearray(struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0x1234, 0x4000, 64, 1, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed))
    struct.pack_into("!H", ip, 10, inet_checksum(bytes(ip)))
    return bytes(ip + icmp)

def read_until(dev, accept, timeout=5.0):
    # Returns the first packet accept() likes; skips the IPv6 chatter (router
    # solicitations, MLD reports) the kernel sends once the link is up.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        select.select([dev.fd], [], [], 0.1)
        for packet in dev.read_batch():
            if accept(packet):
                return packet
    return None

def is_icmp4(packet):
    return len(packet) >= 28 and packet[0] >> 4 == 4 and packet[9] == 1
"""

HOST = ipaddress.IPv4Interface("10.0.0.1/24")
PEER = ipaddress.IPv4Address("10.0.0.2")


def run_child(netns: NetNS, body: str, timeout: float = 30.0) -> dict[str, Any]:
    """Run ``_PRELUDE + body`` inside ``netns``; return the fields of its RESULT line."""
    code = _PRELUDE + textwrap.dedent(body)
    proc = netns.exec_python(code, timeout=timeout)
    detail = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, detail
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 1, detail
    fields: dict[str, Any] = json.loads(results[0].removeprefix("RESULT "))
    return fields


def link_names(netns: NetNS) -> list[str]:
    """Interface names in the namespace (``ip -o link`` prints ``N: NAME: <...``)."""
    out = netns.ip("-o", "link")
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line]


def ipv4_checksum_ok(header: bytes) -> bool:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


# ---------------------------------------------------------------- lifecycle


def test_create_configures_link_and_close_removes_it(netns: NetNS) -> None:
    result = run_child(
        netns,
        """
        host = ipaddress.IPv4Interface("10.0.0.1/24")
        dev = TunDevice.open("tcpst0", mtu=1400, host_address=host)
        info = dict(
            name=dev.name, mtu=dev.mtu, created=dev.created, fd=dev.fd, index=dev.index,
            link=sh("ip", "-o", "link", "show", "tcpst0"),
            addr=sh("ip", "-o", "-4", "addr", "show", "dev", "tcpst0"),
            route=sh("ip", "-o", "-4", "route", "show", "dev", "tcpst0"),
        )
        dev.close()
        dev.close()  # idempotent
        emit(**info, closed=dev.closed, after=sh("ip", "-o", "link"))
        """,
    )
    assert result["name"] == "tcpst0"
    assert result["created"] is True
    assert result["mtu"] == 1400
    assert result["fd"] >= 0
    assert result["index"] > 0
    assert f"{result['index']}: tcpst0:" in result["link"]
    assert "mtu 1400" in result["link"]
    flags = result["link"].split("<", 1)[1].split(">", 1)[0].split(",")
    assert "UP" in flags and "POINTOPOINT" in flags and "NOARP" in flags
    assert "inet 10.0.0.1/24" in result["addr"]
    assert "10.0.0.0/24" in result["route"]  # the kernel's connected route
    assert result["closed"] is True
    assert "tcpst0" not in result["after"]
    assert "tcpst0" not in link_names(netns)


def test_open_without_configure_creates_bare_link(netns: NetNS) -> None:
    result = run_child(
        netns,
        """
        dev = TunDevice.open("tcpst0", mtu=1400, configure=False)
        emit(created=dev.created, mtu=dev.mtu, link=sh("ip", "-o", "link", "show", "tcpst0"),
             addr=sh("ip", "-o", "-4", "addr", "show", "dev", "tcpst0"))
        dev.close()
        """,
    )
    assert result["created"] is True
    assert result["mtu"] == 1500  # the kernel's default, untouched
    assert ",UP" not in result["link"] and "<UP" not in result["link"]
    assert result["addr"] == ""
    assert "tcpst0" not in link_names(netns)


def test_name_template_is_resolved_by_kernel(netns: NetNS) -> None:
    result = run_child(
        netns,
        """
        dev = TunDevice.open("tcpst%d")
        emit(name=dev.name, exists=bool(sh("ip", "-o", "link", "show", dev.name)))
        dev.close()
        """,
    )
    assert result["name"] == "tcpst0"
    assert result["exists"] is True
    assert "tcpst0" not in link_names(netns)


def test_attach_to_persistent_tun_keeps_config_and_device(netns: NetNS) -> None:
    netns.ip("tuntap", "add", "mode", "tun", "user", "nobody", "name", "ptun0")
    netns.ip("addr", "add", "10.0.3.1/24", "dev", "ptun0")
    netns.ip("link", "set", "ptun0", "mtu", "1280")
    result = run_child(
        netns,
        """
        dev = TunDevice.open("ptun0", mtu=1500,
                             host_address=ipaddress.IPv4Interface("10.0.9.1/24"))
        emit(created=dev.created, mtu=dev.mtu, name=dev.name)
        dev.close()
        """,
    )
    assert result == {"created": False, "mtu": 1280, "name": "ptun0"}
    assert "ptun0" in link_names(netns)
    assert "mtu 1280" in netns.ip("-o", "link", "show", "ptun0")
    addrs = netns.ip("-o", "-4", "addr", "show", "dev", "ptun0")
    assert "inet 10.0.3.1/24" in addrs
    assert "10.0.9.1" not in addrs


def test_attach_with_configure_true_sets_mtu_and_adds_address(netns: NetNS) -> None:
    netns.ip("tuntap", "add", "mode", "tun", "name", "ptun0")
    netns.ip("addr", "add", "10.0.3.1/24", "dev", "ptun0")
    body = """
        dev = TunDevice.open("ptun0", mtu=1400, configure=True,
                             host_address=ipaddress.IPv4Interface("10.0.9.1/24"))
        emit(created=dev.created, mtu=dev.mtu, link=sh("ip", "-o", "link", "show", "ptun0"))
        dev.close()
        """
    for _ in range(2):  # the second time the address is already there: no EEXIST
        result = run_child(netns, body)
        assert result["created"] is False
        assert result["mtu"] == 1400
        assert "UP" in result["link"].split("<", 1)[1].split(">", 1)[0].split(",")
    assert "ptun0" in link_names(netns)
    addrs = netns.ip("-o", "-4", "addr", "show", "dev", "ptun0")
    assert "inet 10.0.3.1/24" in addrs and "inet 10.0.9.1/24" in addrs


def test_open_from_inside_running_uvloop(netns: NetNS) -> None:
    result = run_child(
        netns,
        """
        import asyncio, uvloop

        async def main():
            dev = TunDevice.open("tcpst0", host_address=ipaddress.IPv4Interface("10.0.0.1/24"))
            seen = bool(sh("ip", "-o", "-4", "addr", "show", "dev", "tcpst0"))
            dev.close()
            dev2 = await asyncio.to_thread(TunDevice.open, "tcpst1")
            await asyncio.to_thread(dev2.close)
            return seen

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        seen = asyncio.run(main())
        outside = TunDevice.open("tcpst2")  # policy installed, loop not running
        outside.close()
        emit(seen=seen, after=sh("ip", "-o", "link"))
        """,
    )
    assert result["seen"] is True
    assert "tcpst" not in result["after"]


# ---------------------------------------------------------------- packets


def test_reads_packet_the_kernel_routes_into_device(netns: NetNS) -> None:
    result = run_child(
        netns,
        """
        dev = TunDevice.open("tcpst0", host_address=ipaddress.IPv4Interface("10.0.0.1/24"))
        ping = subprocess.Popen(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", "10.0.0.2"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            packet = read_until(dev, is_icmp4)
        finally:
            try:
                ping.wait(timeout=5)
            except subprocess.TimeoutExpired:
                ping.kill()
                ping.wait()
            dev.close()
        emit(packet=packet.hex() if packet is not None else None)
        """,
    )
    assert result["packet"] is not None, "no IPv4 ICMP packet came out of the TUN device"
    packet = bytes.fromhex(result["packet"])
    ihl = (packet[0] & 0x0F) * 4
    assert packet[0] >> 4 == 4  # IPv4, and no tun_pi prefix in front (IFF_NO_PI)
    assert packet[9] == 1  # ICMP
    assert struct.unpack_from("!H", packet, 2)[0] == len(packet)
    assert ipv4_checksum_ok(packet[:ihl])
    assert ipaddress.IPv4Address(packet[12:16]) == HOST.ip
    assert ipaddress.IPv4Address(packet[16:20]) == PEER
    assert packet[ihl] == 8 and packet[ihl + 1] == 0  # echo request


def test_written_packet_reaches_kernel_which_replies(netns: NetNS) -> None:
    result = run_child(
        netns,
        """
        dev = TunDevice.open("tcpst0", host_address=ipaddress.IPv4Interface("10.0.0.1/24"))
        request = echo_request("10.0.0.2", "10.0.0.1", 0xBEEF, 7, b"tcpstack tun test")
        wrote = dev.write(request)
        reply = read_until(dev, lambda p: is_icmp4(p) and p[20] == 0)
        dev.close()
        emit(wrote=wrote, reply=reply.hex() if reply is not None else None)
        """,
    )
    assert result["wrote"] is True
    assert result["reply"] is not None, "the kernel did not answer the echo request"
    reply = bytes.fromhex(result["reply"])
    assert reply[0] == 0x45 and reply[9] == 1
    assert ipv4_checksum_ok(reply[:20])
    assert ipaddress.IPv4Address(reply[12:16]) == HOST.ip
    assert ipaddress.IPv4Address(reply[16:20]) == PEER
    icmp_type, code, _csum, ident, seq = struct.unpack_from("!BBHHH", reply, 20)
    assert (icmp_type, code, ident, seq) == (0, 0, 0xBEEF, 7)
    assert reply[28:] == b"tcpstack tun test"


def test_write_batch_and_read_batch_bounds(netns: NetNS) -> None:
    result = run_child(
        netns,
        """
        dev = TunDevice.open("tcpst0", host_address=ipaddress.IPv4Interface("10.0.0.1/24"))
        written = dev.write_batch(
            echo_request("10.0.0.2", "10.0.0.1", 0x4242, seq, b"x" * seq) for seq in range(5)
        )
        deadline = time.monotonic() + 5
        replies, batch_sizes = [], []
        while len(replies) < 5 and time.monotonic() < deadline:
            select.select([dev.fd], [], [], 0.1)
            time.sleep(0.1)  # let every reply queue up before draining
            batch = dev.read_batch(max_packets=2)
            batch_sizes.append(len(batch))
            replies += [p for p in batch if is_icmp4(p) and p[20] == 0]
        leftover = dev.read_batch()
        dev.close()
        emit(written=written, seqs=[struct.unpack_from("!H", p, 26)[0] for p in replies],
             max_batch=max(batch_sizes), leftover_icmp=[p.hex() for p in leftover if is_icmp4(p)])
        """,
    )
    assert result["written"] == 5
    assert sorted(result["seqs"]) == [0, 1, 2, 3, 4]
    assert result["max_batch"] == 2
    assert result["leftover_icmp"] == []


def test_invalid_packet_write_raises_and_closed_device_refuses_io(netns: NetNS) -> None:
    result = run_child(
        netns,
        """
        dev = TunDevice.open("tcpst0")
        try:
            dev.write(b"\\x00" * 20)  # version nibble 0: neither IPv4 nor IPv6
            bad = None
        except OSError as exc:
            bad = exc.errno
        dev.close()
        refused = []
        for op in (lambda: dev.read_batch(), lambda: dev.write(b"x"), lambda: dev.write_batch([])):
            try:
                op()
            except ValueError:
                refused.append(True)
        emit(bad=bad, refused=refused)
        """,
    )
    assert result["bad"] == errno.EINVAL
    assert result["refused"] == [True, True, True]


# ---------------------------------------------------------------- errors


def _add_non_tun_link(netns: NetNS, name: str) -> str:
    """Create a non-TUN interface ``name``; a dummy if the kernel has it, else a veth."""
    try:
        netns.ip("link", "add", name, "type", "dummy")
        return "dummy"
    except subprocess.CalledProcessError:  # no dummy driver in this kernel
        netns.ip("link", "add", name, "type", "veth", "peer", "name", name + "p")
        return "veth"


def test_non_tun_interface_is_rejected_and_left_alone(netns: NetNS) -> None:
    kind = _add_non_tun_link(netns, "nt0")
    netns.ip("tuntap", "add", "mode", "tap", "name", "tap0")
    result = run_child(
        netns,
        """
        errors = {}
        for name in ("nt0", "tap0", "lo"):
            try:
                TunDevice.open(name, host_address=ipaddress.IPv4Interface("10.0.0.1/24"),
                               configure=True)
                errors[name] = None
            except TunError as exc:
                errors[name] = str(exc)
        emit(**errors)
        """,
    )
    assert result["nt0"] is not None
    assert "not a TUN device" in result["nt0"] and kind in result["nt0"]
    assert result["tap0"] is not None and "TAP" in result["tap0"]
    assert result["lo"] is not None and "not a TUN device" in result["lo"]
    for message in result.values():
        assert "\n" not in message
    names = link_names(netns)
    assert "nt0" in names and "tap0" in names
    assert "10.0.0.1" not in netns.ip("-o", "-4", "addr")


@pytest.mark.parametrize("name", ["a" * 16, "tcpstack-too-long0", "bad name", "a/b", ""])
def test_invalid_name_is_rejected(netns: NetNS, name: str) -> None:
    result = run_child(
        netns,
        f"""
        try:
            TunDevice.open({name!r})
            emit(error=None)
        except TunError as exc:
            emit(error=str(exc))
        """,
    )
    assert result["error"] is not None
    if len(name) > 15:
        assert "at most 15" in result["error"]
    assert link_names(netns) == ["lo"]


def test_second_open_of_held_device_is_busy(netns: NetNS) -> None:
    result = run_child(
        netns,
        """
        first = TunDevice.open("tcpst0", host_address=ipaddress.IPv4Interface("10.0.0.1/24"))
        try:
            TunDevice.open("tcpst0")
            busy = None
        except TunError as exc:
            busy = [str(exc), exc.errno]
        still = bool(sh("ip", "-o", "link", "show", "tcpst0"))
        first.close()
        emit(busy=busy, still=still)
        """,
    )
    assert result["busy"] is not None
    message, code = result["busy"]
    assert code == errno.EBUSY and "busy" in message
    assert result["still"] is True
    assert "tcpst0" not in link_names(netns)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_missing_cap_net_admin_is_eperm(netns: NetNS) -> None:
    code = _PRELUDE + textwrap.dedent(
        """
        try:
            TunDevice.open("tcpst0", host_address=ipaddress.IPv4Interface("10.0.0.1/24"))
            emit(error=None)
        except TunError as exc:
            emit(error=str(exc), errno=exc.errno)
        """
    )
    # Root without CAP_NET_ADMIN: drop it from the bounding and inheritable sets
    # so the exec'd interpreter never gets it back.
    proc = netns.run(
        [
            "setpriv",
            "--bounding-set=-net_admin",
            "--inh-caps=-net_admin",
            sys.executable,
            "-c",
            code,
        ],
        env=netns.python_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    fields = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert fields["errno"] == errno.EPERM
    assert "CAP_NET_ADMIN" in fields["error"]
    assert link_names(netns) == ["lo"]
