"""A small HTTP/1.1 origin server (RFC 9110 semantics, RFC 9112 message syntax).

Routes, in the order they are tried:

* ``/`` -- ``index.html`` of the static root when there is one, else a small
  built-in HTML page that lists the routes.
* ``/bytes/N`` -- exactly ``N`` bytes (``0 <= N <= 10 GiB``) of
  ``application/octet-stream`` made by :func:`pattern_bytes`; any other
  ``N`` gets 400. The ``/bytes/`` prefix is reserved and never reaches the
  static root.
* anything else -- a regular file under the static root (``www``), if one was
  given; a directory serves its ``index.html``. Otherwise 404.

Decisions worth knowing (section numbers are RFC 9112 unless marked):

* Methods: GET and HEAD are served. Other methods defined by RFC 9110 (POST,
  PUT, DELETE, CONNECT, OPTIONS, TRACE) and PATCH get **405** with
  ``Allow: GET, HEAD`` (RFC 9110 section 15.5.6) once their body has been
  read and dropped, and the connection stays open. Any other syntactically
  valid method token gets **501** (RFC 9110 section 15.6.2) and the
  connection closes.
* Every malformed or refused request gets its status with ``Connection:
  close``, and the connection closes (after lingering, below); nothing a
  client sends makes the handler raise:

  - **400**: a malformed request line (section 3) or header line (section
    5), obsolete line folding (section 5.2), whitespace before a colon
    (section 5.1), a missing, repeated or malformed ``Host`` (section 3.2), a
    request target that is neither origin-form nor a well-formed absolute
    ``http``/``https`` URI without userinfo (section 3.2, RFC 9110 section
    4.2.4), a ``Content-Length`` that is not one bounded run of digits or
    whose list elements differ (section 6.3; RFC 9110 section 8.6),
    ``Transfer-Encoding`` with ``Content-Length``, in HTTP/1.0, or without
    ``chunked`` last (section 6.1, 6.3), a malformed chunked body (section
    7.1), EOF inside a request;
  - **408**: the head did not arrive within ``header_timeout`` of its first
    byte, or the body within ``body_timeout`` (RFC 9110 section 15.5.9);
  - **413**: a body larger than ``max_body`` (RFC 9110 section 15.5.14);
  - **414**: a request line longer than :data:`MAX_LINE` (RFC 9110 15.5.15);
  - **417**: an expectation other than ``100-continue`` (RFC 9110 10.1.1);
  - **431**: a header line longer than :data:`MAX_LINE`, more than
    :data:`MAX_HEADERS` lines or more than :data:`MAX_HEAD_BYTES` in all
    (RFC 6585 section 5);
  - **501**: an unknown method or transfer coding (section 6.1);
  - **505**: a major version other than 1 (RFC 9110 section 15.6.6).

  Each refusal is counted in ``counters`` as ``http_<reason>`` (the reasons
  are listed in :data:`REFUSALS`); answered requests as ``http_requests``.
* Request bodies are read and discarded: ``Content-Length`` bodies and
  ``Transfer-Encoding: chunked`` bodies (section 7.1; extensions and trailers
  are skipped). A request carrying ``Expect: 100-continue`` and an acceptable
  body gets an interim ``100 Continue`` first.
* Persistence (section 9.3): HTTP/1.1 connections persist unless the request
  says ``Connection: close``; HTTP/1.0 ones close unless it says
  ``Connection: keep-alive``; the ``max_requests``-th response on a
  connection closes it. Requests are handled strictly one after the other, so
  pipelined requests are answered in order.
* Every response carries ``Date``, ``Server``, ``Content-Type`` and
  ``Content-Length``, plus ``Connection: close`` when the server will close
  (and ``Connection: keep-alive`` to an HTTP/1.0 client that asked for it).
  Responses are always labelled ``HTTP/1.1`` (RFC 9110 section 2.5).
* Time limits (:class:`~tcpstack.apps.limits.ServiceLimits`,
  :class:`~tcpstack.apps.limits.HttpLimits`): a connection that sends no
  first byte of a request for ``idle_timeout`` is closed silently; the head
  and body have total time budgets (408 above); a client that stops reading
  a response is reset after ``send_timeout``; a close that does not finish
  within ``close_timeout`` is a reset.
* When the server decides to close, it half-closes (sends FIN), keeps reading
  and dropping input for up to :data:`LINGER_SECONDS` (and
  :data:`LINGER_MAX_BYTES`), then closes, so a client's unread pipelined data
  does not turn into a reset that destroys the response (section 9.6).
* Static files are looked up by :func:`tcpstack.apps.static.open_beneath`:
  the decoded path (``urllib.parse.unquote``, query removed) is walked from
  a descriptor of the root one component at a time with ``O_NOFOLLOW``;
  symlinks are followed only while they stay inside the root, ``..`` never
  climbs above it, and a file swapped for a symlink during the lookup is
  refused. Refusals look exactly like a missing file (404). Only regular
  files are served; ``Content-Type`` comes from :mod:`mimetypes` (fallback
  ``application/octet-stream``) and ``Last-Modified`` from the file's mtime.
  Files are read synchronously in :data:`CHUNK_SIZE` pieces between drains,
  which is cheap for files in the page cache. No ranges, no conditional
  requests, no content coding.
"""

