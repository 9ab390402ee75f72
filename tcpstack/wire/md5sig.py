"""The TCP MD5 Signature Option (RFC 2385): its place in the header and its digest.

RFC 2385 2.0: kind 19, length 18, a 16-byte MD5 digest of, in this order,

1. the pseudo-header -- IPv4: source and destination address, a zero byte, the
   protocol number and the segment length (RFC 9293 3.1); IPv6 (as Linux signs
   it): source and destination address, the segment length and the next header
   as 32-bit values (RFC 8200 8.1);
2. the TCP header without options, its checksum taken as zero;
3. the segment data;
4. the key shared with the peer.

Options are not covered (RFC 2385 2.0: "options are not included"), so the
digest is computed before the checksum, and the checksum then covers the digest.
We put the option first, after two NOPs, as Linux does (it then takes 20 of the
40 option bytes: :data:`ALIGNED_LEN`).
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from tcpstack.wire.errors import BytesLike
from tcpstack.wire.optscan import find_option

OPT_MD5SIG = 19
OPTION_LEN = 18
DIGEST_LEN = 16
#: Bytes the option takes in a header: two NOPs, kind, length, the digest.
ALIGNED_LEN = 20
#: The longest key Linux accepts (TCP_MD5SIG_MAXKEYLEN); RFC 2385 sets no limit.
MAX_KEY_LEN = 80

_TCP_HEADER = 20
_PSEUDO4 = struct.Struct("!IIBBH")
_PSEUDO6_TAIL = struct.Struct("!II")
_LOW32 = 0xFFFFFFFF  # addresses above it are IPv6
_PROTO_TCP = 6


def _pseudo_header(src: int, dst: int, length: int) -> bytes:
    if src > _LOW32:
        return (src.to_bytes(16, "big") + dst.to_bytes(16, "big")
                + _PSEUDO6_TAIL.pack(length, _PROTO_TCP))
    return _PSEUDO4.pack(src, dst, 0, _PROTO_TCP, length)


def digest(src: int, dst: int, segment: BytesLike, header_len: int, key: bytes,
           payload: BytesLike | None = None) -> bytes:
    """The RFC 2385 digest of a TCP ``segment`` (header and, unless ``payload`` is
    given separately, its data) sent from ``src`` to ``dst`` with ``key``."""
    view = memoryview(segment)
    body = view[header_len:] if payload is None else memoryview(payload)
    length = header_len + len(body)
    h = hashlib.md5(_pseudo_header(src, dst, length), usedforsecurity=False)
    h.update(view[:16])
    h.update(b"\0\0")  # the checksum, taken as zero
    h.update(view[18:_TCP_HEADER])
    h.update(body)
    h.update(key)
    return h.digest()


def find_digest(segment: BytesLike) -> int:
    """The offset of the MD5 digest in a TCP segment's options, or -1 if it has no
    valid MD5 option. The segment must already have passed ``parse_tcp``."""
    at = find_option(segment, OPT_MD5SIG, OPTION_LEN, OPTION_LEN)
    return at + 2 if at >= 0 else -1


def verify(src: int, dst: int, segment: BytesLike, key: bytes) -> bool:
    """Whether ``segment`` (a whole TCP segment as received from ``src`` for ``dst``)
    carries a valid signature made with ``key``."""
    view = memoryview(segment)
    at = find_digest(view)
    if at < 0:
        return False
    expected = digest(src, dst, view, (view[12] >> 4) * 4, key)
    return hmac.compare_digest(expected, view[at:at + DIGEST_LEN])


__all__ = ["ALIGNED_LEN", "DIGEST_LEN", "MAX_KEY_LEN", "OPTION_LEN", "OPT_MD5SIG", "digest",
           "find_digest", "verify"]
