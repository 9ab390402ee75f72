"""The TCP Authentication Option (RFC 5925) and its algorithms (RFC 5926).

The option (kind 29) carries a KeyID (the SendID of the master key tuple it was
made with), an RNextKeyID (the RecvID its sender wants used next, for key
rollover) and a MAC. Keys are derived per connection and direction from a master
key (RFC 5925 5.2) -- the "traffic keys", over the connection's addresses, ports
and initial sequence numbers -- and the MAC covers (5.1):

1. the sequence number extension (SNE, 32 bits: the high half of a 64-bit
   sequence number);
2. the pseudo-header (IPv4: RFC 9293 3.1; IPv6: RFC 8200 8.1);
3. the TCP header with its checksum zero, and its options -- all of them, or, when
   the key tuple says options are excluded, only the TCP-AO option -- with the
   MAC field zero;
4. the data.

Algorithms (RFC 5926): KDF_HMAC_SHA1 with HMAC-SHA-1-96, and KDF_AES_128_CMAC
with AES-128-CMAC-96 (RFC 4493's CMAC, from the ``cryptography`` package,
imported only when such a key is used). Checked against RFC 9235's vectors from
each of its eight scenarios (``tests/unit/test_tcp_ao.py``).
"""

from __future__ import annotations

import hmac
import importlib
import struct
from typing import Any

from tcpstack.wire import optscan as _optscan
from tcpstack.wire.errors import BytesLike

OPT_AO = 29
HEADER_LEN = 4  # kind, length, KeyID, RNextKeyID
MAC_LEN = 12  # both RFC 5926 MACs are 96 bits
#: Bytes the option takes in a header (4 + 12, a multiple of four: no padding).
OPTION_LEN = HEADER_LEN + MAC_LEN

HMAC_SHA1 = "hmac-sha1"
AES_128_CMAC = "aes-128-cmac"
ALGORITHMS = (HMAC_SHA1, AES_128_CMAC)

_LOW32 = 0xFFFFFFFF
_PROTO_TCP = 6
_CONTEXT4 = struct.Struct("!IIHHII")
_TAIL = struct.Struct("!HHII")
_PSEUDO4 = struct.Struct("!IIBBH")
_PSEUDO6_TAIL = struct.Struct("!II")
_SNE = struct.Struct("!I")


# ----------------------------------------------------------------- AES-CMAC

def _cryptography(name: str) -> Any:
    """A module of the ``cryptography`` package, imported by name (not statically: the
    package is optional, and the compiled build is type-checked without it)."""
    try:
        return importlib.import_module(f"cryptography.hazmat.primitives.{name}")
    except ImportError:
        raise RuntimeError("TCP-AO with AES-128-CMAC needs the 'cryptography' package "
                           "(pip install 'tcpstack[tls]')") from None


def require_aes() -> None:
    """Raise RuntimeError now, not at the first segment, if AES-CMAC is unavailable."""
    _cryptography("cmac")


def aes_cmac(key: bytes, *parts: bytes) -> bytes:
    """AES-128-CMAC (RFC 4493), 128 bits, over the concatenation of ``parts``."""
    c = _cryptography("cmac").CMAC(_cryptography("ciphers.algorithms").AES(key))
    for part in parts:
        c.update(part)
    return bytes(c.finalize())


# ----------------------------------------------------------------- keys

def context(src: int, dst: int, sport: int, dport: int, src_isn: int, dst_isn: int) -> bytes:
    """RFC 5925 5.2: the connection's addresses, ports and ISNs, from the sender's
    point of view (a SYN's has the destination ISN zero)."""
    if src > _LOW32:
        return (src.to_bytes(16, "big") + dst.to_bytes(16, "big")
                + _TAIL.pack(sport, dport, src_isn, dst_isn))
    return _CONTEXT4.pack(src, dst, sport, dport, src_isn, dst_isn)


