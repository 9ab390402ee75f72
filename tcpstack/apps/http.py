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
  ``Allow: GET, HEAD`` (RFC 9110 section 15.5.6); any other syntactically
  valid method token gets **501** (RFC 9110 section 15.6.2). Both keep the
  connection open, since the request's body was read and dropped.
* Syntax errors -- a malformed request line or header line, a bad version, a
  line longer than :data:`MAX_LINE`, more than :data:`MAX_HEADERS` header
  lines, obsolete line folding (section 5.2), whitespace before a colon
  (section 5.1), a missing or repeated ``Host`` in HTTP/1.1 (section 3.2),
  conflicting ``Content-Length`` values or both ``Content-Length`` and
  ``Transfer-Encoding`` (section 6.3) -- get **400** and the connection is
  closed. (414/431 are not used; an overlong line is just a bad request.)
  A major version other than 1 gets **505**.
* Request bodies are read and discarded: ``Content-Length`` bodies and
  ``Transfer-Encoding: chunked`` bodies (section 7.1; extensions and trailers
  are skipped) are both supported. Any other transfer coding gets **501**; a
  chunked coding that is not the final one gets **400**, as does any
  ``Transfer-Encoding`` in an HTTP/1.0 request (section 6.1). A request
  carrying ``Expect: 100-continue`` and a body gets an interim ``100
  Continue``; any other expectation gets **417** (RFC 9110 section 10.1.1).
* Persistence (section 9.3): HTTP/1.1 connections persist unless the request
  says ``Connection: close``; HTTP/1.0 ones close unless it says
  ``Connection: keep-alive``. Requests are handled strictly one after the
  other, so pipelined requests are answered in order.
* Every response carries ``Date``, ``Server``, ``Content-Type`` and
  ``Content-Length``, plus ``Connection: close`` when the server will close
  (and ``Connection: keep-alive`` to an HTTP/1.0 client that asked for it).
  Responses are always labelled ``HTTP/1.1`` (RFC 9110 section 2.5).
* A connection idle for ``idle_timeout`` seconds between requests is closed
  silently; one that stalls half-way through a request head gets **408**.
* When the server decides to close, it half-closes (sends FIN), keeps reading
  and dropping input for up to :data:`LINGER_SECONDS`, then closes, so a
  client's unread pipelined data does not turn into a reset that destroys the
  response (section 9.6).
