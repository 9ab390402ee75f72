"""The plain IPv4 SYN, read and answered without building segment objects.

Under a SYN flood the stack answers every SYN with a SYN cookie (RFC 4987 3.6),
statelessly; what costs then is the per-packet work in Python, not the cookie. The
general path (:func:`tcpstack.wire.ipv4.parse_ipv4`, :func:`tcpstack.wire.tcp.parse_tcp`,
:func:`tcpstack.wire.tcp.emit_tcp`) builds a packet record, a segment, an options
record and an outgoing segment for each SYN; this module reads the one shape that
floods and ordinary clients send -- an IPv4 SYN without IP options, fragments or
data, whose TCP options are only MSS, window scale, SACK-permitted and timestamps
(RFC 9293 3.2, RFC 7323 2.2 and 3.2, RFC 2018 2) -- straight into integers, and
writes the SYN,ACK straight into a buffer.

:func:`read_plain_syn` answers None for anything else (a fragment, another flag,
the AE bit, data, another option, an option of an unexpected length, a repeated
option, a bad checksum, a port of zero): such packets take the general path, which
decides and counts them. So this module never decides what the general path would
decide differently: for every packet it either agrees with
:func:`tcpstack.wire.tcp.parse_options` or declines, and :func:`write_syn_ack`
writes the bytes :func:`tcpstack.wire.tcp.emit_tcp` writes for the same SYN,ACK
(the tests compare both, and the stack's output with and without this path).
"""

from __future__ import annotations

import struct
from typing import Final, cast

from tcpstack.wire import checksum as _ck
from tcpstack.wire import virtio as _vnet
from tcpstack.wire.ipv4 import HEADER_LEN as IPV4_HEADER_LEN
from tcpstack.wire.ipv4 import PROTO_TCP, header_checksum

#: The IPv4 header and the fixed TCP header of a SYN, read as 16- and 32-bit words:
#: version/IHL/TOS, total length, identification, flags/fragment offset, TTL/protocol,
#: header checksum, source, destination; ports, sequence and acknowledgment numbers,
#: data offset/flags, window, checksum, urgent pointer.
_SYN: Final = struct.Struct("!HHHHHHIIHHIIHHHH")
_Words = tuple[int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int]
_MSS_WORD: Final = 0x0204  # MSS option: kind 2, length 4
_TS_WORD: Final = 0x080A  # timestamps' kind and length (after SACK-permitted or NOP NOP)
_NOP_WS_WORD: Final = 0x0103  # NOP, then the window scale option's kind...
_WS_LEN: Final = 3  # ... and its length, in the high byte of the last word

#: The SYN,ACK written: the IPv4 header, the TCP header and the MSS option; then, if
#: present, SACK-permitted (or NOP NOP) and timestamps; then NOP and the window scale.
_SYN_ACK_HEAD: Final = struct.Struct("!BBHHHBBHIIHHIIBBHHHBBH")
_TS_OPTION: Final = struct.Struct("!BBBBII")
_WS_OPTION: Final = struct.Struct("!BBBB")

SYN_FLAG: Final = 0x02
SYN_ACK_FLAGS: Final = 0x12
_NOP: Final = 1
_MSS: Final = 2
_WSCALE: Final = 3
_SACK_PERMITTED: Final = 4
_TIMESTAMPS: Final = 8
_DF: Final = 0x4000
_FRAGMENT_BITS: Final = 0x3FFF  # MF and the fragment offset (DF may be set)
_LEN: Final = IPV4_HEADER_LEN + 20
_M: Final = 0xFFFF

#: What :func:`read_plain_syn` returns: source and destination address, source and
#: destination port, sequence number, the MSS option's value (0: none), the window
#: scale shift (-1: none; above 14 read as 14, RFC 7323 2.3), SACK-permitted (1 or
#: 0), the timestamp option's TSval (-1: none).
PlainSyn = tuple[int, int, int, int, int, int, int, int, int]