def traffic_key(algorithm: str, master_key: bytes, ctx: bytes) -> bytes:
    """RFC 5926 3.1: KDF_HMAC_SHA1 (160 bits) or KDF_AES_128_CMAC (128 bits; a master
    key of another length is first reduced with CMAC under a zero key)."""
    if algorithm == HMAC_SHA1:
        return hmac.digest(master_key, b"\x01TCP-AO" + ctx + b"\x00\xa0", "sha1")
    if algorithm == AES_128_CMAC:
        key = master_key if len(master_key) == 16 else aes_cmac(bytes(16), master_key)
        return aes_cmac(key, b"\x01TCP-AO" + ctx + b"\x00\x80")
    raise ValueError(f"unknown TCP-AO algorithm {algorithm!r}")


# ----------------------------------------------------------------- the MAC

def find_option(segment: BytesLike) -> int:
    """Offset of the TCP-AO option in a TCP segment (already through ``parse_tcp``),
    or -1."""
    return _optscan.find_option(segment, OPT_AO, HEADER_LEN, 255)


def mac_input(src: int, dst: int, sne: int, segment: BytesLike, include_options: bool,
              payload: BytesLike | None = None) -> bytes:
    """What the MAC covers (RFC 5925 5.1), as one string (see :func:`mac_parts`)."""
    return b"".join(mac_parts(src, dst, sne, segment, include_options, payload))


def mac_parts(src: int, dst: int, sne: int, segment: BytesLike, include_options: bool,
              payload: BytesLike | None = None) -> list[BytesLike]:
    """What the MAC covers (RFC 5925 5.1), in pieces (the data is not copied), for a
    TCP segment whose TCP-AO option is in place (its MAC field is taken as zero);
    ``payload`` if the data is apart."""
    view = memoryview(segment)
    hlen = (view[12] >> 4) * 4
    body = view[hlen:] if payload is None else memoryview(payload)
    length = hlen + len(body)
    if src > _LOW32:
        pseudo = (src.to_bytes(16, "big") + dst.to_bytes(16, "big")
                  + _PSEUDO6_TAIL.pack(length, _PROTO_TCP))
    else:
        pseudo = _PSEUDO4.pack(src, dst, 0, _PROTO_TCP, length)
    at = find_option(view)
    if at < 0:
        raise ValueError("no TCP-AO option in the segment")
    opt_len = view[at + 1]
    parts: list[BytesLike] = [_SNE.pack(sne & _LOW32), pseudo, view[:16], b"\0\0",
                              view[18:20]]
    if include_options:
        parts += [view[20:at + HEADER_LEN], bytes(opt_len - HEADER_LEN), view[at + opt_len:hlen]]
    else:
        parts += [view[at:at + HEADER_LEN], bytes(opt_len - HEADER_LEN)]
    parts.append(body)
    return parts


def mac(algorithm: str, key: bytes, message: BytesLike | list[BytesLike]) -> bytes:
    """HMAC-SHA-1-96 or AES-128-CMAC-96 (RFC 5926 3.2): the first 96 bits of the MAC
    of ``message`` (or of the concatenation of a list of parts)."""
    parts = message if isinstance(message, list) else [message]
    if algorithm == HMAC_SHA1:
        h = hmac.new(key, digestmod="sha1")
        for part in parts:
            h.update(part)
        return h.digest()[:MAC_LEN]
    if algorithm == AES_128_CMAC:
        return aes_cmac(key, *[bytes(p) for p in parts])[:MAC_LEN]
    raise ValueError(f"unknown TCP-AO algorithm {algorithm!r}")


__all__ = [
    "AES_128_CMAC",
    "ALGORITHMS",
    "HMAC_SHA1",
    "MAC_LEN",
    "OPTION_LEN",
    "OPT_AO",
    "aes_cmac",
    "context",
    "find_option",
    "mac",
    "mac_input",
    "require_aes",
    "traffic_key",
]
