"""TCP header and option parsing and building (RFC 9293 3.1, RFC 7323, RFC 2018).

:func:`parse_tcp` validates a received segment once and returns an immutable
:class:`TcpSegment`; after that no accessor can fail. The engine emits
:class:`OutSegment` values (a separate type: what we send is not what we parsed);
:func:`emit_tcp` writes either kind, with its IP header, into one buffer.

Addresses are integers of either family: IPv6 ones lie above ``0xFFFFFFFF``
(:func:`tcpstack.wire.ipv6.is_ipv6`), which selects the IPv6 header and
pseudo-header (RFC 8200 8.1) where IPv4's would be used.
"""

from __future__ import annotations

import struct
from typing import Final

from tcpstack.wire import checksum as _ck
from tcpstack.wire import md5sig as _md5
from tcpstack.wire import tcpao as _ao
from tcpstack.wire import virtio as _vnet
from tcpstack.wire.errors import BytesLike, Malformed
from tcpstack.wire.ipv4 import HEADER_LEN as IPV4_HEADER_LEN
from tcpstack.wire.ipv4 import PROTO_TCP, pack_ipv4_header
from tcpstack.wire.ipv6 import HEADER_LEN as IPV6_HEADER_LEN
from tcpstack.wire.ipv6 import pack_ipv6_header
from tcpstack.wire.records import (
    ACK,
    AE,
    CE,
    CWR,
    ECE,
    ECT_0,
    ECT_1,
    FIN,
    MD5_ONLY,
    NO_OPTIONS,
    NOT_ECT,
    PSH,
    RST,
    SYN,
    URG,
    AnySegment,
    OutSegment,
    TcpOptions,
    TcpSegment,
    flags_str,
    new_tuple,
)

HEADER_LEN: Final = 20
MAX_OPTIONS_LEN: Final = 40

OPT_EOL: Final = 0
OPT_NOP: Final = 1
OPT_MSS: Final = 2
OPT_WSCALE: Final = 3
OPT_SACK_PERMITTED: Final = 4
OPT_SACK: Final = 5
OPT_TIMESTAMPS: Final = 8
OPT_MD5SIG: Final = _md5.OPT_MD5SIG
OPT_AO: Final = 29  # RFC 5925 (tcpstack.wire.tcpao)
OPT_FASTOPEN: Final = 34  # RFC 7413 4.1.1
OPT_ACCECN0: Final = 172  # RFC 9768 3.2.3: fields EE0B, ECEB, EE1B
OPT_ACCECN1: Final = 174  # the same fields in the order EE1B, ECEB, EE0B
#: A Fast Open cookie is 4 to 16 bytes, of even length (RFC 7413 4.1.1).
TFO_COOKIE_MIN: Final = 4
TFO_COOKIE_MAX: Final = 16

_HDR: Final = struct.Struct("!HHIIBBHHH")
_H: Final = struct.Struct("!H")
_I: Final = struct.Struct("!I")
_II: Final = struct.Struct("!II")
_LOW32: Final = 0xFFFFFFFF  # addresses above it are IPv6

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
    md5 = False
    ao: tuple[int, int] | None = None
    tfo: bytes | None = None
    accecn: tuple[int | None, int | None, int | None] | None = None
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
        elif kind == OPT_MD5SIG:
            if length == _md5.OPTION_LEN:
                md5 = True  # RFC 2385: the stack checks the digest
        elif kind == OPT_AO:
            if ao is not None:
                raise Malformed("tcp_ao_duplicate")  # which one would be checked?
            if length >= 4:
                ao = (opts[i + 2], opts[i + 3])  # RFC 5925 2.2: the stack checks the MAC
        elif kind == OPT_FASTOPEN:
            # RFC 7413 4.1.1: length 2 asks for a cookie; else the cookie, 4 to 16
            # bytes of even length -- another length is ignored, as Linux does.
            n_cookie = length - 2
            if n_cookie == 0 or (TFO_COOKIE_MIN <= n_cookie <= TFO_COOKIE_MAX
                                 and not n_cookie & 1):
                tfo = bytes(opts[i + 2 : i + length])
        elif kind in (OPT_ACCECN0, OPT_ACCECN1):
            # RFC 9768 3.2.3.1: 0 to 3 fields of 24 bits; another length is ignored.
            if (length - 2) % 3 == 0 and length <= 11:
                f: list[int | None] = [None, None, None]
                for k, j in enumerate(range(i + 2, i + length, 3)):
                    f[k] = (opts[j] << 16) | (opts[j + 1] << 8) | opts[j + 2]
                accecn = (f[0], f[1], f[2]) if kind == OPT_ACCECN0 else (f[2], f[1], f[0])
        i += length
    return new_tuple(TcpOptions, (mss, wscale, sack_permitted, sack_blocks, timestamps, md5,
                                  ao, tfo, accecn))


