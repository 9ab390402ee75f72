"""TCP-AO (RFC 5925): master key tuples by peer, and one connection's TCP-AO state.

A master key tuple (MKT, RFC 5925 3.1) names its peer (an address or prefix), a
SendID (the KeyID we put in segments made with it), a RecvID (the KeyID the peer
puts in segments it makes with it), the master key, the algorithm (RFC 5926:
``hmac-sha1`` or ``aes-128-cmac``) and whether the MAC covers the other TCP
options. A connection uses the MKTs of its peer's longest matching prefix; their
SendIDs must differ, and their RecvIDs (3.1).

:class:`AoConn` is a connection's state (kept by the stack on ``Tcb.auth``):

* the MKT it sends with, switched when the peer's RNextKeyID names another of our
  SendIDs (key rollover, 7.5.2), and the RecvID it asks the peer to use next;
* the traffic keys (5.2), derived once per MKT and ISN pair from the addresses,
  ports and initial sequence numbers: a SYN's keys have the destination ISN zero;
* the sequence number extensions (6.2), one per direction, counting how often the
  32-bit sequence numbers wrapped since the ISN, so that a MAC is never valid
  again after 2**32 bytes.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field

from tcpstack.tcp.md5keys import Network, check_key, parse_peer
from tcpstack.tcp.seq import seq_gt
from tcpstack.wire import tcpao
from tcpstack.wire.tcp import ACK, SYN, AoSigning, TcpSegment

_LOW32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Mkt:
    """One master key tuple (RFC 5925 3.1). The key never appears in its repr."""

    peer: Network
    send_id: int
    recv_id: int
    key: bytes = field(repr=False)
    algorithm: str = tcpao.HMAC_SHA1
    include_options: bool = True

    @classmethod
    def make(cls, peer: str | int | Network, send_id: int, recv_id: int, key: bytes | str,
             algorithm: str = tcpao.HMAC_SHA1, include_options: bool = True) -> Mkt:
        """Validated: a peer address or prefix, IDs 0..255, a key of 1 to 80 bytes, a
        known algorithm; ValueError otherwise."""
        for name, value in (("SendID", send_id), ("RecvID", recv_id)):
            if not 0 <= value <= 255:
                raise ValueError(f"TCP-AO {name} must be 0..255, not {value}")
        if algorithm not in tcpao.ALGORITHMS:
            raise ValueError(f"TCP-AO algorithm must be one of {', '.join(tcpao.ALGORITHMS)}, "
                             f"not {algorithm!r}")
        if algorithm == tcpao.AES_128_CMAC:
            try:
                tcpao.require_aes()
            except RuntimeError as e:
                raise ValueError(str(e)) from None
        return cls(parse_peer(peer), send_id, recv_id, check_key(key), algorithm,
                   include_options)


def _matches(net: Network, address: int) -> bool:
    v6 = address > _LOW32
    if (net.version == 6) != v6:
        return False
    bits = 128 if v6 else 32
    shift = bits - net.prefixlen
    return address >> shift == int(net.network_address) >> shift


class AoKeys:
    """The MKTs of a stack. ``bool(keys)``: whether any is set."""

    __slots__ = ("_mkts",)

    def __init__(self, mkts: Iterable[Mkt] = ()) -> None:
        self._mkts: list[Mkt] = []
        for mkt in mkts:
            self.add(mkt)

    def __bool__(self) -> bool:
        return bool(self._mkts)

    def add(self, mkt: Mkt) -> None:
        """Add (or replace, by peer and SendID) an MKT. Raises ValueError if another
        MKT of the same peer has its RecvID (RFC 5925 3.1: IDs must be unique)."""
        rest = [m for m in self._mkts if not (m.peer == mkt.peer and m.send_id == mkt.send_id)]
        if any(m.peer == mkt.peer and m.recv_id == mkt.recv_id for m in rest):
            raise ValueError(f"TCP-AO: {mkt.peer} already has an MKT with RecvID {mkt.recv_id}")
        rest.append(mkt)
        self._mkts = rest

    def remove(self, peer: str | int | Network, send_id: int) -> bool:
        net = parse_peer(peer)
        before = len(self._mkts)
        self._mkts = [m for m in self._mkts if not (m.peer == net and m.send_id == send_id)]
        return len(self._mkts) != before

    def for_peer(self, address: int) -> tuple[Mkt, ...]:
        """The MKTs a connection with ``address`` uses: those of the longest matching
        prefix (several, for key rollover), in the order they were added."""
        best = -1
        for m in self._mkts:
            if m.peer.prefixlen > best and _matches(m.peer, address):
                best = m.peer.prefixlen
        if best < 0:
            return ()
        return tuple(m for m in self._mkts
                     if m.peer.prefixlen == best and _matches(m.peer, address))

    def peers(self) -> list[str]:
        """``peer (SendID/RecvID, algorithm)`` for each MKT; never a key."""
        return [f"{m.peer if m.peer.prefixlen != m.peer.max_prefixlen else m.peer.network_address}"
                f" ({m.send_id}/{m.recv_id}, {m.algorithm})" for m in self._mkts]


def _extension(high: int, sne: int, seq: int) -> tuple[int, int, int]:
    """RFC 5925 6.2: the SNE of ``seq``, given the highest sequence number seen so
    far (``high``) and its SNE: ``(sne of seq, new high, new sne)``."""
    if seq_gt(seq, high):
        if seq < high:  # past the wrap
            sne = (sne + 1) & _LOW32
        return sne, seq, sne
    if seq > high:  # before the wrap that ``high`` is past
        return (sne - 1) & _LOW32, high, sne
    return sne, high, sne


class AoConn:
    """One connection's TCP-AO state (see the module docstring)."""

    __slots__ = ("_keys", "current", "local", "mkts", "rcv_high", "rcv_sne", "remote",
                 "rnext", "snd_high", "snd_sne")

    def __init__(self, mkts: tuple[Mkt, ...], local: tuple[int, int],
                 remote: tuple[int, int], current: Mkt | None = None) -> None:
        assert mkts
        self.mkts = mkts
        self.local = local
        self.remote = remote
        self.current = current or mkts[0]
        #: The RecvID we ask the peer to send with (RNextKeyID, 7.5.2).
        self.rnext = self.current.recv_id
        self._keys: dict[tuple[int, bool, int, int], bytes] = {}
        self.snd_high: int | None = None
        self.snd_sne = 0
        self.rcv_high: int | None = None
        self.rcv_sne = 0

    @classmethod
    def for_syn(cls, mkts: tuple[Mkt, ...], local: tuple[int, int], remote: tuple[int, int],
                peer_option: tuple[int, int] | None) -> AoConn:
        """A passive open: send with the MKT whose RecvID is the SYN's KeyID, or with
        the one whose SendID the SYN's RNextKeyID names if we have it."""
        current = None
        if peer_option is not None:
            keyid, rnext = peer_option
            current = next((m for m in mkts if m.send_id == rnext), None) or \
                next((m for m in mkts if m.recv_id == keyid), None)
        return cls(mkts, local, remote, current)

    def update(self, mkts: tuple[Mkt, ...]) -> None:
        """The peer's MKTs changed (added or removed): keep sending with the current
        one while it is there, else with the first."""
        self.mkts = mkts
        self._keys.clear()
        send_id = self.current.send_id
        self.current = next((m for m in mkts if m.send_id == send_id), mkts[0])
        if not any(m.recv_id == self.rnext for m in mkts):
            self.rnext = self.current.recv_id

    def _key(self, mkt: Mkt, sending: bool, src_isn: int, dst_isn: int) -> bytes:
        cache = (id(mkt), sending, src_isn, dst_isn)  # mkts keeps each MKT alive
        key = self._keys.get(cache)
        if key is None:
            (sa, sp), (da, dp) = (self.local, self.remote) if sending else (self.remote,
                                                                            self.local)
            key = tcpao.traffic_key(mkt.algorithm, mkt.key,
                                    tcpao.context(sa, da, sp, dp, src_isn, dst_isn))
            if len(self._keys) >= 16:
                self._keys.clear()
            self._keys[cache] = key
        return key

    def signing(self, flags: int, seq: int, iss: int, irs: int) -> AoSigning:
        """How to sign our segment (5.1, 5.2): the SYN key for a SYN without ACK."""
        mkt = self.current
        if flags & SYN and not flags & ACK:
            key = self._key(mkt, True, iss, 0)
            sne = 0
        else:
            key = self._key(mkt, True, iss, irs)
            if self.snd_high is None:
                self.snd_high = iss
            sne, self.snd_high, self.snd_sne = _extension(self.snd_high, self.snd_sne, seq)
        return (mkt.send_id, self.rnext, mkt.algorithm, key, sne, mkt.include_options)

    def verify(self, src: int, dst: int, raw: memoryview, seg: TcpSegment, iss: int,
               irs: int) -> str | None:
        """Check a received segment (7.3): None if its MAC is right (the SNE state
        then moves on, and our sending MKT follows the peer's RNextKeyID), else the
        counter naming why not."""
        option = seg.options.ao
        if option is None:
            return "tcp_ao_missing"
        keyid, rnext = option
        mkt = next((m for m in self.mkts if m.recv_id == keyid), None)
        if mkt is None:
            return "tcp_ao_key_not_found"
        at = tcpao.find_option(raw)
        if raw[at + 1] != tcpao.OPTION_LEN:
            return "tcp_ao_failure"
        flags = seg.flags
        high, sne = self.rcv_high, self.rcv_sne
        if flags & SYN and not flags & ACK:
            key = self._key(mkt, False, seg.seq, 0)
            seg_sne = 0
        else:
            key = self._key(mkt, False, irs, iss)
            if high is None:
                high = irs
            seg_sne, high, sne = _extension(high, sne, seg.seq)
        parts = tcpao.mac_parts(src, dst, seg_sne, raw, mkt.include_options)
        expected = tcpao.mac(mkt.algorithm, key, parts)
        if not _equal(expected, raw[at + tcpao.HEADER_LEN:at + tcpao.OPTION_LEN]):
            return "tcp_ao_failure"
        if not (flags & SYN and not flags & ACK):
            self.rcv_high, self.rcv_sne = high, sne
        if rnext != self.current.send_id:
            wanted = next((m for m in self.mkts if m.send_id == rnext), None)
            if wanted is not None:
                self.current = wanted
        return None

    def info(self) -> dict[str, object]:
        """For ``tcp_info`` and the connection table: the IDs in use, never a key."""
        return {"keyid": self.current.send_id, "rnext": self.rnext,
                "algorithm": self.current.algorithm,
                "options_covered": self.current.include_options}


def _equal(a: bytes, b: memoryview) -> bool:
    return hmac.compare_digest(a, bytes(b))


__all__ = ["AoConn", "AoKeys", "Mkt"]
