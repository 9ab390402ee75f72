"""The HTTP/1.1 service (RFC 9110 / RFC 9112), driven over loopback asyncio streams."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from app_harness import (
    FakeWriter,
    ResettingReader,
    assert_closed_by_server,
    connection,
    exchange,
    get,
    read_head,
    read_response,
    reader_with,
    serving,
)

from tcpstack.apps import HttpLimits, HttpService, ServiceLimits, pattern_bytes
from tcpstack.apps.http import MAX_BYTES, iter_pattern


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with serving(HttpService()) as p:
        yield p


@pytest.fixture
def www(tmp_path: Path) -> Path:
    """A web root with a few files, and a secret just outside it."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello from the web root\n")
    (root / "my file.txt").write_bytes(b"spaces work\n")
    (root / "style.css").write_bytes(b"body { color: red; }\n")
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_bytes(b"<p>docs index</p>\n")
    (root / "empty").mkdir()
    (tmp_path / "secret.txt").write_bytes(b"TOP SECRET\n")
    return root


@pytest.fixture
async def www_port(www: Path) -> AsyncIterator[int]:
    async with serving(HttpService(www)) as p:
        yield p


# -- the pattern ----------------------------------------------------------


def test_pattern_bytes_is_i_mod_251_and_splits_at_any_offset() -> None:
    body = pattern_bytes(100_000)
    assert len(body) == 100_000
    assert all(body[i] == i % 251 for i in range(0, 100_000, 997))
    assert pattern_bytes(0) == b""
    for split in (0, 1, 250, 251, 65536, 99_999):
        assert pattern_bytes(split) + pattern_bytes(100_000 - split, split) == body


def test_iter_pattern_chunks_concatenate_to_pattern_bytes() -> None:
    chunks = list(iter_pattern(300_001, chunk_size=65536))
    assert max(len(c) for c in chunks) == 65536
    assert b"".join(chunks) == pattern_bytes(300_001)


def test_pattern_bytes_rejects_negative_sizes() -> None:
    with pytest.raises(ValueError):
        pattern_bytes(-1)