def parse_tcp(data: BytesLike, src: int, dst: int, verify_checksum: bool = True,
              ecn: int = 0) -> TcpSegment:
    """Parse and validate a TCP segment carried in IPv4 or IPv6 from ``src`` to ``dst``
    (``ecn``: the ECN field of the IP header it came in, RFC 3168 5).

    Raises :class:`Malformed` with reasons ``tcp_truncated``, ``tcp_bad_data_offset``,
    ``tcp_bad_checksum`` or ``tcp_bad_option_length``.
    """
    buf = memoryview(data)
    n = len(buf)
    if n < HEADER_LEN:
        raise Malformed("tcp_truncated")
    sport, dport, seq, ack, off, flags, window, _csum, urgent = _HDR.unpack_from(buf)
    doff = (off >> 4) * 4
    if off & 1:
        flags |= AE  # RFC 9768 2: the AE bit sits in the data-offset byte
    if doff < HEADER_LEN or doff > n:
        raise Malformed("tcp_bad_data_offset")
    if verify_checksum:
        pseudo = _ck.pseudo_header_ipv6(src, dst, PROTO_TCP, n) if src > _LOW32 \
            else _ck.pseudo_header_ipv4(src, dst, PROTO_TCP, n)
        total = pseudo + _ck.partial(buf)
        if not _ck.verify(total):
            raise Malformed("tcp_bad_checksum")
    options = parse_options(buf[HEADER_LEN:doff]) if doff > HEADER_LEN else NO_OPTIONS
    return new_tuple(TcpSegment,
                     (sport, dport, seq, ack, flags, window, options, buf[doff:], urgent,
                      ecn))


#: How to sign a segment with TCP-AO (RFC 5925): KeyID, RNextKeyID, algorithm,
#: traffic key, SNE, whether the MAC covers the other options.
AoSigning = tuple[int, int, str, bytes, int, bool]


def encode_options(o: TcpOptions, syn: bool, md5: bool = False,
                   ao: tuple[int, int] | None = None) -> bytes:
    """Encode options in the order Linux uses, padded to a multiple of four bytes.

    With ``md5`` first two NOPs and an MD5 signature option (RFC 2385) whose digest
    is left zero for :func:`emit_tcp_parts` to fill in. Then, in a SYN: MSS,
    SACK-permitted + timestamps (or NOPs), window scale, a Fast Open cookie or request
    (RFC 7413) if it fits, Accurate ECN's option (RFC 9768 3.2.3) with the fields
    that fit; in others: timestamps, then SACK blocks (as many as the 40 option
    bytes leave room for), after two NOPs, then Accurate ECN's option if at least
    one field fits.
    """
    out = bytearray()
    if md5:
        out += bytes((OPT_NOP, OPT_NOP, OPT_MD5SIG, _md5.OPTION_LEN)) + bytes(_md5.DIGEST_LEN)
    elif ao is not None:
        # RFC 5925 2.2: KeyID, RNextKeyID, the MAC (written by emit_tcp_parts).
        out += bytes((OPT_AO, _ao.OPTION_LEN, ao[0], ao[1])) + bytes(_ao.MAC_LEN)
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
        if o.tfo is not None and MAX_OPTIONS_LEN - len(out) >= 4 + len(o.tfo):
            # RFC 7413 4.1.1, last (as Linux): the cookie or an empty request,
            # padded with NOPs to a word.
            out += bytes((OPT_FASTOPEN, 2 + len(o.tfo))) + o.tfo
            if len(out) % 4:
                out += bytes((OPT_NOP,)) * (4 - len(out) % 4)
        if o.accecn is not None:
            out += _accecn_option(o.accecn, MAX_OPTIONS_LEN - len(out), 0)
    else:
        if o.timestamps is not None:
            out += struct.pack("!BBBBII", OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10, *o.timestamps)
        if o.sack_blocks:
            room = (MAX_OPTIONS_LEN - len(out) - 4) // 8
            blocks = o.sack_blocks[:room]
            if blocks:
                out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(blocks)))
                for left, right in blocks:
                    out += _II.pack(left, right)
        if o.accecn is not None:
            out += _accecn_option(o.accecn, MAX_OPTIONS_LEN - len(out), 1)
    if len(out) % 4:
        out += bytes(4 - len(out) % 4)
    return bytes(out)