* Static files: the decoded path (``urllib.parse.unquote``, query removed)
  may not contain ``..`` segments or NUL; the result is ``resolve()``-d and
  must stay inside ``www.resolve()``, so symlinks out of the root are refused.
  Refusals look exactly like a missing file (404). Only regular files are
  served; ``Content-Type`` comes from :mod:`mimetypes` (fallback
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
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from tcpstack.apps import CLIENT_ERRORS, StreamReaderLike, StreamWriterLike, close_writer

logger = logging.getLogger("tcpstack.http")

MAX_LINE: Final = 8192
"""Longest request line, header line or chunk-size line accepted, in bytes."""

MAX_HEADERS: Final = 100
"""Most header (or trailer) lines accepted in one request."""

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

_TOKEN_RE: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET_RE: Final = re.compile(rb"[\x21-\x7e]+")
_VERSION_RE: Final = re.compile(rb"HTTP/([0-9])\.([0-9])")
_FIELD_VALUE_RE: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_CHUNK_SIZE_RE: Final = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DECIMAL_RE: Final = re.compile(r"[0-9]{1,19}")
_SERVER_NAME_RE: Final = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")

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
    """A request that gets an error response, after which the connection closes."""

    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _IdleTimeout(Exception):
    """The peer sent nothing for a whole idle period between requests."""


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


async def _read_line(reader: StreamReaderLike) -> bytes:
    """Read one line and strip its CRLF (or bare LF, RFC 9112 section 2.2).

    Raises :class:`_HttpError` (400) for a line longer than :data:`MAX_LINE`,
    and lets :class:`asyncio.IncompleteReadError` through at EOF.
    """
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise _HttpError(HTTPStatus.BAD_REQUEST, "line too long") from None
    if len(line) > MAX_LINE:
        raise _HttpError(HTTPStatus.BAD_REQUEST, "line too long")
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
        raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    if not _TOKEN_RE.fullmatch(method):
        raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed method")
    if not _TARGET_RE.fullmatch(target):
        raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed request target")
    match = _VERSION_RE.fullmatch(version)
    if match is None:
        raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed HTTP version")
    major, minor = int(match[1]), int(match[2])
    if major != 1:
        raise _HttpError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.x is supported")
    return method.decode("ascii"), target.decode("ascii"), (major, minor)


def _parse_field_line(line: bytes) -> tuple[str, str]:
    """Split ``field-name ":" OWS field-value OWS`` (RFC 9112 section 5)."""
    if line[:1] in (b" ", b"\t"):
        raise _HttpError(HTTPStatus.BAD_REQUEST, "obsolete line folding")
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN_RE.fullmatch(name):
        raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed header line")
    value = value.strip(b" \t")
    if not _FIELD_VALUE_RE.fullmatch(value):
        raise _HttpError(HTTPStatus.BAD_REQUEST, "invalid character in header value")
    return name.decode("ascii").lower(), value.decode("latin-1")


def _framing(request: _Request) -> _Framing:
    """Work out the body length from Transfer-Encoding / Content-Length (RFC 9112 6.1-6.3)."""
    transfer_encodings = request.get_all("transfer-encoding")
    content_lengths = request.get_all("content-length")
    if transfer_encodings:
        if content_lengths:
            raise _HttpError(
                HTTPStatus.BAD_REQUEST, "both Transfer-Encoding and Content-Length"
            )
        if request.version < (1, 1):
            raise _HttpError(HTTPStatus.BAD_REQUEST, "Transfer-Encoding in HTTP/1.0")
        codings = [
            item.strip().lower() for value in transfer_encodings for item in value.split(",")
        ]
        if not codings or codings[-1] != "chunked":
            raise _HttpError(HTTPStatus.BAD_REQUEST, "chunked is not the final coding")
        if len(codings) != 1:
            raise _HttpError(HTTPStatus.NOT_IMPLEMENTED, "unsupported transfer coding")
        return _Framing(chunked=True)
    if content_lengths:
        values = {item.strip() for value in content_lengths for item in value.split(",")}
        if len(values) != 1:
            raise _HttpError(HTTPStatus.BAD_REQUEST, "conflicting Content-Length values")
        (value,) = values
        if not _DECIMAL_RE.fullmatch(value):
            raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed Content-Length")
        return _Framing(content_length=int(value))
    return _Framing()


def _wants_keep_alive(request: _Request) -> bool:
    """Whether the connection persists after this request (RFC 9112 section 9.3)."""
    options = request.tokens("connection")
    if "close" in options:
        return False
    if request.version >= (1, 1):
        return True
    return "keep-alive" in options


def _target_path(target: str) -> str:
    """The percent-decoded path of an origin- or absolute-form target (RFC 9112 3.2)."""
    if target.startswith("/"):
        raw = target
    elif "://" in target:
        parts = urlsplit(target)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise _HttpError(HTTPStatus.BAD_REQUEST, "unsupported request target")
        raw = parts.path or "/"
    else:
        raise _HttpError(HTTPStatus.BAD_REQUEST, "unsupported request target")
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
    page; ``idle_timeout`` (seconds, ``None`` for never) bounds the wait for
    the next request head. See the module docstring for the behaviour in full.
    """

    def __init__(
        self,
        www: Path | None = None,
        server_name: str = "tcpstack",
        *,
        idle_timeout: float | None = 60.0,
    ) -> None:
        if not _SERVER_NAME_RE.fullmatch(server_name):
            raise ValueError(f"server_name must be printable ASCII: {server_name!r}")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive or None")
        self._root: Path | None = None
        if www is not None:
            root = Path(www).resolve()
            if not root.is_dir():
                raise NotADirectoryError(f"static root is not a directory: {www}")
            self._root = root
        self._server_name = server_name
        self._idle_timeout = idle_timeout
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
        """Serve requests on one connection until either side ends it."""
        peer = writer.get_extra_info("peername")
        try:
            while await self._serve_one(reader, writer, peer):
                pass
            await self._linger(reader, writer)
        except CLIENT_ERRORS as exc:
            logger.debug("http %s: connection aborted: %r", peer, exc)
        finally:
            await close_writer(writer)

    # -- one request ------------------------------------------------------

    async def _serve_one(
        self, reader: StreamReaderLike, writer: StreamWriterLike, peer: object
    ) -> bool:
        """Read, answer and log one request; return whether to read another."""
        request: _Request | None = None
        try:
            request = await self._read_head(reader)
            if request is None:
                return False
            keep_alive = _wants_keep_alive(request)
            await self._read_body(reader, writer, request)
        except _HttpError as err:
            head_only = request is not None and request.method == "HEAD"
            body = f"{err.status.value} {err.status.phrase}: {err.detail}\n".encode()
            await self._send(writer, err.status, body, "text/plain; charset=utf-8",
                             keep_alive=False, head_only=head_only)
            if request is None:
                logger.debug("http %s: bad request head (%s) -> %d",
                             peer, err.detail, err.status.value)
            else:
                self._log(peer, request, err.status, len(body))
            return False
        except _IdleTimeout:
            logger.debug("http %s: idle timeout, closing", peer)
            return False
        status, length, complete = await self._respond(writer, request, keep_alive)
        self._log(peer, request, status, length)
        return keep_alive and complete

    async def _read_head(self, reader: StreamReaderLike) -> _Request | None:
        """Read a request line and header section (RFC 9112 section 2.1).

        Returns None on a clean EOF before any byte of a request. Raises
        :class:`_IdleTimeout` when nothing arrives for ``idle_timeout`` and
        :class:`_HttpError` for anything malformed, incomplete or too slow.
        """
        started = False
        try:
            async with asyncio.timeout(self._idle_timeout):
                line = b""
                for _ in range(MAX_LEADING_EMPTY_LINES + 1):
                    line = await _read_line(reader)
                    started = True
                    if line:
                        break
                else:
                    raise _HttpError(HTTPStatus.BAD_REQUEST, "too many empty lines")
                method, target, version = _parse_request_line(line)
                headers: list[tuple[str, str]] = []
                while line := await _read_line(reader):
                    if len(headers) >= MAX_HEADERS:
                        raise _HttpError(HTTPStatus.BAD_REQUEST, "too many header lines")
                    headers.append(_parse_field_line(line))
        except asyncio.IncompleteReadError as exc:
            if not started and not exc.partial:
                return None
            raise _HttpError(HTTPStatus.BAD_REQUEST, "incomplete request head") from None
        except TimeoutError:
            if not started:
                raise _IdleTimeout from None
            raise _HttpError(HTTPStatus.REQUEST_TIMEOUT, "request head too slow") from None
        request = _Request(method, target, version, headers)
        hosts = request.get_all("host")
        if len(hosts) > 1 or (version >= (1, 1) and not hosts):
            raise _HttpError(HTTPStatus.BAD_REQUEST, "HTTP/1.1 needs exactly one Host")
        return request

    async def _read_body(
        self, reader: StreamReaderLike, writer: StreamWriterLike, request: _Request
    ) -> None:
        """Read and drop the request body, answering ``Expect`` first (RFC 9110 10.1.1)."""
        framing = _framing(request)
        has_body = framing.chunked or framing.content_length > 0
        expectations = request.tokens("expect")
        if expectations:
            if expectations != {"100-continue"}:
                raise _HttpError(HTTPStatus.EXPECTATION_FAILED, "unsupported expectation")
            if has_body and request.version >= (1, 1):
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await writer.drain()
        if framing.chunked:
            await self._drop_chunked(reader)
        else:
            await _drop_exactly(reader, framing.content_length)

    async def _drop_chunked(self, reader: StreamReaderLike) -> None:
        """Read and drop a chunked body and its trailers (RFC 9112 section 7.1)."""
        try:
            while True:
                line = await _read_line(reader)
                size_text = line.split(b";", 1)[0].strip(b" \t")
                if not _CHUNK_SIZE_RE.fullmatch(size_text):
                    raise _HttpError(HTTPStatus.BAD_REQUEST, "malformed chunk size")
                size = int(size_text, 16)
                if size == 0:
                    break
                await _drop_exactly(reader, size)
                if await _read_line(reader):
                    raise _HttpError(HTTPStatus.BAD_REQUEST, "chunk data too long")
            for _ in range(MAX_HEADERS + 1):
                if not await _read_line(reader):
                    return
            raise _HttpError(HTTPStatus.BAD_REQUEST, "too many trailer lines")
        except asyncio.IncompleteReadError:
            raise _HttpError(HTTPStatus.BAD_REQUEST, "incomplete chunked body") from None

    async def _respond(
        self, writer: StreamWriterLike, request: _Request, keep_alive: bool
    ) -> tuple[HTTPStatus, int, bool]:
        """Route and answer a well-framed request.

        Returns the status, the body length announced, and whether the whole
        response went out (False if a file shrank while it was being sent).
        """
        head_only = request.method == "HEAD"
        if request.method not in ALLOWED_METHODS:
            if request.method in KNOWN_METHODS:
                status = HTTPStatus.METHOD_NOT_ALLOWED
                extra = [("Allow", ", ".join(ALLOWED_METHODS))]
            else:
                status = HTTPStatus.NOT_IMPLEMENTED
                extra = []
            body = f"{status.value} {status.phrase}: {request.method}\n".encode()
            await self._send(writer, status, body, "text/plain; charset=utf-8",
                             keep_alive=keep_alive, head_only=False, extra=extra,
                             version=request.version)
            return status, len(body), True
        try:
            path = _target_path(request.target)
        except _HttpError as err:
            body = f"{err.status.value} {err.status.phrase}: {err.detail}\n".encode()
            await self._send(writer, err.status, body, "text/plain; charset=utf-8",
                             keep_alive=False, head_only=head_only)
            return err.status, len(body), False

        if path.startswith("/bytes/"):
            count = _parse_count(path[len("/bytes/") :])
            if count is None:
                body = f"400 Bad Request: N must be an integer 0..{MAX_BYTES}\n".encode()
                await self._send(writer, HTTPStatus.BAD_REQUEST, body,
                                 "text/plain; charset=utf-8", keep_alive=keep_alive,
                                 head_only=head_only, version=request.version)
                return HTTPStatus.BAD_REQUEST, len(body), True
            await self._send_pattern(writer, count, keep_alive=keep_alive,
                                     head_only=head_only, version=request.version)
            return HTTPStatus.OK, count, True

        static = self._resolve_static(path) if self._root is not None else None
        if static is not None:
            sent = await self._send_file(writer, static, keep_alive=keep_alive,
                                         head_only=head_only, version=request.version)
            if sent is not None:
                return HTTPStatus.OK, sent[0], sent[1]
        if path == "/":
            await self._send(writer, HTTPStatus.OK, self._root_page,
                             "text/html; charset=utf-8", keep_alive=keep_alive,
                             head_only=head_only, version=request.version)
            return HTTPStatus.OK, len(self._root_page), True
        body = b"404 Not Found\n"
        await self._send(writer, HTTPStatus.NOT_FOUND, body, "text/plain; charset=utf-8",
                         keep_alive=keep_alive, head_only=head_only, version=request.version)
        return HTTPStatus.NOT_FOUND, len(body), True

    # -- static files -----------------------------------------------------

    def _resolve_static(self, path: str) -> Path | None:
        """Map a decoded URL path to a regular file inside the static root, or None."""
        root = self._root
        if root is None or "\x00" in path:
            return None
        relative = path.lstrip("/")
        if any(segment == ".." for segment in relative.split("/")):
            return None
        try:
            resolved = (root / relative).resolve(strict=True)
            if not resolved.is_relative_to(root):
                return None
            if resolved.is_dir():
                resolved = (resolved / "index.html").resolve(strict=True)
                if not resolved.is_relative_to(root):
                    return None
            if not resolved.is_file():
                return None
        except (OSError, RuntimeError, ValueError):
            return None
        return resolved

    async def _send_file(
        self,
        writer: StreamWriterLike,
        path: Path,
        *,
        keep_alive: bool,
        head_only: bool,
        version: tuple[int, int],
    ) -> tuple[int, bool] | None:
        """Stream a regular file; None if it cannot be opened (the caller sends 404).

        Returns the announced length and whether all of it was sent.
        """
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            size = info.st_size
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            extra = [("Last-Modified", email.utils.formatdate(info.st_mtime, usegmt=True))]
            head = self._head(HTTPStatus.OK, content_type, size, keep_alive=keep_alive,
                              version=version, extra=extra)
            writer.write(head)
            await writer.drain()
            if head_only:
                return size, True
            remaining = size
            while remaining > 0:
                data = os.read(fd, min(CHUNK_SIZE, remaining))
                if not data:
                    logger.debug("http: %s shrank while being sent", path)
                    return size, False
                writer.write(data)
                await writer.drain()
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
        writer: StreamWriterLike,
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
        writer.write(head if head_only else head + body)
        await writer.drain()

    async def _send_pattern(
        self,
        writer: StreamWriterLike,
        count: int,
        *,
        keep_alive: bool,
        head_only: bool,
        version: tuple[int, int],
    ) -> None:
        """Send ``/bytes/N``: ``count`` pattern bytes, one drained chunk at a time."""
        head = self._head(HTTPStatus.OK, "application/octet-stream", count,
                          keep_alive=keep_alive, version=version)
        writer.write(head)
        await writer.drain()
        if head_only:
            return
        for chunk in iter_pattern(count):
            writer.write(chunk)
            await writer.drain()

    async def _linger(self, reader: StreamReaderLike, writer: StreamWriterLike) -> None:
        """Half-close, then drop input for a while before the close (RFC 9112 9.6)."""
        if not writer.can_write_eof():
            return
        try:
            await writer.drain()
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