def test_http_service_rejects_missing_www_and_bad_server_name(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        HttpService(tmp_path / "nope")
    with pytest.raises(ValueError):
        HttpService(server_name="evil\r\nX-Injected: 1")


# -- basics ---------------------------------------------------------------


async def test_http_root_page_mentions_tcpstack_and_lists_routes(port: int) -> None:
    response = await exchange(port, get("/"))
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    assert b"tcpstack" in response.body
    assert b"/bytes/N" in response.body
    assert response.length == len(response.body)


async def test_http_every_response_has_date_server_type_and_length() -> None:
    async with serving(HttpService(server_name="unit-test/1.0")) as p:
        for raw in (get("/"), get("/bytes/3"), get("/missing"), get("/", method="POST")):
            response = await exchange(p, raw)
            assert response.headers["server"] == "unit-test/1.0"
            assert email.utils.parsedate_to_datetime(response.headers["date"]) is not None
            assert response.headers["date"].endswith("GMT")
            assert response.headers["content-type"]
            assert response.length == len(response.body)


async def test_http_unknown_path_gets_404(port: int) -> None:
    response = await exchange(port, get("/no/such/thing"))
    assert response.status == 404
    assert response.body == b"404 Not Found\n"


async def test_http_absolute_form_target_is_accepted(port: int) -> None:
    response = await exchange(port, get("http://example.test/bytes/7"))
    assert response.status == 200
    assert response.body == pattern_bytes(7)


async def test_http_leading_empty_line_before_request_is_ignored(port: int) -> None:
    response = await exchange(port, b"\r\n" + get("/bytes/2"))
    assert response.status == 200
    assert response.body == pattern_bytes(2)


async def test_http_requests_are_logged_at_debug(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="tcpstack.http"):
        await exchange(port, get("/bytes/5"))
        await asyncio.sleep(0.05)
    messages = [r.getMessage() for r in caplog.records if r.name == "tcpstack.http"]
    assert any("GET /bytes/5 HTTP/1.1" in m and "200" in m for m in messages)


# -- persistence ----------------------------------------------------------


async def test_http_keep_alive_serves_two_requests_on_one_connection(port: int) -> None:
    async with connection(port) as (reader, writer):
        writer.write(get("/bytes/10"))
        first = await read_response(reader)
        writer.write(get("/"))
        second = await read_response(reader)
    assert first.status == second.status == 200
    assert first.body == pattern_bytes(10)
    assert b"tcpstack" in second.body
    assert "connection" not in first.headers


async def test_http_pipelined_requests_are_answered_in_order(port: int) -> None:
    async with connection(port) as (reader, writer):
        writer.write(get("/bytes/3") + get("/missing") + get("/bytes/300"))
        responses = [await read_response(reader) for _ in range(3)]
    assert [r.status for r in responses] == [200, 404, 200]
    assert responses[0].body == pattern_bytes(3)
    assert responses[2].body == pattern_bytes(300)


async def test_http_connection_close_is_honoured(port: int) -> None:
    async with connection(port) as (reader, writer):
        writer.write(get("/bytes/4", "Connection: close"))
        response = await read_response(reader)
        await assert_closed_by_server(reader)
    assert response.status == 200
    assert response.headers["connection"] == "close"


async def test_http_10_closes_by_default(port: int) -> None:
    async with connection(port) as (reader, writer):
        writer.write(b"GET /bytes/4 HTTP/1.0\r\n\r\n")
        response = await read_response(reader)
        await assert_closed_by_server(reader)
    assert response.status == 200
    assert response.body == pattern_bytes(4)
    assert response.headers["connection"] == "close"


async def test_http_10_keep_alive_persists(port: int) -> None:
    request = b"GET /bytes/4 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    async with connection(port) as (reader, writer):
        writer.write(request)
        first = await read_response(reader)
        writer.write(request)
        second = await read_response(reader)
    assert first.headers["connection"] == "keep-alive"
    assert first.body == second.body == pattern_bytes(4)


async def test_http_idle_connection_is_closed_after_timeout() -> None:
    async with (
        serving(HttpService(limits=ServiceLimits(idle_timeout=0.2))) as p,
        connection(p) as (reader, writer),
    ):
        writer.write(get("/bytes/1"))
        response = await read_response(reader)
        data = await asyncio.wait_for(reader.read(), 5)
    assert response.status == 200
    assert data == b"", "an idle close sends no response"


async def test_http_stalled_request_head_gets_408() -> None:
    async with (
        serving(HttpService(http=HttpLimits(header_timeout=0.2))) as p,
        connection(p) as (reader, writer),
    ):
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        response = await read_response(reader)
        await assert_closed_by_server(reader)
    assert response.status == 408


async def test_http_eof_mid_request_gets_400_and_close(port: int) -> None:
    async with connection(port) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nHo")
        writer.write_eof()
        response = await read_response(reader)
        await assert_closed_by_server(reader)
    assert response.status == 400


# -- malformed requests ---------------------------------------------------


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /",
        b"GET  / HTTP/1.1",
        b"GET / HTTP/1.1 extra",
        b"G@T / HTTP/1.1",
        b"GET / http/1.1",
        b"GET / HTTP/1.x",
        b"GET / HTTP/11",
        b"GET /\x01 HTTP/1.1",
        b"GET * HTTP/1.1",
        b"GET relative/path HTTP/1.1",
    ],
)
async def test_http_malformed_request_line_gets_400(port: int, request_line: bytes) -> None:
    async with connection(port) as (reader, writer):
        writer.write(request_line + b"\r\nHost: x\r\n\r\n")
        response = await read_response(reader)
        await assert_closed_by_server(reader)
    assert response.status == 400
    assert response.headers["connection"] == "close"


async def test_http_unsupported_major_version_gets_505(port: int) -> None:
    async with connection(port) as (reader, writer):
        writer.write(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
        response = await read_response(reader)
        await assert_closed_by_server(reader)
    assert response.status == 505


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n  folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: bad\x00value\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: bare\rcr\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=[
        "no-colon",
        "space-in-name",
        "space-before-colon",
        "obs-fold",
        "nul-in-value",
        "bare-cr-in-value",
        "missing-host",
        "two-hosts",
        "conflicting-content-length",
        "negative-content-length",
        "length-and-chunked",
        "chunked-not-final",
        "chunked-in-http10",
    ],
)
async def test_http_malformed_headers_get_400(port: int, head: bytes) -> None:
    async with connection(port) as (reader, writer):
        writer.write(head)
        response = await read_response(reader)
        await assert_closed_by_server(reader)
    assert response.status == 400