def _accecn_option(fields: tuple[int | None, int | None, int | None], room: int,
                   least: int) -> bytes:
    """Accurate ECN's option (RFC 9768 3.2.3) as kind 172 (EE0B, ECEB, EE1B), with as
    many of the leading given fields as fit in ``room`` bytes once NOPs (in front)
    pad it to a word; nothing if fewer than ``least`` fields fit."""
    n = 0
    while n < 3 and fields[n] is not None and _word(2 + 3 * (n + 1)) <= room:
        n += 1
    if n < least or _word(2 + 3 * n) > room:
        return b""
    size = 2 + 3 * n
    out = bytearray((OPT_NOP,) * (_word(size) - size))
    out += bytes((OPT_ACCECN0, size))
    for v in fields[:n]:
        assert v is not None
        out += (v & 0xFFFFFF).to_bytes(3, "big")
    return bytes(out)


def _word(n: int) -> int:
    """``n`` rounded up to a multiple of four."""
    return (n + 3) & ~3


#: A packet to write: one buffer, or the header and payload for a gathering write.
OutPacket = bytearray | tuple[bytearray, BytesLike]

# Below this payload size copying into one buffer is cheaper than a second iovec.
SCATTER_MIN_PAYLOAD: Final = 2048


def emit_tcp(
    seg: AnySegment,
    src: int,
    dst: int,
    ident: int,
    ttl: int = 64,
    vnet: bool = False,
    gso_size: int = 0,
    md5_key: bytes | None = None,
    ao: AoSigning | None = None,
) -> bytearray:
    """Build a complete IP+TCP packet for ``seg`` in a single buffer: IPv4 (DF set,
    identification ``ident``) or IPv6 (hop limit ``ttl``) after the addresses' family.

    Without ``vnet`` the checksums are computed here. With ``vnet`` the packet is
    prefixed with a virtio-net header asking the kernel to finish the TCP checksum
    (``NEEDS_CSUM``: the field carries the pseudo-header sum only), and, if the
    payload exceeds ``gso_size``, to cut it into ``gso_size`` segments (TSO).

    With ``md5_key`` the segment is signed (RFC 2385, :mod:`tcpstack.wire.md5sig`),
    with ``ao`` it carries TCP-AO (RFC 5925, :mod:`tcpstack.wire.tcpao`); a signed
    segment is not cut by TSO (each piece needs its own MAC).
    """
    out = emit_tcp_parts(seg, src, dst, ident, ttl, vnet, gso_size, scatter=False,
                         md5_key=md5_key, ao=ao)
    assert isinstance(out, bytearray)
    return out