def read_plain_syn(packet: bytes, start: int, verify: bool) -> PlainSyn | None:
    """The fields of the plain IPv4 SYN at ``packet[start:]``, or None if it is not
    one (see the module docstring). ``verify``: check the TCP checksum (False when
    the kernel vouched for it through a virtio-net header); the IP header's is
    checked always, as by the general path. The checksums are summed from the
    words read (RFC 1071: the one's-complement sum is the words' sum modulo 0xFFFF),
    not from the bytes again."""
    n = len(packet) - start
    if n < _LEN:
        return None
    # Typed (a checked cast), so that the compiled build does native arithmetic on them.
    (vtos, total, ident, frag, ttl_proto, ipsum, src, dst, sport, dport, seq, ack,
     off_flags, window, tcpsum, urgent) = cast(_Words, _SYN.unpack_from(packet, start))
    if vtos >> 8 != 0x45 or ttl_proto & 0xFF != PROTO_TCP or off_flags & 0x0FFF != SYN_FLAG \
            or frag & _FRAGMENT_BITS or total != n or sport == 0 or dport == 0:
        return None
    doff = (off_flags >> 12) * 4
    if doff < 20 or IPV4_HEADER_LEN + doff != n:
        return None  # a bad data offset, or data: the general path
    if not _ck.verify(vtos + total + ident + frag + ttl_proto + ipsum + src + dst):
        return None  # the IP header checksum: the general path counts it
    end = start + n
    i = start + _LEN
    if verify:
        words = (src + dst + PROTO_TCP + doff + sport + dport + seq + ack + off_flags + window
                 + tcpsum + urgent)
        if i < end:
            words += int.from_bytes(packet[i:end], "big")
        if not _ck.verify(words):
            return None
    mss = 0
    wscale = -1
    sack = 0
    tsval = -1
    seen = 0
    while i < end:
        kind = packet[i]
        if kind == 0:
            break  # EOL: the rest is padding
        if kind == _NOP:
            i += 1
            continue
        if i + 1 >= end:
            return None
        length = packet[i + 1]
        if i + length > end:
            return None  # the option runs past the header
        if kind == _MSS and length == 4 and not seen & 1:
            mss = packet[i + 2] << 8 | packet[i + 3]
            seen |= 1
        elif kind == _WSCALE and length == 3 and not seen & 2:
            wscale = min(packet[i + 2], 14)
            seen |= 2
        elif kind == _SACK_PERMITTED and length == 2 and not seen & 4:
            sack = 1
            seen |= 4
        elif kind == _TIMESTAMPS and length == 10 and not seen & 8:
            tsval = int.from_bytes(packet[i + 2 : i + 6], "big")
            seen |= 8
        else:
            return None  # another option, another length, or a repeat
        i += length
    return src, dst, sport, dport, seq, mss, wscale, sack, tsval


def write_syn_ack(src: int, dst: int, sport: int, dport: int, seq: int, ack: int,
                  window: int, mss: int, wscale: int, sack: bool, tsval: int, tsecr: int,
                  ident: int, ttl: int, vnet: bool) -> bytearray:
    """The IPv4 SYN,ACK with these numbers, its options laid out as
    :func:`tcpstack.wire.tcp.encode_options` lays out a SYN's: MSS, then
    SACK-permitted and timestamps (or NOP NOP timestamps; ``tsval`` -1: none),
    then NOP and the window scale (``wscale`` -1: none); SACK-permitted is sent
    only beside timestamps, as SYN cookies allow. The IPv4 header is
    :func:`tcpstack.wire.ipv4.pack_ipv4_header`'s (DF, TOS 0). With ``vnet`` it is
    prefixed with a virtio-net header leaving the TCP checksum to the kernel. Both
    checksums are summed from the fields, not from the bytes written."""
    has_ts = tsval >= 0
    hlen = 24 + (12 if has_ts else 0) + (4 if wscale >= 0 else 0)
    total = IPV4_HEADER_LEN + hlen
    off_flags = (hlen // 4) << 12 | SYN_ACK_FLAGS
    pseudo = src + dst + PROTO_TCP + hlen
    first, second = (_SACK_PERMITTED, 2) if sack else (_NOP, _NOP)
    if vnet:
        tcpsum = pseudo % _M or _M  # the kernel finishes it (NEEDS_CSUM), as emit_tcp's
    else:
        words = (pseudo + sport + dport + seq + ack + off_flags + window + _MSS_WORD + mss)
        if has_ts:
            words += (first << 8 | second) + _TS_WORD + tsval + tsecr
        if wscale >= 0:
            words += _NOP_WS_WORD + (_WS_LEN << 8 | wscale)
        tcpsum = _ck.finish(words)
    base = _vnet.HEADER_LEN if vnet else 0
    out = bytearray(base + total)
    if vnet:
        _vnet.HDR.pack_into(out, 0, _vnet.F_NEEDS_CSUM, _vnet.GSO_NONE, total, 0,
                            IPV4_HEADER_LEN, 16)
    _SYN_ACK_HEAD.pack_into(
        out, base, 0x45, 0, total, ident & 0xFFFF, _DF, ttl, PROTO_TCP,
        header_checksum(total, ident, ttl, PROTO_TCP, src, dst), src, dst, sport, dport, seq,
        ack, off_flags >> 8, SYN_ACK_FLAGS, window, tcpsum, 0, _MSS, 4, mss)
    at = base + _LEN + 4
    if has_ts:
        _TS_OPTION.pack_into(out, at, first, second, _TIMESTAMPS, 10, tsval, tsecr)
        at += 12
    if wscale >= 0:
        _WS_OPTION.pack_into(out, at, _NOP, _WSCALE, _WS_LEN, wscale)
    return out


__all__ = ["SYN_ACK_FLAGS", "SYN_FLAG", "PlainSyn", "read_plain_syn", "write_syn_ack"]
