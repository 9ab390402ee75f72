"""The wire layer's immutable records: parsed headers and the segments the engine emits.

They are ``NamedTuple`` values -- immutable, cheap to build (:data:`new_tuple` skips
the keyword handling on the per-packet paths), and shareable (:data:`NO_OPTIONS`).
This module holds only their definitions, which is also why it stays plain Python
when the rest of the wire layer and the engine are compiled (mypyc builds
NamedTuple classes poorly); the parsers and builders live in
:mod:`tcpstack.wire.tcp` and :mod:`tcpstack.wire.ipv4`.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from tcpstack.wire.errors import BytesLike

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80
#: Accurate ECN's flag (RFC 9768 2: the former NS bit, the low bit of the header's
#: data-offset byte); with CWR and ECE it forms the 3-bit ACE field.
AE: Final = 0x100

#: The ECN field of the IP header (RFC 3168 5): the two low bits of the IPv4 TOS
#: byte and of the IPv6 traffic class.
NOT_ECT: Final = 0
ECT_1: Final = 1
ECT_0: Final = 2
CE: Final = 3

_FLAG_NAMES = ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (ACK, "."), (URG, "U"),
               (ECE, "E"), (CWR, "W"), (AE, "e"))


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
    #: The segment carries (received) or is to carry (sent) a TCP-MD5 signature
    #: (RFC 2385); the digest itself is checked and written by the stack, which
    #: holds the keys.
    md5: bool = False
    #: The TCP-AO option (RFC 5925): its (KeyID, RNextKeyID), received or to send
    #: (the stack writes the option and its MAC, holding the keys).
    ao: tuple[int, int] | None = None
    #: TCP Fast Open (RFC 7413 4.1.1, option kind 34): ``b""`` asks for a cookie, a
    #: non-empty value is the cookie; None: the segment carries no such option.
    tfo: bytes | None = None
    #: Accurate ECN's option (RFC 9768 3.2.3, kinds 172 and 174): its 24-bit fields
    #: as on the wire (with their initial offsets), always in the order (EE0B, ECEB,
    #: EE1B) whichever kind carried them; None for a field the option left out. An
    #: empty option is ``(None, None, None)``; None: the segment carries none.
    accecn: tuple[int | None, int | None, int | None] | None = None

    def __repr__(self) -> str:
        parts = [f"{k}={v!r}" for k, v in zip(self._fields, self, strict=True)
                 if v or (k in ("tfo", "accecn") and v is not None)]
        return f"TcpOptions({', '.join(parts)})"


NO_OPTIONS = TcpOptions()
#: The options of a signed segment that carries no other.
MD5_ONLY = TcpOptions(md5=True)


def _describe(kind: str, seg: TcpSegment | OutSegment) -> str:
    return (
        f"{kind}({seg.src_port}->{seg.dst_port} [{flags_str(seg.flags)}] "
        f"seq={seg.seq} ack={seg.ack} win={seg.window} len={len(seg.payload)}"
        f"{' ' + repr(seg.options) if seg.options != NO_OPTIONS else ''})"
    )


def sequence_length(flags: int, payload: BytesLike) -> int:
    """SEG.LEN (RFC 9293 3.4): the payload's length plus one each for SYN and FIN.

    One function for both segment types: a NamedTuple cannot share a property
    through a base class (and mypyc compiles these tuples as plain classes)."""
    n = len(payload)
    if flags & SYN:
        n += 1
    if flags & FIN:
        n += 1
    return n


class TcpSegment(NamedTuple):
    """A received TCP segment, validated once by :func:`parse_tcp`. Immutable.

    ``payload`` is a zero-copy view into the received packet: whoever keeps the
    bytes beyond the processing of the packet must copy them. ``seg_len`` is the
    sequence space the segment occupies (payload plus one each for SYN and FIN).
    Tests also build these by hand to play the peer. ``ecn`` is the ECN field of
    the IP header it arrived in (RFC 3168 5: ``CE`` if a router marked it).
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
    ecn: int = NOT_ECT

    @property
    def seg_len(self) -> int:
        return sequence_length(self.flags, self.payload)

    def __repr__(self) -> str:
        return _describe("TcpSegment", self)


class OutSegment(NamedTuple):
    """A segment the engine wants sent, as built by its one segment builder. Immutable.

    ``payload`` is usually a view into the connection's send buffer; the packet
    builder copies it (or hands it to a gathering write) before the buffer changes.
    ``ecn`` is the ECN field its IP header is to carry (``ECT_0`` on new data of a
    connection that agreed to ECN, RFC 3168 6.1.5).
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
    ecn: int = NOT_ECT

    @property
    def seg_len(self) -> int:
        return sequence_length(self.flags, self.payload)

    def __repr__(self) -> str:
        return _describe("OutSegment", self)


#: The fast constructor of the tuples here (what NamedTuple's own __new__ ends in,
#: without its Python-level argument handling): for the per-segment paths, with
#: every field given in order.
new_tuple = tuple.__new__

#: Anything :func:`emit_tcp_ipv4` can write: what the engine emits, or a segment a
#: test or tool forges as a peer would send it.
AnySegment = TcpSegment | OutSegment


class IPv4Packet(NamedTuple):
    """A parsed, validated IPv4 packet (immutable). ``payload`` is a view into the
    received buffer."""

    src: int
    dst: int
    proto: int
    ttl: int
    tos: int
    ident: int
    header_len: int
    payload: memoryview


class IPv6Packet(NamedTuple):
    """A parsed IPv6 fixed header (immutable). Addresses are 128-bit integers;
    ``next_header`` is the fixed header's (the first extension header, or the
    upper-layer protocol); ``packet`` is a view of the whole packet, trimmed to its
    payload length, against which the extension headers are walked
    (:func:`tcpstack.wire.ipv6.walk_headers`)."""

    src: int
    dst: int
    next_header: int
    hop_limit: int
    traffic_class: int
    flow_label: int
    packet: memoryview