async def test_http_overlong_header_line_gets_431(port: int) -> None:
    """RFC 6585 5: a header field larger than the server accepts gets 431."""
    async with connection(port) as (reader, writer):
        writer.write(get("/", "X-Long: " + "a" * 9000))
        response = await read_response(reader)
        await assert_closed_by_server(reader)
    assert response.status == 431
    assert response.headers["connection"] == "close"


async def test_http_header_line_beyond_stream_buffer_limit_gets_431(port: int) -> None:
    async with connection(port) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * 200_000)
        response = await read_response(reader)
        await assert_closed_by_server(reader)
    assert response.status == 431


async def test_http_too_many_headers_gets_431_but_one_hundred_are_fine(port: int) -> None:
    ninety_nine = [f"X-H{i}: {i}" for i in range(99)]  # plus Host makes 100
    ok = await exchange(port, get("/bytes/1", *ninety_nine))
    assert ok.status == 200
    async with connection(port) as (reader, writer):
        writer.write(get("/bytes/1", *ninety_nine, "X-One-Too-Many: 1"))
        response = await read_response(reader)
        await assert_closed_by_server(reader)
    assert response.status == 431


# -- methods and bodies ---------------------------------------------------


async def test_http_post_gets_405_with_allow_and_connection_survives(port: int) -> None:
    body = b"x" * 200_000
    async with connection(port) as (reader, writer):
        writer.write(get("/", f"Content-Length: {len(body)}", method="POST") + body)
        refused = await read_response(reader)
        writer.write(get("/bytes/5"))
        after = await read_response(reader)
    assert refused.status == 405
    assert refused.headers["allow"] == "GET, HEAD"
    assert after.status == 200
    assert after.body == pattern_bytes(5)


async def test_http_unknown_method_gets_501_and_close(port: int) -> None:
    """RFC 9110 15.6.2: an unrecognised method gets 501; we do not guess its body."""
    async with connection(port) as (reader, writer):
        writer.write(get("/", method="BREW"))
        response = await read_response(reader)
        await assert_closed_by_server(reader)
    assert response.status == 501
    assert response.headers["connection"] == "close"


async def test_http_chunked_request_body_is_discarded(port: int) -> None:
    chunked = b"5;ext=1\r\nhello\r\n0A\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n"
    async with connection(port) as (reader, writer):
        writer.write(get("/bytes/3", "Transfer-Encoding: chunked") + chunked + get("/"))
        first = await read_response(reader)
        second = await read_response(reader)
    assert first.status == 200
    assert first.body == pattern_bytes(3)
    assert second.status == 200
    assert b"tcpstack" in second.body


async def test_http_malformed_chunk_size_gets_400(port: int) -> None:
    async with connection(port) as (reader, writer):
        writer.write(get("/", "Transfer-Encoding: chunked") + b"zz\r\n")
        response = await read_response(reader)
        await assert_closed_by_server(reader)
    assert response.status == 400


async def test_http_unsupported_transfer_coding_gets_501(port: int) -> None:
    async with connection(port) as (reader, writer):
        writer.write(get("/", "Transfer-Encoding: gzip, chunked"))
        response = await read_response(reader)
        await assert_closed_by_server(reader)
    assert response.status == 501
    assert response.headers["connection"] == "close"


async def test_http_expect_100_continue_gets_interim_response(port: int) -> None:
    async with connection(port) as (reader, writer):
        writer.write(get("/", "Content-Length: 4", "Expect: 100-continue", method="PUT"))
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(b"data")
        final = await read_response(reader)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert final.status == 405


async def test_http_unknown_expectation_gets_417(port: int) -> None:
    async with connection(port) as (reader, writer):
        writer.write(get("/", "Expect: something-else"))
        response = await read_response(reader)
        await assert_closed_by_server(reader)
    assert response.status == 417


