"""A device wrapper that counts and captures what crosses the TUN.

:class:`TapDevice` wraps a packet device (the TUN, or anything shaped like
:class:`tcpstack.aio.devices.PacketDevice`), as
:class:`tcpstack.link.impair.ImpairedDevice` does, and sees exactly the packets
read from it and written to it:

* it counts packets and bytes in each direction (for the metrics);
* with a :class:`~tcpstack.observe.pcap.PcapWriter` it writes them to a capture
  file, as they would be on a wire (see :func:`~tcpstack.observe.pcap.wire_packets`).

Only packets the device took are captured as sent. Put it directly around the
TUN (under an impairment), so that the capture shows what crossed the interface.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from tcpstack.observe.pcap import PcapWriter, wire_packets
from tcpstack.wire import virtio
from tcpstack.wire.errors import BytesLike
from tcpstack.wire.tcp import OutPacket


class _Device(Protocol):
    def fileno(self) -> int: ...

    def read_batch(self, max_packets: int = ..., bufsize: int = ...) -> list[bytes]: ...

    def write_batch(self, packets: Iterable[OutPacket]) -> int: ...


class TapDevice:
    """Counts (``packets_in``, ``bytes_in``, ``packets_out``, ``bytes_out``) and
    optionally captures the traffic of ``device``.

    ``vnet`` says the device frames packets with a virtio-net header (then the
    counted bytes exclude it and captures are re-segmented). ``clock`` gives
    wall-clock seconds for capture timestamps. Other attributes are the wrapped
    device's.
    """

    def __init__(self, device: _Device, *, vnet: bool = False,
                 writer: PcapWriter | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.device = device
        self.vnet = vnet
        self.writer = writer
        self.clock = clock
        self.packets_in = 0
        self.bytes_in = 0
        self.packets_out = 0
        self.bytes_out = 0

    def __getattr__(self, name: str) -> Any:
        if name == "device":
            raise AttributeError(name)
        return getattr(self.device, name)

    def fileno(self) -> int:
        return self.device.fileno()

    def read_batch(self, max_packets: int = 256, bufsize: int = 65536) -> list[bytes]:
        packets = self.device.read_batch(max_packets, bufsize)
        if packets:
            self._account("in", packets)
        return packets

    def write_batch(self, packets: Iterable[OutPacket]) -> int:
        batch = packets if isinstance(packets, Sequence) else list(packets)
        written = self.device.write_batch(batch)
        if written:
            self._account("out", batch[:written])
        return written

    def _account(self, direction: str, packets: Sequence[OutPacket | bytes]) -> None:
        header = virtio.HEADER_LEN if self.vnet else 0
        nbytes = 0
        for pkt in packets:
            if isinstance(pkt, tuple):
                nbytes += len(pkt[0]) + len(pkt[1])
            else:
                nbytes += len(pkt)
        nbytes -= header * len(packets)
        if direction == "in":
            self.packets_in += len(packets)
            self.bytes_in += nbytes
        else:
            self.packets_out += len(packets)
            self.bytes_out += nbytes
        writer = self.writer
        if writer is not None and not writer.closed:
            wire: list[BytesLike] = []
            for pkt in packets:
                data: BytesLike = bytes(pkt[0]) + bytes(pkt[1]) if isinstance(pkt, tuple) \
                    else pkt
                wire += wire_packets(data, self.vnet)
            writer.write(wire, direction, self.clock())


__all__ = ["TapDevice"]
