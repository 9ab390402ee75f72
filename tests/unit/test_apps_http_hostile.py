"""The HTTP service against hostile clients: malformed requests, and counting them.

Every malformed request line, target, header section or body framing gets its
4xx/5xx status with ``Connection: close``, the connection is closed, nothing
escapes the handler, nothing is logged above debug, and the service counts the
refusal under a named reason (``HttpService.counters``) that the daemon logs at
shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from pathlib import Path

import pytest
from app_harness import (
    FakeWriter,
    assert_closed_by_server,
    connection,
    get,
    parse_responses,
    read_response,
    reader_with,
    serving,
)

from tcpstack.apps import HttpLimits, HttpService, ServiceLimits

MIB = 1 << 20


def _head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


MALFORMED: list[tuple[str, bytes, int, str]] = [
    # -- request targets (RFC 9112 3.2, RFC 3986 3.2) ------------------------
    ("ipv6-literal-unclosed", _head("GET http://[/ HTTP/1.1", "Host: x"), 400, "bad_target"),
    ("ipv6-literal-not-hex", _head("GET http://[zz]/ HTTP/1.1", "Host: x"), 400, "bad_target"),
    ("ipv6-literal-trailing", _head("GET http://[::1]x/ HTTP/1.1", "Host: x"), 400,
     "bad_target"),
    ("userinfo", _head("GET http://user:pw@example.test/ HTTP/1.1", "Host: example.test"),
     400, "bad_target"),
    ("empty-authority", _head("GET http:///x HTTP/1.1", "Host: x"), 400, "bad_target"),
    ("other-scheme", _head("GET ftp://example.test/ HTTP/1.1", "Host: x"), 400, "bad_target"),
    ("port-not-digits", _head("GET http://example.test:8x/ HTTP/1.1", "Host: x"), 400,
     "bad_target"),
    ("relative", _head("GET relative HTTP/1.1", "Host: x"), 400, "bad_target"),
    ("asterisk-for-get", _head("GET * HTTP/1.1", "Host: x"), 400, "bad_target"),
    ("control-char", b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_target"),
    # -- the request line -----------------------------------------------------
    ("two-parts", _head("GET /", "Host: x"), 400, "bad_request_line"),
    ("bad-method-token", _head("G@T / HTTP/1.1", "Host: x"), 400, "bad_request_line"),
    ("uri-too-long", _head("GET /" + "a" * 9000 + " HTTP/1.1", "Host: x"), 414,
     "uri_too_long"),
    ("bad-version", _head("GET / HTTP/1.x", "Host: x"), 400, "bad_version"),
    ("version-2", _head("GET / HTTP/2.0", "Host: x"), 505, "version_not_supported"),
    ("unknown-method", _head("BREW / HTTP/1.1", "Host: x"), 501, "unknown_method"),
    ("too-many-empty-lines", b"\r\n" * 20 + _head("GET / HTTP/1.1", "Host: x"), 400,
     "bad_request_line"),
    # -- the header section (RFC 9112 5, RFC 6585 5) ---------------------------
    ("header-too-long", get("/", "X-Long: " + "a" * 9000), 431, "header_too_long"),
    ("too-many-headers", get("/", *(f"X-H{i}: {i}" for i in range(120))), 431,
     "too_many_headers"),
    ("head-too-large", get("/", *(f"X-H{i}: {'v' * 4000}" for i in range(40))), 431,
     "headers_too_large"),
    ("no-colon", get("/", "NoColonHere"), 400, "bad_header"),
    ("obs-fold", get("/", "X-A: one", "  folded"), 400, "bad_header"),
    ("missing-host", _head("GET / HTTP/1.1"), 400, "bad_host"),
    ("two-hosts", _head("GET / HTTP/1.1", "Host: a", "Host: b"), 400, "bad_host"),
    ("host-with-space", _head("GET / HTTP/1.1", "Host: a b"), 400, "bad_host"),
    ("host-with-userinfo", _head("GET / HTTP/1.1", "Host: u@a"), 400, "bad_host"),
    # -- body framing (RFC 9112 6) ----------------------------------------------
    ("content-length-sign", get("/", "Content-Length: +5"), 400, "bad_content_length"),
    ("content-length-negative", get("/", "Content-Length: -1"), 400, "bad_content_length"),
    ("content-length-hex", get("/", "Content-Length: 0x10"), 400, "bad_content_length"),
    ("content-length-empty", get("/", "Content-Length: "), 400, "bad_content_length"),
    ("content-length-list-conflict", get("/", "Content-Length: 5, 6"), 400,
     "bad_content_length"),
    ("content-length-lines-conflict", get("/", "Content-Length: 5", "Content-Length: 6"), 400,
     "bad_content_length"),
    ("content-length-20-digits", get("/", "Content-Length: 10000000000000000000"), 400,
     "bad_content_length"),
    ("content-length-ridiculous", get("/", "Content-Length: " + "9" * 40), 400,
     "bad_content_length"),
    ("content-length-19-digits", get("/", "Content-Length: 9999999999999999999"), 413,
     "body_too_large"),
    ("content-length-over-max", get("/", f"Content-Length: {MIB + 1}"), 413,
     "body_too_large"),
    ("length-and-chunked", get("/", "Content-Length: 3", "Transfer-Encoding: chunked"), 400,
     "bad_transfer_encoding"),
    ("chunked-not-final", get("/", "Transfer-Encoding: chunked, gzip"), 400,
     "bad_transfer_encoding"),
    ("chunked-in-http10", _head("GET / HTTP/1.0", "Transfer-Encoding: chunked"), 400,
     "bad_transfer_encoding"),
    ("unknown-coding", get("/", "Transfer-Encoding: gzip, chunked"), 501,
     "transfer_coding_not_implemented"),
    ("bad-chunk-size", get("/", "Transfer-Encoding: chunked") + b"zz\r\n", 400, "bad_chunk"),
    ("chunk-size-too-long", get("/", "Transfer-Encoding: chunked") + b"1" * 17 + b"\r\n", 400,
     "bad_chunk"),
    ("chunked-over-max", get("/", "Transfer-Encoding: chunked")
     + b"%x\r\n" % (MIB + 1), 413, "body_too_large"),
    ("unknown-expectation", get("/", "Expect: something-else"), 417, "expectation_failed"),
    # -- truncation -------------------------------------------------------------
    ("eof-in-head", b"GET / HTTP/1.1\r\nHo", 400, "incomplete_head"),
    ("eof-in-body", get("/", "Content-Length: 10") + b"abc", 400, "incomplete_body"),
]


@pytest.mark.parametrize(
    ("name", "raw", "status", "reason"),
    [pytest.param(*case, id=case[0]) for case in MALFORMED],
)
async def test_http_malformed_request_gets_its_status_closes_and_is_counted(
    name: str, raw: bytes, status: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    counters: Counter[str] = Counter()
    with caplog.at_level(logging.DEBUG):
        async with (
            serving(HttpService(counters=counters)) as port,
            connection(port) as (reader, writer),
        ):
            writer.write(raw)
            if name.startswith("eof-"):
                writer.write_eof()
            response = await read_response(reader)
            await assert_closed_by_server(reader)
    assert response.status == status
    assert response.headers["connection"] == "close"
    assert counters[f"http_{reason}"] == 1, counters
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG], caplog.text


async def test_http_bracket_target_does_not_escape_the_handler() -> None:
    """Regression: ``GET http://[/`` made ``urlsplit`` raise inside the handler."""
    writer = FakeWriter()
    service = HttpService()
    await service(reader_with(b"GET http://[/ HTTP/1.1\r\nHost: x\r\n\r\n"), writer)
    (response,) = parse_responses(writer.written)
    assert response.status == 400
    assert response.headers["connection"] == "close"
    assert writer.closed
    assert service.counters["http_bad_target"] == 1


