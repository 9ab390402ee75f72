"""Capture files (tcpstack.observe.pcap, .device) read back by an independent reader
(dpkt): what a stack sent and received, offloaded super-segments cut into wire
segments with valid checksums, rotation and reopening."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import dpkt
import pytest
from tcp_helpers import stack_pair

from tcpstack.observe.device import TapDevice
from tcpstack.observe.pcap import PcapWriter, wire_packets
from tcpstack.tcp.state import State
from tcpstack.wire import checksum as ck
from tcpstack.wire.ipv4 import parse_ipv4
from tcpstack.wire.ipv6 import parse_ipv6
from tcpstack.wire.tcp import ACK, CWR, FIN, PSH, OutSegment, emit_tcp, emit_tcp_ipv4, parse_tcp

A = int(ipaddress.IPv4Address("10.0.0.1"))
B = int(ipaddress.IPv4Address("10.0.0.2"))
A6 = int(ipaddress.IPv6Address("fd00::1"))
B6 = int(ipaddress.IPv6Address("fd00::2"))


def read_back(path: Path) -> list[tuple[float, bytes]]:
    """(timestamp, packet) pairs as dpkt reads them (pcap or pcapng)."""
    with path.open("rb") as f:
        reader: Any = dpkt.pcapng.Reader(f) if path.suffix == ".pcapng" else \
            dpkt.pcap.Reader(f)
        assert reader.datalink() == 101 or reader.datalink() == dpkt.pcap.DLT_RAW
        return [(ts, bytes(buf)) for ts, buf in reader]


class ListDevice:
    """A device double: reads come from ``inbox``, writes go to ``sent``."""

    def __init__(self) -> None:
        self.inbox: list[bytes] = []
        self.sent: list[bytes] = []

    def fileno(self) -> int:
        return -1

    def read_batch(self, max_packets: int = 256, bufsize: int = 65536) -> list[bytes]:
        out, self.inbox = self.inbox, []
        return out

    def write_batch(self, packets: Any) -> int:
        for p in packets:
            self.sent.append(b"".join(p) if isinstance(p, tuple) else bytes(p))
        return len(packets)


class TappedStack:
    """Stands in for a stack (a compiled Stack's methods cannot be replaced): what
    it reads and writes passes through ``tap``, and is noted in ``seen``."""

    def __init__(self, stack: Any, tap: TapDevice, seen: list[tuple[str, bytes]]) -> None:
        self.stack = stack
        self.tap = tap
        self.seen = seen

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stack, name)

    def receive(self, pkt: Any, now: float) -> None:
        self.tap.device.inbox.append(bytes(pkt))
        for p in self.tap.read_batch():
            self.seen.append(("in", p))
            self.stack.receive(p, now)

    def packets_to_send(self, now: float) -> Any:
        pkts = self.stack.packets_to_send(now)
        self.tap.write_batch(pkts)
        self.seen.extend(("out", bytes(p)) for p in pkts)
        return pkts


@pytest.mark.parametrize("name", ["cap.pcapng", "cap.pcap"])
def test_a_capture_holds_every_packet_of_a_transfer_in_both_directions(
        tmp_path: Path, name: str) -> None:
    """Two stacks exchange 100 KB; every packet B reads and writes goes through a
    TapDevice; the file, read by dpkt, has those packets, in order, byte for byte."""
    net = stack_pair()
    path = tmp_path / name
    writer = PcapWriter(path)
    tap = TapDevice(ListDevice(), writer=writer, clock=lambda: 1_700_000_000.25)
    seen: list[tuple[str, bytes]] = []
    net.b = TappedStack(net.b, tap, seen)  # type: ignore[assignment]
    net.b.listen(80)
    tcb = net.a.connect("10.0.0.2", 80, 0.0)
    net.run(until=lambda: tcb.state is State.ESTABLISHED)
    tcb.send(bytes(100_000))
    tcb.close()
    net.run(until=lambda: tcb.state in (State.FIN_WAIT_2, State.TIME_WAIT))
    writer.close()
    got = read_back(path)
    assert [p for _, p in got] == [p for _, p in seen]
    assert all(ts == pytest.approx(1_700_000_000.25, abs=1e-6) for ts, _ in got)
    assert tap.packets_in == sum(1 for d, _ in seen if d == "in")
    assert tap.bytes_out == sum(len(p) for d, p in seen if d == "out")
    payload = sum(len(dpkt.ip.IP(p).data.data) for d, p in seen if d == "in")
    assert payload == 100_000


def test_pcapng_marks_the_direction_of_each_packet(tmp_path: Path) -> None:
    path = tmp_path / "dir.pcapng"
    w = PcapWriter(path)
    pkt = emit_tcp_ipv4(OutSegment(80, 40000, 1, 2, ACK, 100), B, A, 1)
    w.write([pkt], "in", 1.0)
    w.write([pkt], "out", 2.0)
    w.close()
    data = path.read_bytes()
    epbs = []
    i = 0
    while i < len(data):
        kind, length = int.from_bytes(data[i:i + 4], "little"), \
            int.from_bytes(data[i + 4:i + 8], "little")
        if kind == 6:
            epbs.append(data[i:i + length])
        i += length
    flags = [int.from_bytes(b[-12:-8], "little") for b in epbs]
    assert flags == [1, 2]  # epb_flags: inbound, outbound


def test_a_tso_super_segment_is_captured_as_mss_sized_checksummed_segments() -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes
    seg = OutSegment(80, 40000, 1000, 5000, ACK | PSH | FIN, 512, payload=payload)
    pkt = emit_tcp_ipv4(seg, B, A, 77, vnet=True, gso_size=1448)
    parts = wire_packets(pkt, vnet=True)
    assert len(parts) == 8  # ceil(10240 / 1448)
    joined = b""
    for i, part in enumerate(parts):
        ip = parse_ipv4(part)  # checks the IP checksum
        tcp = parse_tcp(ip.payload, ip.src, ip.dst, verify_checksum=True)
        assert tcp.seq == 1000 + i * 1448
        assert ip.ident == 77 + i
        last = i == len(parts) - 1
        assert bool(tcp.flags & FIN) == last and bool(tcp.flags & PSH) == last
        assert len(part) <= 20 + 20 + 1448
        joined += bytes(tcp.payload)
    assert joined == payload


def test_a_partial_checksum_is_completed() -> None:
    seg = OutSegment(80, 40000, 1, 2, ACK, 512, payload=b"hello")
    pkt = emit_tcp_ipv4(seg, B, A, 1, vnet=True)
    (wire,) = wire_packets(pkt, vnet=True)
    ip = parse_ipv4(wire)
    parse_tcp(ip.payload, ip.src, ip.dst, verify_checksum=True)
    assert ck.verify(ck.pseudo_header_ipv4(B, A, 6, len(ip.payload)) + ck.partial(ip.payload))


def test_an_ipv6_tso_super_segment_is_cut_with_ipv6_checksums(tmp_path: Path) -> None:
    """GSO_TCPV6: payload lengths per segment, checksums over the IPv6 pseudo-header
    (RFC 8200 8.1), as dpkt reads them back from the capture."""
    payload = bytes(range(256)) * 20  # 5120 bytes
    seg = OutSegment(80, 40000, 7000, 5000, ACK | PSH | FIN | CWR, 512, payload=payload)
    pkt = emit_tcp(seg, B6, A6, 0, vnet=True, gso_size=1428)
    parts = wire_packets(pkt, vnet=True)
    assert len(parts) == 4  # ceil(5120 / 1428)
    writer = PcapWriter(tmp_path / "six.pcapng")
    writer.write(parts, "out", 1.0)
    writer.close()
    joined = b""
    for i, (_ts, raw) in enumerate(read_back(tmp_path / "six.pcapng")):
        ip6 = dpkt.ip6.IP6(raw)
        assert ip6.plen == len(raw) - 40 <= 20 + 1428
        ip = parse_ipv6(raw)
        tcp = parse_tcp(ip.packet[40:], ip.src, ip.dst, verify_checksum=True)
        assert tcp.seq == 7000 + i * 1428
        last = i == len(parts) - 1
        assert bool(tcp.flags & FIN) == last and bool(tcp.flags & PSH) == last
        assert bool(tcp.flags & CWR) == (i == 0)
        joined += bytes(tcp.payload)
    assert joined == payload


def test_an_ipv6_partial_checksum_is_completed() -> None:
    seg = OutSegment(80, 40000, 1, 2, ACK, 512, payload=b"hello")
    (wire,) = wire_packets(emit_tcp(seg, B6, A6, 0, vnet=True), vnet=True)
    ip = parse_ipv6(wire)
    tcp = ip.packet[40:]
    assert ck.verify(ck.pseudo_header_ipv6(B6, A6, 6, len(tcp)) + ck.partial(tcp))
    parse_tcp(tcp, ip.src, ip.dst, verify_checksum=True)


def test_rotation_keeps_the_size_limit_and_the_number_of_files(tmp_path: Path) -> None:
    path = tmp_path / "r.pcap"
    w = PcapWriter(path, max_bytes=8192, files=3)
    pkt = emit_tcp_ipv4(OutSegment(80, 40000, 1, 2, ACK, 100, payload=bytes(1000)), B, A, 1)
    for i in range(40):
        w.write([pkt], "out", float(i))
    w.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["r.pcap", "r.pcap.1", "r.pcap.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 8192
        assert len(read_back(tmp_path / name)) >= 1
    assert w.rotations >= 3
    # The newest packets are in the current file, the older ones in .1.
    assert read_back(path)[-1][0] == 39.0
    assert read_back(tmp_path / "r.pcap.1")[-1][0] < read_back(path)[0][0]


def test_reopen_after_the_file_was_moved_starts_a_new_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "h.pcapng"
    w = PcapWriter(path)
    pkt = emit_tcp_ipv4(OutSegment(80, 40000, 1, 2, ACK, 100), B, A, 1)
    w.write([pkt], "in", 1.0)
    path.rename(tmp_path / "h.old.pcapng")
    w.reopen()
    w.write([pkt], "out", 2.0)
    w.reopen()  # not moved: appended to
    w.write([pkt], "out", 3.0)
    w.close()
    assert [ts for ts, _ in read_back(tmp_path / "h.old.pcapng")] == [1.0]
    assert [ts for ts, _ in read_back(path)] == [2.0, 3.0]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_snaplen_truncates_what_is_stored_but_keeps_the_original_length(tmp_path: Path) -> None:
    path = tmp_path / "s.pcap"
    w = PcapWriter(path, snaplen=64)
    pkt = emit_tcp_ipv4(OutSegment(80, 40000, 1, 2, ACK, 100, payload=bytes(500)), B, A, 1)
    w.write([pkt], "out", 1.0)
    w.close()
    with path.open("rb") as f:
        reader = dpkt.pcap.Reader(f)
        assert reader.snaplen == 64
        (_, buf), = list(reader)
    assert len(buf) == 64