def emit_tcp_parts(
    seg: AnySegment,
    src: int,
    dst: int,
    ident: int,
    ttl: int = 64,
    vnet: bool = False,
    gso_size: int = 0,
    scatter: bool = True,
    md5_key: bytes | None = None,
    ao: AoSigning | None = None,
) -> OutPacket:
    """Like :func:`emit_tcp`, but a large payload is not copied: the result is
    ``(headers, payload)`` for a gathering write (``os.writev``), the payload being
    the segment's own buffer (a view into the send buffer)."""
    if md5_key is not None:
        opts = encode_options(seg.options, bool(seg.flags & SYN), True)
        gso_size = 0  # every segment on the wire needs its own digest
    elif ao is not None:
        opts = encode_options(seg.options, bool(seg.flags & SYN), False, (ao[0], ao[1]))
        gso_size = 0
    elif seg.options is NO_OPTIONS or seg.options is MD5_ONLY:
        opts = b""
    else:
        opts = encode_options(seg.options, bool(seg.flags & SYN))
    hlen = HEADER_LEN + len(opts)
    payload = seg.payload
    plen = len(payload)
    tcp_len = hlen + plen
    base = _vnet.HEADER_LEN if vnet else 0
    split = scatter and plen >= SCATTER_MIN_PAYLOAD
    ipv6 = src > _LOW32
    iph = IPV6_HEADER_LEN if ipv6 else IPV4_HEADER_LEN
    out = bytearray(base + iph + (hlen if split else tcp_len))
    if ipv6:
        pack_ipv6_header(out, base, src, dst, PROTO_TCP, tcp_len, ttl, seg.ecn)
        pseudo = _ck.pseudo_header_ipv6(src, dst, PROTO_TCP, tcp_len)
    else:
        pack_ipv4_header(out, base, src, dst, PROTO_TCP, tcp_len, ident, ttl, seg.ecn)
        pseudo = _ck.pseudo_header_ipv4(src, dst, PROTO_TCP, tcp_len)
    t = base + iph
    flags = seg.flags
    _HDR.pack_into(out, t, seg.src_port, seg.dst_port, seg.seq, seg.ack,
                   (hlen // 4) << 4 | (flags >> 8 & 1), flags & 0xFF, seg.window, 0,
                   seg.urgent)
    if opts:
        out[t + HEADER_LEN : t + hlen] = opts
    if plen and not split:
        out[t + hlen :] = payload
    if md5_key is not None:
        # The digest first: it takes the checksum as zero, and the checksum covers it.
        at = t + HEADER_LEN + 4
        out[at : at + _md5.DIGEST_LEN] = _md5.digest(
            src, dst, memoryview(out)[t : t + hlen], hlen, md5_key, payload)
    elif ao is not None:
        at = t + HEADER_LEN + _ao.HEADER_LEN
        parts = _ao.mac_parts(src, dst, ao[4], memoryview(out)[t : t + hlen], ao[5], payload)
        out[at : at + _ao.MAC_LEN] = _ao.mac(ao[2], ao[3], parts)
    if vnet:
        if gso_size and plen > gso_size:
            gso = _vnet.GSO_TCPV6 if ipv6 else _vnet.GSO_TCPV4
            if seg.flags & CWR:
                gso |= _vnet.GSO_ECN  # CWR on the first piece only (Linux's SKB_GSO_TCP_ECN)
        else:
            gso = _vnet.GSO_NONE
        _vnet.HDR.pack_into(out, 0, _vnet.F_NEEDS_CSUM, gso, iph + hlen,
                            gso_size if gso else 0, iph, 16)
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


#: The IPv4 names of :func:`emit_tcp` and :func:`emit_tcp_parts` (which take
#: addresses of either family).
emit_tcp_ipv4 = emit_tcp
emit_tcp_ipv4_parts = emit_tcp_parts


__all__ = [
    "ACK",
    "AE",
    "CE",
    "CWR",
    "ECE",
    "ECT_0",
    "ECT_1",
    "FIN",
    "HEADER_LEN",
    "MAX_OPTIONS_LEN",
    "MD5_ONLY",
    "NOT_ECT",
    "NO_OPTIONS",
    "PSH",
    "RST",
    "SCATTER_MIN_PAYLOAD",
    "SYN",
    "URG",
    "AnySegment",
    "AoSigning",
    "OutPacket",
    "OutSegment",
    "TcpOptions",
    "TcpSegment",
    "emit_tcp",
    "emit_tcp_ipv4",
    "emit_tcp_ipv4_parts",
    "emit_tcp_parts",
    "encode_options",
    "flags_str",
    "new_tuple",
    "parse_options",
    "parse_tcp",
]