# -- /bytes/N -------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 250, 251, 252, 65536, 65537, 1_000_003])
async def test_http_bytes_route_returns_exact_length_and_pattern(port: int, n: int) -> None:
    response = await exchange(port, get(f"/bytes/{n}"))
    assert response.status == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.length == n
    assert response.body == pattern_bytes(n)


async def test_http_bytes_route_streams_50_mib_intact(port: int) -> None:
    n = 50 * 1024 * 1024
    expected = hashlib.sha256()
    for chunk in iter_pattern(n):
        expected.update(chunk)
    async with connection(port) as (reader, writer):
        writer.write(get(f"/bytes/{n}") + get("/bytes/1"))
        status, headers = await read_head(reader)
        digest = hashlib.sha256()
        remaining = int(headers["content-length"])
        while remaining:
            chunk = await asyncio.wait_for(reader.read(min(remaining, 1 << 20)), 10)
            assert chunk, "server closed mid-body"
            digest.update(chunk)
            remaining -= len(chunk)
        trailing = await read_response(reader)
    assert status == 200
    assert int(headers["content-length"]) == n
    assert digest.hexdigest() == expected.hexdigest()
    assert trailing.body == pattern_bytes(1)


@pytest.mark.parametrize(
    "count", ["-1", "abc", "1e3", "0x10", "", "5/", "%C2%B2", str(MAX_BYTES + 1), "9" * 40]
)
async def test_http_bytes_route_rejects_bad_counts_with_400(port: int, count: str) -> None:
    async with connection(port) as (reader, writer):
        writer.write(get(f"/bytes/{count}"))
        response = await read_response(reader)
        writer.write(get("/bytes/1"))
        after = await read_response(reader)
    assert response.status == 400
    assert after.status == 200, "a bad count is not a framing error"


async def test_http_bytes_route_accepts_the_10_gib_upper_bound(port: int) -> None:
    async with connection(port) as (reader, writer):
        writer.write(get(f"/bytes/{MAX_BYTES}", method="HEAD") + get("/bytes/2"))
        head = await read_response(reader, head_only=True)
        after = await read_response(reader)
    assert head.status == 200
    assert head.length == MAX_BYTES
    assert after.body == pattern_bytes(2)


async def test_http_head_has_length_but_no_body(port: int) -> None:
    async with connection(port) as (reader, writer):
        # If HEAD leaked a body, the second response would start with it and not parse.
        writer.write(get("/bytes/1000", method="HEAD") + get("/bytes/3"))
        head = await read_response(reader, head_only=True)
        after = await read_response(reader)
        writer.write(get("/", method="HEAD", version="HTTP/1.0"))
        root_head = await read_response(reader, head_only=True)
        leftover = await asyncio.wait_for(reader.read(), 5)
    assert head.status == 200
    assert head.length == 1000
    assert after.body == pattern_bytes(3)
    assert root_head.length > 0
    assert leftover == b""


async def test_http_bytes_route_streams_in_bounded_chunks_with_drain() -> None:
    n = 1_000_000
    writer = FakeWriter()
    await HttpService()(reader_with(get(f"/bytes/{n}")), writer)
    body_writes = writer.writes[1:]
    assert b"".join(body_writes) == pattern_bytes(n)
    assert max(len(w) for w in body_writes) <= 65536
    assert writer.drains >= len(body_writes)
    assert writer.closed


# -- static files ---------------------------------------------------------


async def test_http_static_file_served_by_path(www_port: int, www: Path) -> None:
    response = await exchange(www_port, get("/hello.txt"))
    assert response.status == 200
    assert response.body == (www / "hello.txt").read_bytes()
    assert response.headers["content-type"].startswith("text/plain")
    assert "last-modified" in response.headers


async def test_http_static_content_type_follows_extension(www_port: int) -> None:
    response = await exchange(www_port, get("/style.css"))
    assert response.headers["content-type"].startswith("text/css")


async def test_http_static_path_is_url_decoded_and_query_ignored(www_port: int) -> None:
    response = await exchange(www_port, get("/my%20file.txt?cache=no#frag"))
    assert response.status == 200
    assert response.body == b"spaces work\n"


