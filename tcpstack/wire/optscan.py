"""Finding one option in a raw TCP header, for the signature options (TCP-MD5,
TCP-AO) whose bytes must be located in the segment itself, not in its parsed
:class:`~tcpstack.wire.records.TcpOptions`."""

from __future__ import annotations

from tcpstack.wire.errors import BytesLike

_TCP_HEADER = 20


def find_option(segment: BytesLike, kind: int, min_len: int, max_len: int) -> int:
    """Offset of the first option ``kind`` whose length is within ``min_len..max_len``
    in a TCP segment that already passed ``parse_tcp`` (sane data offset and option
    lengths), or -1. EOL ends the list, NOP is skipped (RFC 9293 3.2)."""
    view = memoryview(segment)
    end = (view[12] >> 4) * 4
    i = _TCP_HEADER
    while i < end:
        k = view[i]
        if k == 0:
            break
        if k == 1:
            i += 1
            continue
        if i + 1 >= end:
            break
        length = view[i + 1]
        if length < 2:
            break
        if k == kind and min_len <= length <= max_len and i + length <= end:
            return i
        i += length
    return -1


__all__ = ["find_option"]