async def test_http_malformed_absolute_target_is_refused_before_the_body_is_read() -> None:
    """The target is checked with the head, so a bad one does not wait for its body."""
    writer = FakeWriter()
    raw = get("http://[::1/", "Content-Length: 5")  # the 5 body bytes never come
    await asyncio.wait_for(HttpService()(reader_with(raw, eof=False), writer), 5)
    assert parse_responses(writer.written)[0].status == 400


async def test_http_valid_absolute_and_ipv6_targets_are_served() -> None:
    async with serving(HttpService()) as port:
        for target in ("http://example.test/bytes/3", "HTTP://[::1]:8080/bytes/3",
                       "https://10.0.0.2:443/bytes/3?x=1"):
            async with connection(port) as (reader, writer):
                writer.write(get(target))
                response = await read_response(reader)
            assert response.status == 200, target


async def test_http_repeated_identical_content_length_is_accepted() -> None:
    """RFC 9110 8.6: a list of identical values may be taken as that one value."""
    async with serving(HttpService()) as port, connection(port) as (reader, writer):
        writer.write(get("/", "Content-Length: 3, 3", method="POST") + b"abc" + get("/bytes/2"))
        refused = await read_response(reader)
        after = await read_response(reader)
    assert refused.status == 405
    assert after.status == 200


