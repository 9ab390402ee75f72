"""The virtio-net header that prefixes packets on a TUN opened with ``IFF_VNET_HDR``.

Layout (``struct virtio_net_hdr``, include/uapi/linux/virtio_net.h; fields are
little-endian on every architecture Linux runs TUN offloads on)::

    u8  flags        NEEDS_CSUM: the L4 checksum field holds only the pseudo-header
                     sum; the checksum over [csum_start, end) is still to be added
                     at csum_start + csum_offset. DATA_VALID: already verified.
    u8  gso_type     NONE, TCPV4, TCPV6 (| ECN): the packet is a super-segment
                     that the kernel cuts into gso_size-byte segments.
    le16 hdr_len     length of the IP + TCP headers
    le16 gso_size    payload bytes per segment (the MSS)
    le16 csum_start  offset of the L4 header
    le16 csum_offset offset of the checksum field within it (16 for TCP)
"""

from __future__ import annotations

import struct
from typing import Final

from tcpstack.wire.errors import BytesLike, Malformed

HEADER_LEN: Final = 10

F_NEEDS_CSUM: Final = 1
F_DATA_VALID: Final = 2

GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_UDP: Final = 3
GSO_TCPV6: Final = 4
GSO_ECN: Final = 0x80

HDR: Final = struct.Struct("<BBHHHH")

#: The header for a packet that needs nothing from the kernel.
PLAIN = bytes(HEADER_LEN)


def parse_flags(data: BytesLike) -> int:
    """Return the ``flags`` byte of the header at the start of ``data``."""
    if len(data) < HEADER_LEN:
        raise Malformed("vnet_truncated")
    return data[0]


def checksum_trusted(flags: int) -> bool:
    """True if the kernel vouches for (or will compute) the L4 checksum of this packet."""
    return bool(flags & (F_NEEDS_CSUM | F_DATA_VALID))
