"""The RFC 1071 checksum, checked against a plain word-by-word reference."""

from __future__ import annotations

import random
import struct

import pytest
from checksum_ref import ref_sum

from tcpstack.wire import checksum as ck
from tcpstack.wire.ipv4 import PROTO_TCP


def ref_checksum(data: bytes) -> int:
    return ~ref_sum(data) & 0xFFFF


def _random_buffers(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    bufs = []
    for _ in range(count):
        n = rng.choice([rng.randrange(1, 16), rng.randrange(16, 2000)])
        bufs.append(rng.randbytes(n))
    # Buffers designed to produce many carries, and both parities of length.
    bufs += [b"\xff" * n for n in range(1, 9)]
    bufs += [b"\xff\xff" * 100 + b"\x00\x01", b"\x80" * 33, b"\x00" * 7 + b"\x01"]
    return bufs


@pytest.mark.parametrize("data", _random_buffers(1071, 300))
def test_checksum_matches_reference_on_random_buffers(data: bytes) -> None:
    assert ck.checksum(data) == ref_checksum(data)


@pytest.mark.parametrize("data", _random_buffers(2018, 100))
def test_partial_is_congruent_to_reference_sum(data: bytes) -> None:
    assert ck.partial(data) % 0xFFFF == ref_sum(data) % 0xFFFF


def test_odd_length_buffer_is_padded_with_zero_byte() -> None:
    assert ck.checksum(b"\x12\x34\x56") == ck.checksum(b"\x12\x34\x56\x00")
    assert ck.checksum(b"\x12\x34\x56") == ref_checksum(b"\x12\x34\x56")


def test_accepts_bytes_bytearray_and_memoryview_alike() -> None:
    data = bytes(range(1, 200))
    expected = ref_checksum(data)
    assert ck.checksum(data) == expected
    assert ck.checksum(bytearray(data)) == expected
    assert ck.checksum(memoryview(data)) == expected


def test_residues_of_concatenated_even_length_pieces_add_up() -> None:
    rng = random.Random(7)
    a, b, c = rng.randbytes(40), rng.randbytes(64), rng.randbytes(13)
    assert ck.finish(ck.partial(a) + ck.partial(b) + ck.partial(c)) == ref_checksum(a + b + c)


def test_rfc1071_worked_example() -> None:
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ref_sum(data) == 0xDDF2
    assert ck.partial(data) == 0xDDF2
    assert ck.checksum(data) == 0x220D


def test_sum_of_0xffff_gives_checksum_zero() -> None:
    # A non-zero buffer whose one's-complement sum is 0xFFFF (negative zero).
    data = b"\xff\x00\x00\xff"
    assert ref_sum(data) == 0xFFFF
    assert ck.checksum(data) == 0


@pytest.mark.parametrize("data", [b"", b"\x00", bytes(8)])
def test_empty_and_all_zero_buffers_have_checksum_0xffff(data: bytes) -> None:
    assert ref_checksum(data) == 0xFFFF
    assert ck.checksum(data) == 0xFFFF


def test_verify_rejects_all_zero_buffer() -> None:
    assert ref_sum(bytes(8)) != 0xFFFF
    assert not ck.verify(ck.partial(bytes(8)))


def _with_checksum(body: bytes, at: int) -> bytes:
    buf = bytearray(body)
    buf[at : at + 2] = b"\x00\x00"
    struct.pack_into("!H", buf, at, ck.checksum(buf))
    return bytes(buf)


@pytest.mark.parametrize("seed", range(20))
def test_verify_accepts_buffer_containing_its_own_checksum(seed: int) -> None:
    rng = random.Random(seed)
    body = rng.randbytes(rng.randrange(4, 300))
    buf = _with_checksum(body, 2 * rng.randrange(len(body) // 2))
    assert ref_sum(buf) == 0xFFFF
    assert ck.verify(ck.partial(buf))


@pytest.mark.parametrize("seed", range(20))
def test_verify_rejects_any_single_bit_flip(seed: int) -> None:
    rng = random.Random(seed)
    buf = bytearray(_with_checksum(rng.randbytes(rng.randrange(4, 300)), 0))
    bit = rng.randrange(len(buf) * 8)
    buf[bit // 8] ^= 1 << (bit % 8)
    assert ref_sum(bytes(buf)) != 0xFFFF
    assert not ck.verify(ck.partial(buf))


def test_verify_rejects_every_bit_flip_of_small_packet() -> None:
    buf = _with_checksum(bytes.fromhex("4500003c1c46400040060000ac100001ac10000c"), 10)
    assert ck.verify(ck.partial(buf))
    for bit in range(len(buf) * 8):
        flipped = bytearray(buf)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not ck.verify(ck.partial(flipped)), bit


def _pseudo_header(src: int, dst: int, proto: int, length: int) -> bytes:
    return struct.pack("!IIBBH", src, dst, 0, proto, length)


@pytest.mark.parametrize("seed", range(50))
def test_pseudo_header_residue_equals_reference_sum(seed: int) -> None:
    rng = random.Random(seed)
    src, dst = rng.getrandbits(32), rng.getrandbits(32)
    proto = rng.choice([PROTO_TCP, 17, rng.randrange(1, 256)])
    length = rng.randrange(0, 0x10000)
    expected = ref_sum(_pseudo_header(src, dst, proto, length))
    got = ck.pseudo_header_ipv4(src, dst, proto, length)
    assert got % 0xFFFF == expected % 0xFFFF
    assert ck.finish(got) == ref_checksum(_pseudo_header(src, dst, proto, length))


def test_pseudo_header_combines_with_segment_sum() -> None:
    rng = random.Random(99)
    segment = rng.randbytes(57)
    src, dst = 0xC0A80001, 0x0A000002
    whole = _pseudo_header(src, dst, PROTO_TCP, len(segment)) + segment
    total = ck.pseudo_header_ipv4(src, dst, PROTO_TCP, len(segment)) + ck.partial(segment)
    # The pseudo-header is 12 bytes (even), so the odd segment stays word-aligned.
    assert ck.finish(total) == ref_checksum(whole)