async def test_http_content_length_at_the_limit_is_read_and_the_connection_kept() -> None:
    counters: Counter[str] = Counter()
    body = b"x" * MIB
    async with (
        serving(HttpService(counters=counters)) as port,
        connection(port) as (reader, writer),
    ):
        writer.write(get("/", f"Content-Length: {len(body)}", method="POST") + body)
        refused = await read_response(reader)
        writer.write(get("/bytes/2"))
        after = await read_response(reader)
    assert refused.status == 405
    assert after.status == 200
    assert counters["http_body_too_large"] == 0


async def test_http_counts_answered_requests() -> None:
    counters: Counter[str] = Counter()
    async with (
        serving(HttpService(counters=counters)) as port,
        connection(port) as (reader, writer),
    ):
        for _ in range(3):
            writer.write(get("/bytes/1"))
            await read_response(reader)
    assert counters["http_requests"] == 3


# -- time and size limits -------------------------------------------------------

SHORT = 0.3
WAIT = 10.0


async def _trickle(writer: asyncio.StreamWriter, data: bytes, interval: float) -> None:
    """Send ``data`` one byte at a time, ``interval`` seconds apart (slowloris)."""
    try:
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(interval)
    except ConnectionError:
        pass


async def test_http_slowloris_head_gets_408_after_the_header_timeout() -> None:
    """The header timeout bounds the whole head, however often bytes trickle in.

    A byte every 50 ms would keep a per-read timer alive for ever; the head is
    long enough to trickle for 25 s, far beyond the 0.3 s limit and the wait.
    """
    counters: Counter[str] = Counter()
    service = HttpService(http=HttpLimits(header_timeout=SHORT), counters=counters)
    head = get("/", *(f"X-Pad{i}: {'p' * 40}" for i in range(10)))
    async with serving(service) as port, connection(port) as (reader, writer):
        trickler = asyncio.create_task(_trickle(writer, head, 0.05))
        try:
            response = await asyncio.wait_for(read_response(reader), WAIT)
            await assert_closed_by_server(reader)
        finally:
            trickler.cancel()
    assert response.status == 408
    assert response.headers["connection"] == "close"
    assert counters["http_header_timeout"] == 1


async def test_http_slow_body_gets_408_after_the_body_timeout() -> None:
    counters: Counter[str] = Counter()
    service = HttpService(http=HttpLimits(body_timeout=SHORT), counters=counters)
    async with serving(service) as port, connection(port) as (reader, writer):
        writer.write(get("/", "Content-Length: 1000", method="POST"))
        trickler = asyncio.create_task(_trickle(writer, b"b" * 1000, 0.05))
        try:
            response = await asyncio.wait_for(read_response(reader), WAIT)
        finally:
            trickler.cancel()
    assert response.status == 408
    assert response.headers["connection"] == "close"
    assert counters["http_body_timeout"] == 1


