"""Packet capture files: classic pcap and pcapng, link type raw IP, with rotation.

:class:`PcapWriter` writes packets as they cross the TUN device, readable by
tcpdump, tshark and Wireshark:

* ``pcapng`` (the default for a name ending in ``.pcapng``): a section header,
  one interface (link type ``LINKTYPE_RAW`` 101, IPv4 and IPv6 packets as they
  are, told apart by their version; nanosecond timestamps) and one
  enhanced packet block per packet, whose ``epb_flags`` option says whether the
  packet came in (from the kernel to the stack) or went out;
* ``pcap`` (classic, libpcap 2.4, microsecond timestamps): no direction.

**Offloads.** With ``IFF_VNET_HDR`` the TUN carries a virtio-net header and, with
TSO, 64 KiB "super-segments" whose TCP checksum is left for the kernel to
finish. :func:`wire_packets` turns such a packet into what would have crossed a
wire: the header is stripped, a super-segment is cut into ``gso_size`` segments
(IPv4 length, ID and checksum, or the IPv6 payload length; TCP sequence number
and flags adjusted per segment: FIN and PSH only on the last, CWR only on the
first) and every TCP checksum is completed, over the pseudo-header of the
packet's family (RFC 9293 3.1, RFC 8200 8.1). The capture therefore shows
MTU-sized, checksummed packets either way; the cost is a checksum per captured
segment.

**Rotation.** With ``max_bytes`` the file is rotated before it would grow beyond
that size: ``FILE`` becomes ``FILE.1``, ``FILE.1`` becomes ``FILE.2`` ... up to
``files - 1`` old files, the oldest deleted (as ``tcpdump -C -W``).
:meth:`PcapWriter.reopen` (the daemon calls it on SIGHUP) closes the file and
opens ``FILE`` again -- appending if it still exists (after a ``logrotate``
``copytruncate``, or a plain HUP), starting a new file if it was moved away.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, Final

from tcpstack.wire import checksum as ck
from tcpstack.wire import virtio
from tcpstack.wire.errors import BytesLike

log = logging.getLogger("tcpstack.pcap")

LINKTYPE_RAW: Final = 101
FORMATS: Final = ("pcapng", "pcap")

_PCAP_MAGIC_US: Final = 0xA1B2C3D4
_SHB: Final = 0x0A0D0D0A
_IDB: Final = 0x00000001
_EPB: Final = 0x00000006
_BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D
_EPB_FLAGS: Final = 2
_IF_TSRESOL: Final = 9
_IF_NAME: Final = 2
_SHB_USERAPPL: Final = 4
DIRECTION_FLAG: Final = {"in": 1, "out": 2}

_H: Final = struct.Struct("!H")
_I: Final = struct.Struct("!I")


def default_format(path: Path | str) -> str:
    """``pcap`` for a ``.pcap``/``.cap`` file name, else ``pcapng``."""
    return "pcap" if str(path).endswith((".pcap", ".cap")) else "pcapng"


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


class PcapWriter:
    """Writes packets to ``path`` in ``fmt`` (``pcapng`` or ``pcap``).

    ``snaplen`` 0 keeps whole packets. ``max_bytes`` (0: unlimited) and ``files``
    control rotation (see the module docstring). Opening the file happens here,
    so the daemon can create it before it drops privileges.
    """

    def __init__(self, path: Path | str, fmt: str | None = None, *, snaplen: int = 0,
                 max_bytes: int = 0, files: int = 2, interface: str = "tcpstack0") -> None:
        self.path = Path(path)
        self.format = fmt or default_format(self.path)
        if self.format not in FORMATS:
            raise ValueError(f"capture format must be pcapng or pcap, not {fmt!r}")
        if snaplen < 0 or max_bytes < 0:
            raise ValueError("snap length and size limit must not be negative")
        if files < 1:
            raise ValueError("at least one capture file must be kept")
        if max_bytes and max_bytes < 4096:
            raise ValueError("a capture size limit below 4096 bytes leaves no room")
        self.snaplen = snaplen or 262144
        self.max_bytes = max_bytes
        self.files = files
        self.interface = interface
        self.packets = 0
        self.rotations = 0
        self.errors = 0
        self._size = 0
        self._file: BinaryIO | None = None
        self._open(append=False)

    # ---------------------------------------------------------- file handling

    def _header(self) -> bytes:
        if self.format == "pcap":
            return struct.pack("<IHHiIII", _PCAP_MAGIC_US, 2, 4, 0, 0, self.snaplen,
                               LINKTYPE_RAW)
        shb = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
        shb += _option(_SHB_USERAPPL, b"tcpstack") + _option(0, b"")
        idb = struct.pack("<HHI", LINKTYPE_RAW, 0, self.snaplen)
        idb += _option(_IF_NAME, self.interface.encode()) + _option(_IF_TSRESOL, b"\x09")
        idb += _option(0, b"")
        return _block(_SHB, shb) + _block(_IDB, idb)

    def _open(self, append: bool) -> None:
        exists = append and self.path.exists() and self.path.stat().st_size > 0
        # Captures hold other people's traffic: owner-only, like tcpdump's files.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if exists else
                                                             os.O_TRUNC), 0o600)
        self._file = os.fdopen(fd, "ab" if exists else "wb")
        if exists:
            self._size = self.path.stat().st_size
        else:
            header = self._header()
            self._file.write(header)
            self._size = len(header)
        self._file.flush()

    def reopen(self) -> None:
        """Close and open ``path`` again (SIGHUP): a moved-away file is left alone."""
        self.close()
        try:
            self._open(append=True)
        except OSError as e:
            self.errors += 1
            log.error("cannot reopen capture file %s: %s", self.path, e)

    def _rotate(self) -> None:
        self.close()
        try:
            if self.files > 1:
                for i in range(self.files - 1, 0, -1):
                    src = self.path if i == 1 else self.path.with_name(
                        f"{self.path.name}.{i - 1}")
                    if src.exists():
                        os.replace(src, self.path.with_name(f"{self.path.name}.{i}"))
            self._open(append=False)
            self.rotations += 1
        except OSError as e:
            self.errors += 1
            log.error("cannot rotate capture file %s: %s", self.path, e)

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None

    @property
    def closed(self) -> bool:
        return self._file is None

    # ------------------------------------------------------------- writing

    def write(self, packets: Iterable[BytesLike], direction: str, when: float) -> None:
        """Append ``packets`` (raw IP, no virtio-net header) captured at ``when``
        (seconds since the epoch) in ``direction`` (``in`` or ``out``)."""
        records = []
        if self.format == "pcap":
            sec = int(when)
            usec = int((when - sec) * 1e6)
            for pkt in packets:
                n = len(pkt)
                cap = min(n, self.snaplen)
                records.append(struct.pack("<IIII", sec, usec, cap, n) + bytes(pkt[:cap]))
        else:
            ns = int(when * 1e9)
            flags = _option(_EPB_FLAGS, struct.pack("<I", DIRECTION_FLAG[direction]))
            tail = flags + _option(0, b"")
            for pkt in packets:
                n = len(pkt)
                cap = min(n, self.snaplen)
                body = struct.pack("<IIIII", 0, ns >> 32, ns & 0xFFFFFFFF, cap, n)
                body += _pad4(bytes(pkt[:cap])) + tail
                records.append(_block(_EPB, body))
        self._append(records)

    def _append(self, records: list[bytes]) -> None:
        for record in records:
            if self.max_bytes and self._size + len(record) > self.max_bytes \
                    and self._size > len(self._header()):
                self._rotate()
            f = self._file
            if f is None:
                return
            try:
                f.write(record)
            except OSError as e:
                self.errors += 1
                if self.errors == 1:
                    log.error("capture file %s: %s", self.path, e)
                return
            self._size += len(record)
            self.packets += 1
        if self._file is not None:
            try:
                self._file.flush()
            except OSError:
                self.errors += 1


# --------------------------------------------------------- offloaded packets


def _finish_tcp_checksum(pkt: bytearray, ihl: int) -> None:
    """Complete the TCP checksum of ``pkt``, whose TCP header starts at ``ihl``."""
    seg = memoryview(pkt)[ihl:]
    _H.pack_into(seg, 16, 0)
    if pkt[0] >> 4 == 6:
        src = int.from_bytes(pkt[8:24], "big")
        dst = int.from_bytes(pkt[24:40], "big")
        pseudo = ck.pseudo_header_ipv6(src, dst, 6, len(seg))
    else:
        src = int.from_bytes(pkt[12:16], "big")
        dst = int.from_bytes(pkt[16:20], "big")
        pseudo = ck.pseudo_header_ipv4(src, dst, 6, len(seg))
    _H.pack_into(seg, 16, ck.finish(pseudo + ck.partial(seg)))


def _finish_ip_checksum(pkt: bytearray, ihl: int) -> None:
    _H.pack_into(pkt, 10, 0)
    _H.pack_into(pkt, 10, ck.checksum(memoryview(pkt)[:ihl]))


def wire_packets(packet: BytesLike, vnet: bool) -> list[BytesLike]:
    """What ``packet`` (as read from or written to the TUN) would be on a wire.

    Without ``vnet`` the packet is returned as it is. With it, the virtio-net
    header is stripped, a TSO super-segment (``GSO_TCPV4``, or ``GSO_TCPV6``
    with TCP directly after the IPv6 header, as the stack and the kernel send
    them) is cut into ``gso_size`` segments, and a checksum left to the kernel
    (``NEEDS_CSUM``) is completed; see the module docstring.
    """
    if not vnet:
        return [packet]
    if len(packet) <= virtio.HEADER_LEN:
        return []
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = \
        virtio.HDR.unpack_from(packet)
    ip = memoryview(packet)[virtio.HEADER_LEN:]
    gso = gso_type & ~virtio.GSO_ECN
    if len(ip) >= _IPV6_LEN + 20 and ip[0] >> 4 == 6 and ip[6] == 6:
        hlen, wanted = _IPV6_LEN, virtio.GSO_TCPV6
    elif len(ip) >= 40 and ip[0] >> 4 == 4 and ip[9] == 6:
        hlen, wanted = (ip[0] & 0x0F) * 4, virtio.GSO_TCPV4
        if len(ip) < hlen + 20:
            return [ip]
    else:
        return [ip]
    if gso == wanted and gso_size:
        return _segment(ip, hlen, gso_size)
    if flags & virtio.F_NEEDS_CSUM and csum_offset == 16 and csum_start == hlen:
        out = bytearray(ip)
        _finish_tcp_checksum(out, hlen)
        return [out]
    return [ip]


_IPV6_LEN: Final = 40


def _segment(ip: memoryview, ihl: int, mss: int) -> list[BytesLike]:
    """Cut a TCP super-segment (IPv4, or IPv6 with TCP at ``ihl`` = 40) into
    ``mss``-byte segments, checksummed."""
    v6 = ip[0] >> 4 == 6
    thl = (ip[ihl + 12] >> 4) * 4
    hlen = ihl + thl
    stated = _IPV6_LEN + _H.unpack_from(ip, 4)[0] if v6 else _H.unpack_from(ip, 2)[0]
    total = min(stated, len(ip))
    payload = ip[hlen:total]
    if len(payload) <= mss:
        out = bytearray(ip[:total])
        _finish_tcp_checksum(out, ihl)
        return [out]
    header = bytes(ip[:hlen])
    ident = 0 if v6 else _H.unpack_from(header, 4)[0]
    seq = _I.unpack_from(header, ihl + 4)[0]
    flags = header[ihl + 13]
    segments: list[BytesLike] = []
    count = (len(payload) + mss - 1) // mss
    for i in range(count):
        chunk = payload[i * mss:(i + 1) * mss]
        pkt = bytearray(header)
        pkt += chunk
        if v6:
            _H.pack_into(pkt, 4, len(pkt) - _IPV6_LEN)
        else:
            _H.pack_into(pkt, 2, len(pkt))
            _H.pack_into(pkt, 4, (ident + i) & 0xFFFF)
        _I.pack_into(pkt, ihl + 4, (seq + i * mss) & 0xFFFFFFFF)
        f = flags
        if i < count - 1:
            f &= ~0x09  # FIN and PSH only on the last segment
        if i > 0:
            f &= ~0x80  # CWR only on the first
        pkt[ihl + 13] = f
        if not v6:
            _finish_ip_checksum(pkt, ihl)
        _finish_tcp_checksum(pkt, ihl)
        segments.append(pkt)
    return segments


__all__ = ["FORMATS", "LINKTYPE_RAW", "PcapWriter", "default_format", "wire_packets"]
