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
with AES-128-CMAC-96 (RFC 4493's CMAC; the AES comes from the ``cryptography``
package, imported only when such a key is used). Checked against every vector of
RFC 9235 (``tests/unit/test_tcp_ao.py``).
"""

from __future__ import annotations

import hmac
import struct
from typing import Any

from tcpstack.wire.errors import BytesLike

OPT_AO = 29
HEADER_LEN = 4  # kind, length, KeyID, RNextKeyID
MAC_LEN = 12  # both RFC 5926 MACs are 96 bits
#: Bytes the option takes in a header (4 + 12, a multiple of four: no padding).
OPTION_LEN = HEADER_LEN + MAC_LEN

HMAC_SHA1 = "hmac-sha1"
AES_128_CMAC = "aes-128-cmac"
ALGORITHMS = (HMAC_SHA1, AES_128_CMAC)

_TCP_HEADER = 20
_LOW32 = 0xFFFFFFFF
_PROTO_TCP = 6
_CONTEXT4 = struct.Struct("!IIHHII")
_TAIL = struct.Struct("!HHII")
_PSEUDO4 = struct.Struct("!IIBBH")
_PSEUDO6_TAIL = struct.Struct("!II")
_SNE = struct.Struct("!I")


# ----------------------------------------------------------------- AES-CMAC

def _aes_ecb(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:  # pragma: no cover - the test extras install it
        raise RuntimeError("TCP-AO with AES-128-CMAC needs the 'cryptography' package "
                           "(pip install 'tcpstack[tls]')") from None
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor()


def _shift_left(block: bytes) -> bytes:
    n = (int.from_bytes(block, "big") << 1) & ((1 << 128) - 1)
    return n.to_bytes(16, "big")


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(16, "big")


_RB = (0x87).to_bytes(16, "big")


def aes_cmac(key: bytes, message: bytes) -> bytes:
    """AES-128-CMAC (RFC 4493), 128 bits."""
    enc = _aes_ecb(key)
    zero = enc.update(bytes(16))
    k1 = _shift_left(zero)
    if zero[0] & 0x80:
        k1 = _xor(k1, _RB)
    k2 = _shift_left(k1)
    if k1[0] & 0x80:
        k2 = _xor(k2, _RB)
    blocks = max(1, -(-len(message) // 16))
    last = message[(blocks - 1) * 16:]
    # A whole last block is masked with K1; a short one is padded (10*) and with K2.
    last = _xor(last, k1) if len(last) == 16 else \
        _xor(last + b"\x80" + bytes(15 - len(last)), k2)
    x = bytes(16)
    for i in range(blocks - 1):
        x = enc.update(_xor(x, message[i * 16:(i + 1) * 16]))
    return bytes(enc.update(_xor(x, last)))


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
    view = memoryview(segment)
    end = (view[12] >> 4) * 4
    i = _TCP_HEADER
    while i < end:
        kind = view[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end:
            break
        length = view[i + 1]
        if length < 2:
            break
        if kind == OPT_AO and length >= HEADER_LEN and i + length <= end:
            return i
        i += length
    return -1


def mac_input(src: int, dst: int, sne: int, segment: BytesLike, include_options: bool,
              payload: BytesLike | None = None) -> bytes:
    """What the MAC covers (RFC 5925 5.1) for a TCP segment whose TCP-AO option is in
    place (its MAC field is taken as zero); ``payload`` if the data is apart."""
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
    parts = [_SNE.pack(sne & _LOW32), pseudo, bytes(view[:16]), b"\0\0", bytes(view[18:20])]
    if include_options:
        parts += [bytes(view[20:at + HEADER_LEN]), bytes(opt_len - HEADER_LEN),
                  bytes(view[at + opt_len:hlen])]
    else:
        parts += [bytes(view[at:at + HEADER_LEN]), bytes(opt_len - HEADER_LEN)]
    parts.append(bytes(body))
    return b"".join(parts)


def mac(algorithm: str, key: bytes, message: bytes) -> bytes:
    """HMAC-SHA-1-96 or AES-128-CMAC-96 (RFC 5926 3.2): the first 96 bits."""
    if algorithm == HMAC_SHA1:
        return hmac.digest(key, message, "sha1")[:MAC_LEN]
    if algorithm == AES_128_CMAC:
        return aes_cmac(key, message)[:MAC_LEN]
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
    "traffic_key",
]