async def test_http_body_limit_is_configurable() -> None:
    counters: Counter[str] = Counter()
    service = HttpService(http=HttpLimits(max_body=10), counters=counters)
    async with serving(service) as port:
        async with connection(port) as (reader, writer):
            writer.write(get("/", "Content-Length: 10", method="POST") + b"0123456789")
            ok = await read_response(reader)
        async with connection(port) as (reader, writer):
            writer.write(get("/", "Content-Length: 11", method="POST") + b"0123456789A")
            refused = await read_response(reader)
            await assert_closed_by_server(reader)
    assert ok.status == 405
    assert refused.status == 413
    assert refused.headers["connection"] == "close"
    assert counters["http_body_too_large"] == 1


async def test_http_expect_100_continue_with_too_large_body_gets_413_not_100() -> None:
    """RFC 9110 10.1.1: a server may answer the final status instead of 100 Continue."""
    async with serving(HttpService()) as port, connection(port) as (reader, writer):
        writer.write(get("/", f"Content-Length: {MIB + 1}", "Expect: 100-continue",
                         method="PUT"))
        response = await read_response(reader)
        await assert_closed_by_server(reader)
    assert response.status == 413


async def test_http_requests_per_connection_are_bounded() -> None:
    counters: Counter[str] = Counter()
    service = HttpService(http=HttpLimits(max_requests=2), counters=counters)
    async with serving(service) as port, connection(port) as (reader, writer):
        writer.write(get("/bytes/1") + get("/bytes/2") + get("/bytes/3"))
        first = await read_response(reader)
        second = await read_response(reader)
        await assert_closed_by_server(reader)
    assert "connection" not in first.headers
    assert second.headers["connection"] == "close"
    assert counters["http_max_requests"] == 1
    assert counters["http_requests"] == 2


async def test_http_keep_alive_connection_idle_between_requests_is_closed() -> None:
    counters: Counter[str] = Counter()
    service = HttpService(limits=ServiceLimits(idle_timeout=SHORT), counters=counters)
    async with serving(service) as port, connection(port) as (reader, writer):
        writer.write(get("/bytes/1"))
        response = await read_response(reader)
        leftover = await asyncio.wait_for(reader.read(), WAIT)
    assert response.status == 200
    assert leftover == b""
    assert counters["http_idle_timeout"] == 1


