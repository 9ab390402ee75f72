"""Property tests: whatever bytes a client sends, the HTTP service answers sanely.

Inputs are valid requests mutated byte by byte and spliced with fragments known
to upset parsers (brackets, percent escapes, huge numbers, stray CR/LF, NUL).
For every input the handler must return on its own (the input ends in EOF),
let no exception escape, close its writer, and write only well-formed HTTP/1.1
responses, nothing after one that says ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from urllib.parse import unquote_to_bytes

from app_harness import FakeWriter, parse_responses, reader_with
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tcpstack.apps import HttpService
from tcpstack.apps.http import REFUSALS

SEEDS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /bytes/10 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HEAD http://example.test/bytes/5 HTTP/1.1\r\nHost: example.test\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /bytes/1 HTTP/1.0\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
]

FRAGMENTS = [
    b"http://[", b"]", b"[::1]", b"://", b"@", b":", b"%", b"%00", b"%2e%2e/", b"..", b"/",
    b"?", b"#", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b"\x00", b"\xff",
    b"Content-Length: ", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip",
    b"Host: ", b"Expect: 100-continue", b"Connection: close", b"99999999999999999999",
    b"-1", b"+1", b"0x10", b"ffffffffffffffff", b"HTTP/1.1", b"HTTP/2.0", b"HTTP/1.", b";",
    b",",
]

KNOWN_STATUSES = {100, 200, 400, 404, 405, 408, 413, 414, 417, 431, 501, 505}

ALWAYS_CLOSE = {408, 413, 414, 417, 431, 501, 505}
"""Statuses that always end the connection (400 does too, except for a bad ``/bytes/N``:
counted refusals are checked against the closing responses instead)."""

MAX_GENERATED_BODY = 1_000_000
"""Inputs asking ``/bytes/N`` for more are skipped: the fake writer keeps every byte."""


def _small_bodies_only(data: bytes) -> bool:
    counts = re.findall(rb"/bytes/([0-9]+)", unquote_to_bytes(data))
    return all(len(c) < 8 and int(c) <= MAX_GENERATED_BODY for c in counts)


@st.composite
def hostile_requests(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "fragment"]))
        if action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif action == "replace" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        else:
            data[pos:pos] = draw(st.sampled_from(FRAGMENTS))
    return bytes(data)


async def _serve(data: bytes) -> tuple[FakeWriter, Counter[str]]:
    counters: Counter[str] = Counter()
    writer = FakeWriter()
    await asyncio.wait_for(HttpService(counters=counters)(reader_with(data), writer), 10)
    return writer, counters


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_requests())
def test_http_any_input_gets_well_formed_answers_and_a_closed_connection(data: bytes) -> None:
    assume(_small_bodies_only(data))
    writer, counters = asyncio.run(_serve(data))
    assert writer.closed
    responses = parse_responses(writer.written, allow_head=True)
    for i, response in enumerate(responses):
        assert response.status in KNOWN_STATUSES, response
        if response.headers.get("connection") == "close":
            assert i == len(responses) - 1, "a response after Connection: close"
        if response.status in ALWAYS_CLOSE:
            assert response.headers.get("connection") == "close", response
    refusals = sum(counters[f"http_{reason}"] for reason in REFUSALS)
    assert refusals <= 1, counters  # one refusal ends the connection
    closing = [r for r in responses if r.headers.get("connection") == "close"]
    assert refusals <= len(closing), "a refusal was counted but not answered"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_http_random_bytes_never_escape_the_handler(data: bytes) -> None:
    assume(_small_bodies_only(data))
    writer, _ = asyncio.run(_serve(data))
    assert writer.closed
    for response in parse_responses(writer.written, allow_head=True):
        assert response.status in KNOWN_STATUSES
