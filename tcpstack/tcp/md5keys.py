"""TCP-MD5 keys per peer (RFC 2385 4.0: keys are configured per connection, by the
peer's address): an address or a prefix, the longest match wins, as Linux's
``TCP_MD5SIG_EXT`` with a prefix length.

A stack with keys signs every segment to a keyed peer -- SYNs, RSTs and the
SYN,ACKs of cookies included -- and drops, counted, any segment from a keyed peer
that is unsigned or wrongly signed, and any signed segment from a peer it has no
key for (RFC 2385 2.0, 4.0; Linux's TCPMD5NotFound, TCPMD5Failure,
TCPMD5Unexpected).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from tcpstack.wire.md5sig import MAX_KEY_LEN

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_LOW32 = 0xFFFFFFFF  # the stack's IPv6 addresses lie above it


def parse_peer(peer: str | int | Network) -> Network:
    """A peer as given by a user: an address (one host) or a prefix such as
    ``10.0.0.0/24``; an IPv4-mapped IPv6 address means its IPv4 address (the stack
    sees such peers as IPv4). Raises ValueError for anything else."""
    if isinstance(peer, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        net: Network = peer
    elif isinstance(peer, int):
        net = ipaddress.ip_network(
            ipaddress.IPv6Address(peer) if peer > _LOW32 else ipaddress.IPv4Address(peer))
    else:
        try:
            net = ipaddress.ip_network(peer.strip(), strict=True)
        except ValueError as e:
            raise ValueError(f"not an address or prefix: {peer!r} ({e})") from None
    if isinstance(net, ipaddress.IPv6Network):
        mapped = net.network_address.ipv4_mapped
        if mapped is not None and net.prefixlen >= 96:
            # ::ffff:a.b.c.d/n: the IPv4 prefix the stack sees such peers as.
            net = ipaddress.IPv4Network((mapped, net.prefixlen - 96))
        elif net.prefixlen == 128 and int(net.network_address) <= _LOW32:
            raise ValueError(f"{peer!r} is no address a peer of this stack can have")
    return net


def check_key(key: bytes | str) -> bytes:
    """A key as bytes (text is taken as UTF-8): 1 to 80 bytes, as Linux accepts."""
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if not 1 <= len(raw) <= MAX_KEY_LEN:
        raise ValueError(f"a TCP-MD5 key must be 1 to {MAX_KEY_LEN} bytes, not {len(raw)}")
    return raw


class Md5Keys:
    """The keys of a stack, by peer. ``bool(keys)`` is whether any is set."""

    __slots__ = ("_hosts", "_prefixes")

    def __init__(self, entries: Iterable[tuple[str | int | Network, bytes | str]] = ()) -> None:
        # Whole addresses (the common case): one dict lookup per segment.
        self._hosts: dict[int, bytes] = {}
        # Shorter prefixes, longest first: (IPv6, prefix length, network, key).
        self._prefixes: list[tuple[bool, int, int, bytes]] = []
        for peer, key in entries:
            self.set(peer, key)

    def __bool__(self) -> bool:
        return bool(self._hosts) or bool(self._prefixes)

    def __len__(self) -> int:
        return len(self._hosts) + len(self._prefixes)

    def set(self, peer: str | int | Network, key: bytes | str) -> None:
        """Sign with ``key`` to ``peer`` (an address or prefix), replacing its key."""
        net = parse_peer(peer)
        raw = check_key(key)
        v6 = net.version == 6
        if net.prefixlen == net.max_prefixlen:
            self._hosts[int(net.network_address)] = raw
            return
        entry = (v6, net.prefixlen, int(net.network_address), raw)
        rest = [p for p in self._prefixes if p[:3] != entry[:3]]
        rest.append(entry)
        rest.sort(key=lambda p: -p[1])
        self._prefixes = rest

    def remove(self, peer: str | int | Network) -> bool:
        """Forget the key of exactly ``peer``; whether there was one."""
        net = parse_peer(peer)
        if net.prefixlen == net.max_prefixlen:
            return self._hosts.pop(int(net.network_address), None) is not None
        before = len(self._prefixes)
        self._prefixes = [p for p in self._prefixes
                          if p[:3] != (net.version == 6, net.prefixlen,
                                       int(net.network_address))]
        return len(self._prefixes) != before

    def lookup(self, address: int) -> bytes | None:
        """The key for a peer's address (the stack's integer form), or None."""
        key = self._hosts.get(address)
        if key is not None or not self._prefixes:
            return key
        v6 = address > _LOW32
        bits = 128 if v6 else 32
        for is6, plen, net, k in self._prefixes:
            if is6 == v6 and address >> (bits - plen) == net >> (bits - plen):
                return k
        return None

    def peers(self) -> list[str]:
        """The peers that have keys (never the keys), for status displays."""
        hosts = [str(ipaddress.ip_address(a)) for a in self._hosts]
        nets = [str(ipaddress.IPv6Network((n, p)) if v6 else ipaddress.IPv4Network((n, p)))
                for v6, p, n, _ in self._prefixes]
        return hosts + nets


__all__ = ["Md5Keys", "check_key", "parse_peer"]