# -- static files: symlinks and races -------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """``tmp/www`` (served) with ``sub/page.txt``; ``tmp/outside`` holds secrets."""
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "page.txt").write_bytes(b"inside the root\n")
    (root / "hello.txt").write_bytes(b"hello\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "page.txt").write_bytes(b"SECRET outside the root\n")
    (outside / "index.html").write_bytes(b"SECRET index\n")
    return root


async def _fetch(service: HttpService, path: str) -> tuple[int, bytes]:
    writer = FakeWriter()
    await asyncio.wait_for(service(reader_with(get(path)), writer), WAIT)
    (response,) = parse_responses(writer.written)
    return response.status, response.body


@pytest.mark.parametrize(
    ("link", "target", "path"),
    [
        pytest.param("rel-up.txt", "sub/../hello.txt", "/rel-up.txt", id="relative-dotdot"),
        pytest.param("sub/up.txt", "../hello.txt", "/sub/up.txt", id="relative-parent"),
        pytest.param("abs.txt", "{root}/hello.txt", "/abs.txt", id="absolute-inside"),
        pytest.param("dirlink", "sub", "/dirlink/page.txt", id="directory-inside"),
        pytest.param("chain1", "chain2", "/chain1", id="chain-inside"),
    ],
)
async def test_http_symlinks_resolving_inside_the_root_are_served(
    site: Path, link: str, target: str, path: str
) -> None:
    (site / link).symlink_to(target.format(root=site))
    if link == "chain1":
        (site / "chain2").symlink_to("hello.txt")
    status, body = await _fetch(HttpService(site), path)
    assert status == 200
    assert b"SECRET" not in body


@pytest.mark.parametrize(
    ("link", "target", "path"),
    [
        pytest.param("up.txt", "../outside/page.txt", "/up.txt", id="relative-escape"),
        pytest.param("sub/deep.txt", "../../outside/page.txt", "/sub/deep.txt",
                     id="relative-escape-from-subdir"),
        pytest.param("abs.txt", "{outside}/page.txt", "/abs.txt", id="absolute-outside"),
        pytest.param("dir", "{outside}", "/dir/page.txt", id="directory-outside"),
        pytest.param("dir", "{outside}", "/dir/", id="directory-outside-index"),
        pytest.param("etc", "/etc", "/etc/passwd", id="system-directory"),
        pytest.param("root-self", "/", "/root-self/etc/passwd", id="filesystem-root"),
    ],
)
async def test_http_symlinks_leaving_the_root_are_refused(
    site: Path, link: str, target: str, path: str
) -> None:
    (site / link).symlink_to(target.format(outside=site.parent / "outside"))
    status, body = await _fetch(HttpService(site), path)
    assert status == 404
    assert b"SECRET" not in body and b"root:" not in body


async def test_http_symlink_loop_is_refused_without_hanging(site: Path) -> None:
    (site / "a").symlink_to("b")
    (site / "b").symlink_to("a")
    (site / "self").symlink_to("self")
    service = HttpService(site)
    for path in ("/a", "/b", "/self", "/a/x"):
        assert (await _fetch(service, path))[0] == 404


async def test_http_directory_without_index_and_special_files_are_refused(site: Path) -> None:
    os.mkfifo(site / "fifo")
    (site / "sub" / "index.html").symlink_to(site / "sub")  # index that is a directory
    service = HttpService(site)
    for path in ("/fifo", "/sub/", "/sub/page.txt/", "/sub/page.txt/x"):
        status, _ = await _fetch(service, path)
        assert status == 404, path


class _SwapOnOpen:
    """Wraps ``os.open``: just before its ``n``-th call, replaces a path with a symlink.

    Models an attacker with write access inside the web root racing the server:
    whatever the server checked before that moment is no longer true.
    """

    def __init__(self, n: int, victim: Path, target: Path) -> None:
        self.n = n
        self.calls = 0
        self.victim = victim
        self.target = target
        self.swapped = False
        self._open = os.open

    def __call__(self, path: object, flags: int, *args: object, **kwargs: object) -> int:
        self.calls += 1
        if self.calls == self.n:
            self.victim.rename(self.victim.with_name(self.victim.name + ".moved"))
            self.victim.symlink_to(self.target)
            self.swapped = True
        return self._open(path, flags, *args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", range(1, 7))
@pytest.mark.parametrize("what", ["directory", "file"])
async def test_http_symlink_swapped_in_after_the_check_is_not_followed(
    site: Path, monkeypatch: pytest.MonkeyPatch, n: int, what: str
) -> None:
    outside = site.parent / "outside"
    if what == "directory":
        swap = _SwapOnOpen(n, site / "sub", outside)
    else:
        swap = _SwapOnOpen(n, site / "sub" / "page.txt", outside / "page.txt")
    service = HttpService(site)
    monkeypatch.setattr(os, "open", swap)
    status, body = await _fetch(service, "/sub/page.txt")
    monkeypatch.undo()
    assert b"SECRET" not in body
    if swap.swapped:
        assert status in (200, 404)
    else:
        assert (status, body) == (200, b"inside the root\n")


async def test_http_dot_dot_in_the_request_path_is_refused_even_inside_the_root(
    site: Path,
) -> None:
    """Clients remove dot-segments (RFC 3986 5.2.4); a raw ``..`` is a probe."""
    assert (await _fetch(HttpService(site), "/sub/../hello.txt"))[0] == 404
    assert (await _fetch(HttpService(site), "/sub/./page.txt"))[0] == 200