from __future__ import annotations

import asyncio
import email.utils
import html
import logging
import mimetypes
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Final
from urllib.parse import unquote

from tcpstack.apps import CLIENT_ERRORS, StreamReaderLike, StreamWriterLike
from tcpstack.apps.limits import (
    ConnectionGuard,
    HttpLimits,
    IdleTimeout,
    LimitExpired,
    ServiceLimits,
)
from tcpstack.apps.static import OpenedFile, open_beneath
from tcpstack.counters import Counters

logger = logging.getLogger("tcpstack.http")

MAX_LINE: Final = 8192
"""Longest request line, header line or chunk-size line accepted, in bytes."""

MAX_HEADERS: Final = 100
"""Most header (or trailer) lines accepted in one request."""

MAX_HEAD_BYTES: Final = 65536
"""Largest header section (request line and header lines, with their CRLFs)."""

MAX_LEADING_EMPTY_LINES: Final = 8
"""Empty lines tolerated before a request line (RFC 9112 section 2.2)."""

CHUNK_SIZE: Final = 65536
"""Bytes per write when streaming a body, and per read when dropping one."""

MAX_BYTES: Final = 10 * 1024**3
"""Largest ``N`` accepted by ``/bytes/N`` (10 GiB)."""

PATTERN_PERIOD: Final = 251
"""Period of the ``/bytes/N`` pattern: byte ``i`` of every body is ``i % 251``.

A prime period means a body that lost, repeated or reordered any chunk of a
power-of-two size no longer matches the pattern.
"""

LINGER_SECONDS: Final = 2.0
"""How long a closing connection keeps reading after its FIN (RFC 9112 section 9.6)."""

LINGER_MAX_BYTES: Final = 1 << 20
"""How much a closing connection reads and drops at most before giving up."""

ALLOWED_METHODS: Final = ("GET", "HEAD")

KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
"""Methods answered with 405 rather than 501 when not allowed."""

REFUSALS: Final = {
    "bad_request_line": HTTPStatus.BAD_REQUEST,
    "bad_target": HTTPStatus.BAD_REQUEST,
    "bad_version": HTTPStatus.BAD_REQUEST,
    "bad_header": HTTPStatus.BAD_REQUEST,
    "bad_host": HTTPStatus.BAD_REQUEST,
    "bad_content_length": HTTPStatus.BAD_REQUEST,
    "bad_transfer_encoding": HTTPStatus.BAD_REQUEST,
    "bad_chunk": HTTPStatus.BAD_REQUEST,
    "incomplete_head": HTTPStatus.BAD_REQUEST,
    "incomplete_body": HTTPStatus.BAD_REQUEST,
    "header_timeout": HTTPStatus.REQUEST_TIMEOUT,
    "body_timeout": HTTPStatus.REQUEST_TIMEOUT,
    "body_too_large": HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    "uri_too_long": HTTPStatus.REQUEST_URI_TOO_LONG,
    "expectation_failed": HTTPStatus.EXPECTATION_FAILED,
    "header_too_long": HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
    "too_many_headers": HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
    "headers_too_large": HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
    "unknown_method": HTTPStatus.NOT_IMPLEMENTED,
    "transfer_coding_not_implemented": HTTPStatus.NOT_IMPLEMENTED,
    "version_not_supported": HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
}
"""Every reason a request is refused (counted as ``http_<reason>``), with its status."""