async def test_http_static_directory_serves_its_index_html(www_port: int) -> None:
    for path in ("/docs/", "/docs"):
        response = await exchange(www_port, get(path))
        assert response.status == 200
        assert response.body == b"<p>docs index</p>\n"
        assert response.headers["content-type"].startswith("text/html")


async def test_http_static_directory_without_index_is_404(www_port: int) -> None:
    response = await exchange(www_port, get("/empty/"))
    assert response.status == 404


async def test_http_root_serves_www_index_when_present(www: Path) -> None:
    (www / "index.html").write_bytes(b"<h1>custom home</h1>\n")
    async with serving(HttpService(www)) as p:
        response = await exchange(p, get("/"))
    assert response.body == b"<h1>custom home</h1>\n"


async def test_http_root_falls_back_to_builtin_page_without_www_index(www_port: int) -> None:
    response = await exchange(www_port, get("/"))
    assert response.status == 200
    assert b"tcpstack" in response.body


async def test_http_bytes_route_takes_precedence_over_www(www: Path) -> None:
    (www / "bytes").mkdir()
    (www / "bytes" / "5").write_bytes(b"shadowed")
    async with serving(HttpService(www)) as p:
        response = await exchange(p, get("/bytes/5"))
    assert response.body == pattern_bytes(5)


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/docs/../../secret.txt",
        "/%2F..%2Fsecret.txt",
        "//../secret.txt",
        "/hello.txt%00.png",
    ],
)
async def test_http_path_traversal_is_refused(www_port: int, path: str) -> None:
    response = await exchange(www_port, get(path))
    assert response.status == 404
    assert b"SECRET" not in response.body


async def test_http_absolute_filesystem_path_stays_inside_root(www_port: int) -> None:
    response = await exchange(www_port, get("//etc/passwd"))
    assert response.status == 404
    assert b"root:" not in response.body


async def test_http_symlink_escaping_root_is_refused(www: Path) -> None:
    (www / "escape.txt").symlink_to(www.parent / "secret.txt")
    (www / "escape-dir").symlink_to(www.parent, target_is_directory=True)
    async with serving(HttpService(www)) as p:
        for path in ("/escape.txt", "/escape-dir/secret.txt"):
            response = await exchange(p, get(path))
            assert response.status == 404
            assert b"SECRET" not in response.body


async def test_http_symlink_inside_root_is_served(www: Path) -> None:
    (www / "alias.txt").symlink_to(www / "hello.txt")
    async with serving(HttpService(www)) as p:
        response = await exchange(p, get("/alias.txt"))
    assert response.status == 200
    assert response.body == b"hello from the web root\n"


async def test_http_special_files_are_not_served(www: Path) -> None:
    os.mkfifo(www / "pipe")
    async with serving(HttpService(www)) as p:
        response = await exchange(p, get("/pipe"))
    assert response.status == 404


async def test_http_static_large_file_is_streamed_intact(www: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (www / "big.bin").write_bytes(data)
    async with serving(HttpService(www)) as p:
        response = await exchange(p, get("/big.bin"))
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.length == len(data)
    assert hashlib.sha256(response.body).digest() == hashlib.sha256(data).digest()


async def test_http_static_head_sends_file_length_only(www_port: int, www: Path) -> None:
    async with connection(www_port) as (reader, writer):
        writer.write(get("/hello.txt", method="HEAD") + get("/bytes/1"))
        head = await read_response(reader, head_only=True)
        after = await read_response(reader)
    assert head.length == len((www / "hello.txt").read_bytes())
    assert after.body == pattern_bytes(1)


# -- client misbehaviour --------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError("reset"),
        BrokenPipeError("pipe"),
        asyncio.IncompleteReadError(b"GET", 10),
    ],
)
async def test_http_client_errors_do_not_escape_and_writer_is_closed(exc: Exception) -> None:
    writer = FakeWriter()
    await HttpService()(ResettingReader([], exc), writer)
    assert writer.closed


async def test_http_reset_while_sending_does_not_escape() -> None:
    writer = FakeWriter(fail_drain=ConnectionResetError("peer went away"))
    await HttpService()(reader_with(get("/bytes/1000000")), writer)
    assert writer.closed
    assert len(writer.writes) == 1, "nothing more is written once the peer is gone"
