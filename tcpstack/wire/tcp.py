"""TCP header and option parsing and building (RFC 9293 3.1, RFC 7323, RFC 2018).

:func:`parse_tcp` validates a received segment once and returns an immutable
:class:`TcpSegment`; after that no accessor can fail. The engine emits
:class:`OutSegment` values (a separate type: what we send is not what we parsed);
:func:`emit_tcp_ipv4` writes either kind, with its IPv4 header, into one buffer.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from tcpstack.wire import checksum as _ck
from tcpstack.wire import virtio as _vnet
from tcpstack.wire.errors import BytesLike, Malformed
from tcpstack.wire.ipv4 import HEADER_LEN as IPV4_HEADER_LEN
from tcpstack.wire.ipv4 import PROTO_TCP, pack_ipv4_header

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

HEADER_LEN = 20
MAX_OPTIONS_LEN = 40

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMPS = 8

_HDR = struct.Struct("!HHIIBBHHH")
_H = struct.Struct("!H")
_I = struct.Struct("!I")
_II = struct.Struct("!II")

_FLAG_NAMES = ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (ACK, "."), (URG, "U"),
               (ECE, "E"), (CWR, "W"))


def flags_str(flags: int) -> str:
    """tcpdump-style flag letters, e.g. ``S.`` for SYN+ACK."""
    return "".join(name for bit, name in _FLAG_NAMES if flags & bit) or "none"


class TcpOptions(NamedTuple):
    """The TCP options the stack understands; absent options are None / False / empty.

    Immutable: a parsed segment's options can be shared and kept without copying,
    and :data:`NO_OPTIONS` is a safe shared constant.
    """

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamps: tuple[int, int] | None = None

    def __repr__(self) -> str:
        parts = [f"{k}={v!r}" for k, v in zip(self._fields, self, strict=True) if v]
        return f"TcpOptions({', '.join(parts)})"


NO_OPTIONS = TcpOptions()


def _describe(kind: str, seg: TcpSegment | OutSegment) -> str:
    return (
        f"{kind}({seg.src_port}->{seg.dst_port} [{flags_str(seg.flags)}] "
        f"seq={seg.seq} ack={seg.ack} win={seg.window} len={len(seg.payload)}"
        f"{' ' + repr(seg.options) if seg.options != NO_OPTIONS else ''})"
    )


class TcpSegment(NamedTuple):
    """A received TCP segment, validated once by :func:`parse_tcp`. Immutable.

    ``payload`` is a zero-copy view into the received packet: whoever keeps the
    bytes beyond the processing of the packet must copy them. ``seg_len`` is the
    sequence space the segment occupies (payload plus one each for SYN and FIN).
    Tests also build these by hand to play the peer.
    """

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    options: TcpOptions = NO_OPTIONS
    payload: BytesLike = b""
    urgent: int = 0

    @property
    def seg_len(self) -> int:
        n = len(self.payload)
        flags = self.flags
        if flags & SYN:
            n += 1
        if flags & FIN:
            n += 1
        return n

    def __repr__(self) -> str:
        return _describe("TcpSegment", self)


class OutSegment(NamedTuple):
    """A segment the engine wants sent, as built by its one segment builder. Immutable.

    ``payload`` is usually a view into the connection's send buffer; the packet
    builder copies it (or hands it to a gathering write) before the buffer changes.
    """

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    options: TcpOptions = NO_OPTIONS
    payload: BytesLike = b""
    urgent: int = 0

    @property
    def seg_len(self) -> int:
        n = len(self.payload)
        flags = self.flags
        if flags & SYN:
            n += 1
        if flags & FIN:
            n += 1
        return n

    def __repr__(self) -> str:
        return _describe("OutSegment", self)


# The fast constructor of the tuples above (what NamedTuple's own __new__ ends in,
# without its Python-level argument handling): for the per-segment paths, with
# every field given in order.
new_tuple = tuple.__new__

#: Anything :func:`emit_tcp_ipv4` can write: what the engine emits, or a segment a
#: test or tool forges as a peer would send it.
AnySegment = TcpSegment | OutSegment


def parse_options(opts: memoryview) -> TcpOptions:
    """Parse the option bytes of a TCP header (RFC 9293 3.2).

    EOL ends the list; NOP is skipped; every other option must carry a length
    byte >= 2 that stays inside the header, else the segment is malformed.
    Unknown options are skipped by their length. A known option whose length
    is wrong for its kind is ignored, as Linux does.
    """
    mss: int | None = None
    wscale: int | None = None
    sack_permitted = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamps: tuple[int, int] | None = None
    i = 0
    n = len(opts)
    while i < n:
        kind = opts[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise Malformed("tcp_bad_option_length")
        length = opts[i + 1]
        if length < 2 or i + length > n:
            raise Malformed("tcp_bad_option_length")
        if kind == OPT_MSS:
            if length == 4:
                mss = _H.unpack_from(opts, i + 2)[0]
        elif kind == OPT_WSCALE:
            if length == 3:
                # RFC 7323 2.3: a shift count above 14 is treated as 14.
                wscale = min(opts[i + 2], 14)
        elif kind == OPT_SACK_PERMITTED:
            if length == 2:
                sack_permitted = True
        elif kind == OPT_SACK:
            if length >= 10 and (length - 2) % 8 == 0:
                sack_blocks = tuple(
                    _II.unpack_from(opts, j) for j in range(i + 2, i + length, 8)
                )
        elif kind == OPT_TIMESTAMPS:
            if length == 10:
                timestamps = _II.unpack_from(opts, i + 2)
        i += length
    return new_tuple(TcpOptions, (mss, wscale, sack_permitted, sack_blocks, timestamps))


def parse_tcp(data: BytesLike, src: int, dst: int, verify_checksum: bool = True) -> TcpSegment:
    """Parse and validate a TCP segment carried in IPv4 from ``src`` to ``dst``.

    Raises :class:`Malformed` with reasons ``tcp_truncated``, ``tcp_bad_data_offset``,
    ``tcp_bad_checksum`` or ``tcp_bad_option_length``.
    """
    buf = memoryview(data)
    n = len(buf)
    if n < HEADER_LEN:
        raise Malformed("tcp_truncated")
    sport, dport, seq, ack, off, flags, window, _csum, urgent = _HDR.unpack_from(buf)
    doff = (off >> 4) * 4
    if doff < HEADER_LEN or doff > n:
        raise Malformed("tcp_bad_data_offset")
    if verify_checksum:
        total = _ck.pseudo_header_ipv4(src, dst, PROTO_TCP, n) + _ck.partial(buf)
        if not _ck.verify(total):
            raise Malformed("tcp_bad_checksum")
    options = parse_options(buf[HEADER_LEN:doff]) if doff > HEADER_LEN else NO_OPTIONS
    return new_tuple(TcpSegment,
                     (sport, dport, seq, ack, flags, window, options, buf[doff:], urgent))


def encode_options(o: TcpOptions, syn: bool) -> bytes:
    """Encode options in the order Linux uses, padded to a multiple of four bytes.

    SYN: MSS, SACK-permitted + timestamps (or NOPs), window scale.
    Others: timestamps, then SACK blocks, each preceded by two NOPs.
    """
    out = bytearray()
    if syn:
        if o.mss is not None:
            out += struct.pack("!BBH", OPT_MSS, 4, o.mss)
        if o.sack_permitted and o.timestamps is not None:
            out += struct.pack("!BBBBII", OPT_SACK_PERMITTED, 2, OPT_TIMESTAMPS, 10,
                               *o.timestamps)
        elif o.timestamps is not None:
            out += struct.pack("!BBBBII", OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10, *o.timestamps)
        elif o.sack_permitted:
            out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2))
        if o.wscale is not None:
            out += bytes((OPT_NOP, OPT_WSCALE, 3, o.wscale))
    else:
        if o.timestamps is not None:
            out += struct.pack("!BBBBII", OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10, *o.timestamps)
        if o.sack_blocks:
            room = (MAX_OPTIONS_LEN - len(out) - 4) // 8
            blocks = o.sack_blocks[:room]
            out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(blocks)))
            for left, right in blocks:
                out += _II.pack(left, right)
    if len(out) % 4:
        out += bytes(4 - len(out) % 4)
    return bytes(out)


#: A packet to write: one buffer, or the header and payload for a gathering write.
OutPacket = bytearray | tuple[bytearray, BytesLike]

# Below this payload size copying into one buffer is cheaper than a second iovec.
SCATTER_MIN_PAYLOAD = 2048


def emit_tcp_ipv4(
    seg: AnySegment,
    src: int,
    dst: int,
    ident: int,
    ttl: int = 64,
    vnet: bool = False,
    gso_size: int = 0,
) -> bytearray:
    """Build a complete IPv4+TCP packet for ``seg`` in a single buffer.

    Without ``vnet`` both checksums are computed here. With ``vnet`` the packet is
    prefixed with a virtio-net header asking the kernel to finish the TCP checksum
    (``NEEDS_CSUM``: the field carries the pseudo-header sum only), and, if the
    payload exceeds ``gso_size``, to cut it into ``gso_size`` segments (TSO).
    """
    out = emit_tcp_ipv4_parts(seg, src, dst, ident, ttl, vnet, gso_size, scatter=False)
    assert isinstance(out, bytearray)
    return out


def emit_tcp_ipv4_parts(
    seg: AnySegment,
    src: int,
    dst: int,
    ident: int,
    ttl: int = 64,
    vnet: bool = False,
    gso_size: int = 0,
    scatter: bool = True,
) -> OutPacket:
    """Like :func:`emit_tcp_ipv4`, but a large payload is not copied: the result is
    ``(headers, payload)`` for a gathering write (``os.writev``), the payload being
    the segment's own buffer (a view into the send buffer)."""
    opts = b"" if seg.options is NO_OPTIONS else encode_options(seg.options, bool(seg.flags & SYN))
    hlen = HEADER_LEN + len(opts)
    payload = seg.payload
    plen = len(payload)
    tcp_len = hlen + plen
    base = _vnet.HEADER_LEN if vnet else 0
    split = scatter and plen >= SCATTER_MIN_PAYLOAD
    out = bytearray(base + IPV4_HEADER_LEN + (hlen if split else tcp_len))
    pack_ipv4_header(out, base, src, dst, PROTO_TCP, tcp_len, ident, ttl)
    t = base + IPV4_HEADER_LEN
    _HDR.pack_into(out, t, seg.src_port, seg.dst_port, seg.seq, seg.ack, (hlen // 4) << 4,
                   seg.flags, seg.window, 0, seg.urgent)
    if opts:
        out[t + HEADER_LEN : t + hlen] = opts
    if plen and not split:
        out[t + hlen :] = payload
    pseudo = _ck.pseudo_header_ipv4(src, dst, PROTO_TCP, tcp_len)
    if vnet:
        gso = _vnet.GSO_TCPV4 if gso_size and plen > gso_size else _vnet.GSO_NONE
        _vnet.HDR.pack_into(out, 0, _vnet.F_NEEDS_CSUM, gso, IPV4_HEADER_LEN + hlen,
                            gso_size if gso else 0, IPV4_HEADER_LEN, 16)
        # The field holds the folded, uncomplemented pseudo-header sum.
        _H.pack_into(out, t + 16, pseudo % 0xFFFF or 0xFFFF)
    else:
        # The TCP header length is a multiple of 4, so the payload's sum continues
        # the header's on a 16-bit boundary.
        total = pseudo + _ck.partial(memoryview(out)[t:])
        if split:
            total += _ck.partial(payload)
        _H.pack_into(out, t + 16, _ck.finish(total))
    if split:
        return (out, payload)
    return out