_TOKEN_RE: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET_RE: Final = re.compile(rb"[\x21-\x7e]+")
_VERSION_RE: Final = re.compile(rb"HTTP/([0-9])\.([0-9])")
_FIELD_VALUE_RE: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_CHUNK_SIZE_RE: Final = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DECIMAL_RE: Final = re.compile(r"[0-9]{1,19}")
_SERVER_NAME_RE: Final = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
# RFC 3986 3.2.2/3.2.3 (host [":" port]) with the userinfo of 3.2.1 left out
# on purpose (RFC 9110 4.2.4): an IP-literal in brackets, or a reg-name /
# IPv4address made of unreserved, sub-delims and percent signs.
_AUTHORITY_RE: Final = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]{0,5})?"
)
_PATTERN_UNIT: Final = bytes(range(PATTERN_PERIOD))
_PATTERN_BLOCK: Final = _PATTERN_UNIT * (CHUNK_SIZE // PATTERN_PERIOD + 2)


def pattern_bytes(n: int, offset: int = 0) -> bytes:
    """Return ``n`` bytes of the ``/bytes/N`` pattern, starting at byte ``offset``.

    Byte ``i`` of the pattern is ``i % 251``, so the body of ``/bytes/N`` is
    ``pattern_bytes(N)`` and ``pattern_bytes(a + b) == pattern_bytes(a) +
    pattern_bytes(b, a)``.
    """
    if n < 0 or offset < 0:
        raise ValueError("n and offset must not be negative")
    start = offset % PATTERN_PERIOD
    if start + n <= len(_PATTERN_BLOCK):
        return _PATTERN_BLOCK[start : start + n]
    reps = (start + n) // PATTERN_PERIOD + 1
    return (_PATTERN_UNIT * reps)[start : start + n]


def iter_pattern(n: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield ``pattern_bytes(n)`` in pieces of at most ``chunk_size`` bytes."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    pos = 0
    while pos < n:
        size = min(chunk_size, n - pos)
        yield pattern_bytes(size, pos)
        pos += size




class _HttpError(Exception):
    """A refused request: its status (from :data:`REFUSALS`), then the connection closes."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status = REFUSALS[reason]
        self.detail = detail


@dataclass(slots=True)
class _Request:
    """A parsed request head (RFC 9112 section 2.1): request line and header fields."""

    method: str
    target: str
    version: tuple[int, int]
    headers: list[tuple[str, str]]

    def get_all(self, name: str) -> list[str]:
        """Every value of the (lower-case) field ``name``, in order."""
        return [value for key, value in self.headers if key == name]

    def tokens(self, name: str) -> set[str]:
        """The lower-cased comma-separated list elements of the field ``name``."""
        return {
            item.strip().lower()
            for value in self.get_all(name)
            for item in value.split(",")
            if item.strip()
        }


@dataclass(slots=True)
class _Framing:
    """How the request's body is delimited (RFC 9112 section 6.3)."""

    content_length: int = 0
    chunked: bool = False


async def _read_line(reader: StreamReaderLike, too_long: str, first: bytes = b"") -> bytes:
    """Read one line and strip its CRLF (or bare LF, RFC 9112 section 2.2).

    ``first`` is a byte of the line already read. A line longer than
    :data:`MAX_LINE` is refused with the reason ``too_long``;
    :class:`asyncio.IncompleteReadError` passes through at EOF.
    """
    if first == b"\n":
        return b""
    try:
        line = first + await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise _HttpError(too_long, "line too long") from None
    if len(line) > MAX_LINE:
        raise _HttpError(too_long, "line too long")
    line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line


async def _drop_exactly(reader: StreamReaderLike, n: int) -> None:
    """Read and discard exactly ``n`` bytes without holding them all at once."""
    while n > 0:
        data = await reader.read(min(n, CHUNK_SIZE))
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        n -= len(data)


def _parse_request_line(line: bytes) -> tuple[str, str, tuple[int, int]]:
    """Split ``method SP request-target SP HTTP-version`` (RFC 9112 section 3)."""
    parts = line.split(b" ")
    if len(parts) != 3:
        raise _HttpError("bad_request_line", "malformed request line")
    method, target, version = parts
    if not _TOKEN_RE.fullmatch(method):
        raise _HttpError("bad_request_line", "malformed method")
    if not _TARGET_RE.fullmatch(target):
        raise _HttpError("bad_target", "malformed request target")
    match = _VERSION_RE.fullmatch(version)
    if match is None:
        raise _HttpError("bad_version", "malformed HTTP version")
    major, minor = int(match[1]), int(match[2])
    if major != 1:
        raise _HttpError("version_not_supported", "only HTTP/1.x is supported")
    return method.decode("ascii"), target.decode("ascii"), (major, minor)


def _parse_field_line(line: bytes) -> tuple[str, str]:
    """Split ``field-name ":" OWS field-value OWS`` (RFC 9112 section 5)."""
    if line[:1] in (b" ", b"\t"):
        raise _HttpError("bad_header", "obsolete line folding")
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN_RE.fullmatch(name):
        raise _HttpError("bad_header", "malformed header line")
    value = value.strip(b" \t")
    if not _FIELD_VALUE_RE.fullmatch(value):
        raise _HttpError("bad_header", "invalid character in header value")
    return name.decode("ascii").lower(), value.decode("latin-1")


def _check_host(request: _Request) -> None:
    """RFC 9112 3.2: exactly one valid ``Host`` in HTTP/1.1, at most one in 1.0."""
    hosts = request.get_all("host")
    if len(hosts) > 1 or (request.version >= (1, 1) and not hosts):
        raise _HttpError("bad_host", "HTTP/1.1 needs exactly one Host")
    if hosts and not _AUTHORITY_RE.fullmatch(hosts[0]):
        raise _HttpError("bad_host", "malformed Host")


def _content_length(values: list[str], max_body: int) -> int:
    """The body length from the ``Content-Length`` field lines (RFC 9112 6.3, RFC 9110 8.6).

    Only a run of at most 19 digits is a length (no sign, no spaces, no hex);
    several lines or list elements must all carry the same value. A length
    above ``max_body`` is refused with 413 before any of the body is read.
    """
    items = [item.strip(" \t") for value in values for item in value.split(",")]
    if not all(_DECIMAL_RE.fullmatch(item) for item in items):
        raise _HttpError("bad_content_length", "malformed Content-Length")
    lengths = {int(item) for item in items}
    if len(lengths) != 1:
        raise _HttpError("bad_content_length", "conflicting Content-Length values")
    (length,) = lengths
    if length > max_body:
        raise _HttpError("body_too_large", f"request body over {max_body} bytes")
    return length


def _framing(request: _Request, max_body: int) -> _Framing:
    """Work out the body length from Transfer-Encoding / Content-Length (RFC 9112 6.1-6.3)."""
    transfer_encodings = request.get_all("transfer-encoding")
    content_lengths = request.get_all("content-length")
    if transfer_encodings:
        if content_lengths:
            raise _HttpError("bad_transfer_encoding",
                             "both Transfer-Encoding and Content-Length")
        if request.version < (1, 1):
            raise _HttpError("bad_transfer_encoding", "Transfer-Encoding in HTTP/1.0")
        codings = [
            item.strip(" \t").lower()
            for value in transfer_encodings
            for item in value.split(",")
            if item.strip(" \t")  # RFC 9110 5.6.1: empty list elements are ignored
        ]
        if not codings or codings[-1] != "chunked":
            raise _HttpError("bad_transfer_encoding", "chunked is not the final coding")
        if len(codings) != 1:
            raise _HttpError("transfer_coding_not_implemented", "unsupported transfer coding")
        return _Framing(chunked=True)
    if content_lengths:
        return _Framing(content_length=_content_length(content_lengths, max_body))
    return _Framing()


def _wants_keep_alive(request: _Request) -> bool:
    """Whether the client lets the connection persist (RFC 9112 section 9.3)."""
    options = request.tokens("connection")
    if "close" in options:
        return False
    if request.version >= (1, 1):
        return True
    return "keep-alive" in options


def _target_path(target: str) -> str:
    """The percent-decoded path of an origin- or absolute-form target (RFC 9112 3.2).

    The absolute form is parsed here rather than by :func:`urllib.parse.urlsplit`
    (which raises on inputs like ``http://[``): ``http`` or ``https``, ``://``,
    a non-empty authority without userinfo (RFC 9110 4.2.4), then the path.
    """
    if target.startswith("/"):
        raw = target
    else:
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise _HttpError("bad_target", "unsupported request target")
        end = len(rest)
        for delimiter in "/?#":
            index = rest.find(delimiter)
            if 0 <= index < end:
                end = index
        authority, raw = rest[:end], rest[end:]
        if not authority or not _AUTHORITY_RE.fullmatch(authority):
            raise _HttpError("bad_target", "malformed authority in request target")
        if not raw.startswith("/"):
            raw = "/" + raw
    raw = raw.split("?", 1)[0].split("#", 1)[0]
    return unquote(raw)


def _parse_count(text: str) -> int | None:
    """The ``N`` of ``/bytes/N`` if it is a decimal in ``[0, MAX_BYTES]``, else None."""
    if not _DECIMAL_RE.fullmatch(text):
        return None
    count = int(text)
    return count if count <= MAX_BYTES else None


class HttpService:
    """An HTTP/1.1 server for GET and HEAD, as an asyncio stream handler.

    ``www`` is an optional directory of static files (it must exist);
    ``server_name`` is sent in the ``Server`` header and shown on the root
    page. ``limits`` bound each connection's waits and set its keepalive,
    ``http`` bound each request (see :mod:`tcpstack.apps.limits`).
    ``counters`` (shared with other services if given) receives
    ``http_<reason>`` for every refusal and limit that fires and
    ``http_requests`` for every request head received. See the module
    docstring for the behaviour in full.
    """

    def __init__(
        self,
        www: Path | None = None,
        server_name: str = "tcpstack",
        *,
        limits: ServiceLimits | None = None,
        http: HttpLimits | None = None,
        counters: Counter[str] | None = None,
    ) -> None:
        if not _SERVER_NAME_RE.fullmatch(server_name):
            raise ValueError(f"server_name must be printable ASCII: {server_name!r}")
        self._root: Path | None = None
        if www is not None:
            root = Path(www).resolve()
            if not root.is_dir():
                raise NotADirectoryError(f"static root is not a directory: {www}")
            self._root = root
        self._server_name = server_name
        self.limits = limits if limits is not None else ServiceLimits()
        self.http = http if http is not None else HttpLimits()
        self.counters: Counter[str] = counters if counters is not None else Counters()
        self._root_page = self._render_root_page()

    @property
    def www(self) -> Path | None:
        """The resolved static root, or None when static files are off."""
        return self._root

    @property
    def server_name(self) -> str:
        """The ``Server`` header value."""
        return self._server_name

    async def __call__(self, reader: StreamReaderLike, writer: StreamWriterLike) -> None:
        """Serve requests on one connection until either side ends it or a limit does."""
        guard = ConnectionGuard("http", writer, self.limits, self.counters)
        peer = writer.get_extra_info("peername")
        try:
            guard.start()
            served = 0
            while True:
                served += 1
                if not await self._serve_one(reader, guard, peer,
                                             last=served >= self.http.max_requests):
                    break
            await self._linger(reader, guard)
        except IdleTimeout:
            logger.debug("http %s: idle for %ss, closing", peer, self.limits.idle_timeout)
        except CLIENT_ERRORS as exc:
            logger.debug("http %s: connection aborted: %r", peer, exc)
        finally:
            await guard.close()

    # -- one request ------------------------------------------------------

    async def _serve_one(
        self, reader: StreamReaderLike, guard: ConnectionGuard, peer: object, *, last: bool
    ) -> bool:
        """Read, answer and log one request; return whether to read another.

        Raises :class:`IdleTimeout` when no request starts within the idle timeout.
        """
        request: _Request | None = None
        try:
            request = await self._read_head(reader, guard)
            if request is None:
                return False
            self.counters["http_requests"] += 1
            path: str | None = None
            if request.method in ALLOWED_METHODS:
                path = _target_path(request.target)
            elif request.method not in KNOWN_METHODS:
                raise _HttpError("unknown_method", f"method {request.method} not implemented")
            keep_alive = _wants_keep_alive(request)
            if keep_alive and last:
                guard.count("max_requests")
                keep_alive = False
            await self._read_body(reader, guard, request)
        except _HttpError as err:
            self.counters[f"http_{err.reason}"] += 1
            head_only = request is not None and request.method == "HEAD"
            body = f"{err.status.value} {err.status.phrase}: {err.detail}\n".encode()
            await self._send(guard, err.status, body, "text/plain; charset=utf-8",
                             keep_alive=False, head_only=head_only)
            if request is None:
                logger.debug("http %s: bad request head (%s) -> %d",
                             peer, err.detail, err.status.value)
            else:
                self._log(peer, request, err.status, len(body))
            return False
        status, length, complete = await self._respond(guard, request, path, keep_alive)
        self._log(peer, request, status, length)
        return keep_alive and complete

    async def _read_head(
        self, reader: StreamReaderLike, guard: ConnectionGuard
    ) -> _Request | None:
        """Read a request line and header section (RFC 9112 section 2.1).

        Returns None on a clean EOF before any byte of a request. Waits at
        most ``idle_timeout`` for the first byte (then :class:`IdleTimeout`)
        and ``header_timeout`` from there for the rest of the head (then 408);
        raises :class:`_HttpError` for anything malformed or incomplete.
        """
        try:
            first = await guard.wait_input(reader.readexactly(1))
        except asyncio.IncompleteReadError:
            return None
        try:
            with guard.bound("header", self.http.header_timeout):
                request = await self._read_rest_of_head(reader, first)
        except asyncio.IncompleteReadError:
            raise _HttpError("incomplete_head", "EOF inside the request head") from None
        except LimitExpired:
            raise _HttpError("header_timeout", "request head too slow") from None
        _check_host(request)
        return request

    async def _read_rest_of_head(self, reader: StreamReaderLike, first: bytes) -> _Request:
        line = await _read_line(reader, "uri_too_long", first)
        for _ in range(MAX_LEADING_EMPTY_LINES):
            if line:
                break
            line = await _read_line(reader, "uri_too_long")
        if not line:
            raise _HttpError("bad_request_line", "too many empty lines")
        method, target, version = _parse_request_line(line)
        size = len(line) + 2
        headers: list[tuple[str, str]] = []
        while line := await _read_line(reader, "header_too_long"):
            size += len(line) + 2
            if size > MAX_HEAD_BYTES:
                raise _HttpError("headers_too_large", "header section too large")
            if len(headers) >= MAX_HEADERS:
                raise _HttpError("too_many_headers", "too many header lines")
            headers.append(_parse_field_line(line))
        return _Request(method, target, version, headers)

    async def _read_body(
        self, reader: StreamReaderLike, guard: ConnectionGuard, request: _Request
    ) -> None:
        """Read and drop the request body, answering ``Expect`` first (RFC 9110 10.1.1).

        The framing (and so a too-large ``Content-Length``) is checked before
        anything is read or a ``100 Continue`` is sent; the whole body must
        arrive within ``body_timeout``.
        """
        framing = _framing(request, self.http.max_body)
        has_body = framing.chunked or framing.content_length > 0
        expectations = request.tokens("expect")
        if expectations:
            if expectations != {"100-continue"}:
                raise _HttpError("expectation_failed", "unsupported expectation")
            if has_body and request.version >= (1, 1):
                guard.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await guard.drain()
        if not has_body:
            return
        try:
            with guard.bound("body", self.http.body_timeout):
                if framing.chunked:
                    await self._drop_chunked(reader)
                else:
                    await _drop_exactly(reader, framing.content_length)
        except asyncio.IncompleteReadError:
            raise _HttpError("incomplete_body", "EOF inside the request body") from None
        except LimitExpired:
            raise _HttpError("body_timeout", "request body too slow") from None

    async def _drop_chunked(self, reader: StreamReaderLike) -> None:
        """Read and drop a chunked body and its trailers (RFC 9112 section 7.1)."""
        total = 0
        while True:
            line = await _read_line(reader, "bad_chunk")
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if not _CHUNK_SIZE_RE.fullmatch(size_text):
                raise _HttpError("bad_chunk", "malformed chunk size")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > self.http.max_body:
                raise _HttpError("body_too_large",
                                 f"request body over {self.http.max_body} bytes")
            await _drop_exactly(reader, size)
            if await _read_line(reader, "bad_chunk"):
                raise _HttpError("bad_chunk", "chunk data too long")
        for _ in range(MAX_HEADERS + 1):
            if not await _read_line(reader, "bad_chunk"):
                return
        raise _HttpError("bad_chunk", "too many trailer lines")

    async def _respond(
        self, guard: ConnectionGuard, request: _Request, path: str | None, keep_alive: bool
    ) -> tuple[HTTPStatus, int, bool]:
        """Route and answer a well-framed request (``path`` is None for a 405).

        Returns the status, the body length announced, and whether the whole
        response went out (False if a file shrank while it was being sent).
        """
        head_only = request.method == "HEAD"
        if path is None:
            status = HTTPStatus.METHOD_NOT_ALLOWED
            body = f"{status.value} {status.phrase}: {request.method}\n".encode()
            await self._send(guard, status, body, "text/plain; charset=utf-8",
                             keep_alive=keep_alive, head_only=False,
                             extra=[("Allow", ", ".join(ALLOWED_METHODS))],
                             version=request.version)
            return status, len(body), True

        if path.startswith("/bytes/"):
            count = _parse_count(path[len("/bytes/") :])
            if count is None:
                body = f"400 Bad Request: N must be an integer 0..{MAX_BYTES}\n".encode()
                await self._send(guard, HTTPStatus.BAD_REQUEST, body,
                                 "text/plain; charset=utf-8", keep_alive=keep_alive,
                                 head_only=head_only, version=request.version)
                return HTTPStatus.BAD_REQUEST, len(body), True
            await self._send_pattern(guard, count, keep_alive=keep_alive,
                                     head_only=head_only, version=request.version)
            return HTTPStatus.OK, count, True

        opened = open_beneath(self._root, path) if self._root is not None else None
        if opened is not None:
            size, complete = await self._send_file(guard, opened, keep_alive=keep_alive,
                                                   head_only=head_only,
                                                   version=request.version)
            return HTTPStatus.OK, size, complete
        if path == "/":
            await self._send(guard, HTTPStatus.OK, self._root_page,
                             "text/html; charset=utf-8", keep_alive=keep_alive,
                             head_only=head_only, version=request.version)
            return HTTPStatus.OK, len(self._root_page), True
        body = b"404 Not Found\n"
        await self._send(guard, HTTPStatus.NOT_FOUND, body, "text/plain; charset=utf-8",
                         keep_alive=keep_alive, head_only=head_only, version=request.version)
        return HTTPStatus.NOT_FOUND, len(body), True

    # -- static files -----------------------------------------------------

    async def _send_file(
        self,
        guard: ConnectionGuard,
        opened: OpenedFile,
        *,
        keep_alive: bool,
        head_only: bool,
        version: tuple[int, int],
    ) -> tuple[int, bool]:
        """Stream an opened regular file (and close it).

        Returns the announced length and whether all of it was sent.
        """
        fd = opened.fd
        try:
            size = opened.info.st_size
            content_type = mimetypes.guess_type(opened.name)[0] or "application/octet-stream"
            modified = email.utils.formatdate(opened.info.st_mtime, usegmt=True)
            head = self._head(HTTPStatus.OK, content_type, size, keep_alive=keep_alive,
                              version=version, extra=[("Last-Modified", modified)])
            guard.writer.write(head)
            await guard.drain()
            if head_only:
                return size, True
            remaining = size
            while remaining > 0:
                data = os.read(fd, min(CHUNK_SIZE, remaining))
                if not data:
                    logger.debug("http: %s shrank while being sent", opened.name)
                    return size, False
                guard.writer.write(data)
                await guard.drain()
                remaining -= len(data)
            return size, True
        finally:
            os.close(fd)

    # -- response helpers -------------------------------------------------

    def _head(
        self,
        status: HTTPStatus,
        content_type: str,
        length: int,
        *,
        keep_alive: bool,
        version: tuple[int, int] = (1, 1),
        extra: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """Build a status line and header section (RFC 9112 section 4)."""
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            f"Server: {self._server_name}",
            f"Content-Type: {content_type}",
            f"Content-Length: {length}",
        ]
        lines.extend(f"{name}: {value}" for name, value in extra)
        if not keep_alive:
            lines.append("Connection: close")
        elif version < (1, 1):
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send(
        self,
        guard: ConnectionGuard,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        *,
        keep_alive: bool,
        head_only: bool,
        version: tuple[int, int] = (1, 1),
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Send a response whose body is already in memory."""
        head = self._head(status, content_type, len(body), keep_alive=keep_alive,
                          version=version, extra=extra)
        guard.writer.write(head if head_only else head + body)
        await guard.drain()

    async def _send_pattern(
        self,
        guard: ConnectionGuard,
        count: int,
        *,
        keep_alive: bool,
        head_only: bool,
        version: tuple[int, int],
    ) -> None:
        """Send ``/bytes/N``: ``count`` pattern bytes, one drained chunk at a time."""
        head = self._head(HTTPStatus.OK, "application/octet-stream", count,
                          keep_alive=keep_alive, version=version)
        guard.writer.write(head)
        await guard.drain()
        if head_only:
            return
        for chunk in iter_pattern(count):
            guard.writer.write(chunk)
            await guard.drain()

    async def _linger(self, reader: StreamReaderLike, guard: ConnectionGuard) -> None:
        """Half-close, then drop input for a while before the close (RFC 9112 9.6)."""
        writer = guard.writer
        if not writer.can_write_eof():
            return
        try:
            await guard.drain()
            writer.write_eof()
            dropped = 0
            async with asyncio.timeout(LINGER_SECONDS):
                while dropped < LINGER_MAX_BYTES:
                    data = await reader.read(CHUNK_SIZE)
                    if not data:
                        break
                    dropped += len(data)
        except CLIENT_ERRORS:
            pass


    def _log(self, peer: object, request: _Request, status: HTTPStatus, length: int) -> None:
        logger.debug('http %s: "%s %s HTTP/%d.%d" -> %d, %d bytes', peer, request.method,
                     request.target, request.version[0], request.version[1], status.value,
                     length)

    def _render_root_page(self) -> bytes:
        name = html.escape(self._server_name)
        static = (
            "<li><code>/&lt;path&gt;</code> &ndash; static files from the web root</li>"
            if self._root is not None
            else ""
        )
        page = f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{name}</title></head>
<body>
<h1>{name}</h1>
<p>Served by tcpstack, a userspace TCP/IP stack in Python.</p>
<ul>
<li><code>/</code> &ndash; this page</li>
<li><code>/bytes/N</code> &ndash; N bytes (0 &le; N &le; {MAX_BYTES}) of a fixed pattern,
application/octet-stream</li>
{static}
</ul>
</body>
</html>
"""
        return page.encode("utf-8")
