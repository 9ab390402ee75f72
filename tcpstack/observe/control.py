"""The daemon's local control socket, and the ``tcpstack ss`` / ``tcpstack trace`` clients.

The daemon listens on a UNIX stream socket (default :func:`default_socket_path`:
``/run/tcpstack/IFACE.sock`` for root), created before privileges are dropped
and with mode 0600, so only its owner (root, normally) may connect. The protocol
is JSON lines: the client sends one request object, the daemon answers with one
object (``ss``, ``detail``, ``counters``) or, for ``trace``, with a first object
and then one ladder per line for as long as the client stays:

* ``{"cmd": "ss", "state": "established", "port": 80, "listening": true}`` ->
  ``{"ok": true, "rows": [...], "listeners": [...], "observing": "full"}``
* ``{"cmd": "detail", "address": "10.0.0.1:40000"}`` -> ``{"ok": true, "rows": [...]}``
* ``{"cmd": "counters"}`` -> ``{"ok": true, "counters": {...}}``
* ``{"cmd": "trace"}`` -> ``{"ok": true, ...}`` then ladders (see
  :mod:`tcpstack.observe.ladder`). While a trace client is attached the daemon
  observes every packet (it switches back when the last one leaves, unless
  ``--trace-handshakes`` or another flag keeps it on). A client that reads too
  slowly loses ladders, and is told how many (``{"type": "dropped", "count": N}``).

Errors are ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TextIO

from tcpstack.observe import table
from tcpstack.observe.core import Observatory
from tcpstack.observe.ladder import Ladder, render_json, render_text
from tcpstack.stack import Stack

log = logging.getLogger("tcpstack.control")

TRACE_QUEUE: Final = 1000
"""Ladders buffered per trace client before newer ones are dropped."""

MAX_REQUEST: Final = 4096


class ControlError(Exception):
    """The control socket cannot be set up or reached (one-line message)."""


def _netns_suffix() -> str:
    """``""`` in the machine's own network namespace, else ``"@netns-INODE"``.

    Interface names are per namespace: daemons in two namespaces may both own a
    ``tcpstack0``, and each needs its own socket. ``tcpstack ss`` run in the same
    namespace (``ip netns exec NS tcpstack ss``) computes the same name."""
    try:
        mine = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return ""  # no /proc: nothing to tell namespaces apart by
    try:
        init = os.stat("/proc/1/ns/net").st_ino
    except OSError:
        init = None  # PID 1's namespace is hidden (a container): always qualify
    return "" if mine == init else f"@netns-{mine}"


def default_socket_path(interface: str) -> Path:
    """Where the daemon for ``interface`` listens unless told otherwise."""
    name = f"{interface}{_netns_suffix()}.sock"
    if os.geteuid() == 0:
        return Path("/run/tcpstack") / name
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "tcpstack" / name
    return Path(f"/tmp/tcpstack-{os.geteuid()}") / name


def bind_socket(path: Path) -> socket.socket:
    """Create the listening socket (before privileges are dropped).

    The directory is created owner-only if missing; a stale socket file (nobody
    answers on it) is replaced; a live one is an error: another daemon uses it.
    """
    parent = path.parent
    try:
        if not parent.exists():
            parent.mkdir(mode=0o700, parents=True)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise ControlError(f"{path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # stale: left by a daemon that died
            else:
                raise ControlError(f"control socket {path} is in use by another daemon")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
        return sock
    except OSError as e:
        raise ControlError(f"cannot create control socket {path}: {e.strerror or e}") from None


class ControlServer:
    """Answers control requests for ``stack`` (with ``observatory`` if given).

    ``clock`` is the stack's clock (the loop's ``time``). ``keep_packets`` says
    whether the daemon observes every packet anyway (then trace clients need not
    switch it on or off).
    """

    def __init__(self, stack: Stack, observatory: Observatory, clock: Callable[[], float],
                 *, keep_packets: bool = False, keep_ladders: bool = False) -> None:
        self.stack = stack
        self.observatory = observatory
        self.clock = clock
        self.keep_packets = keep_packets
        self.keep_ladders = keep_ladders
        self.path: Path | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tracers: set[_Tracer] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, sock: socket.socket, path: Path) -> None:
        self.path = path
        self._server = await asyncio.start_unix_server(self._handle, sock=sock)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for tracer in list(self._tracers):
                tracer.writer.close()
            for task in list(self._handlers):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None

    # ------------------------------------------------------------ requests

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), 10.0)
            except (TimeoutError, ValueError, ConnectionError):
                return
            if len(line) > MAX_REQUEST:
                await _send(writer, {"ok": False, "error": "request too long"})
                return
            try:
                request = json.loads(line or b"{}")
                if not isinstance(request, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                await _send(writer, {"ok": False, "error": f"bad request: {e}"})
                return
            if request.get("cmd") == "trace":
                await self._trace(reader, writer, request)
                return
            try:
                answer = self.answer(request)
            except (ValueError, TypeError) as e:
                answer = {"ok": False, "error": str(e)}
            await _send(writer, answer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """The reply to a request other than ``trace``."""
        cmd = request.get("cmd")
        now = self.clock()
        obs = self.observatory
        mode = "full" if obs.packets else "light"
        if cmd == "ss":
            rows = table.rows(self.stack, obs, now, state=request.get("state"),
                              port=_opt_int(request, "port"), sport=_opt_int(request, "sport"),
                              dport=_opt_int(request, "dport"),
                              address=request.get("address"))
            out: dict[str, Any] = {"ok": True, "observing": mode, "rows": rows}
            if request.get("listening"):
                out["listeners"] = table.listeners(self.stack)
            return out
        if cmd == "detail":
            address = request.get("address")
            if not isinstance(address, str):
                raise ValueError("detail needs an address IP:PORT")
            return {"ok": True, "observing": mode,
                    "rows": table.detail(self.stack, obs, now, address)}
        if cmd == "counters":
            return {"ok": True, "counters": dict(sorted(self.stack.counters.items()))}
        raise ValueError(f"unknown command {cmd!r} (ss, detail, counters, trace)")

    async def _trace(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: dict[str, Any]) -> None:
        tracer = _Tracer(writer)
        self._tracers.add(tracer)
        obs = self.observatory
        obs.enable_ladders()
        obs.on_ladder.append(tracer.push)
        if not obs.packets:
            obs.set_packets(True)
        log.info("trace client attached (%d now)", len(self._tracers))
        try:
            await _send(writer, {"ok": True, "observing": "full",
                                 "note": "connections opened from now on are traced"})
            closed = asyncio.ensure_future(reader.read(1))  # EOF when the client leaves
            while not closed.done():
                getter = asyncio.ensure_future(tracer.queue.get())
                done, _ = await asyncio.wait({getter, closed},
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                doc = getter.result()
                if tracer.dropped:
                    writer.write(render_json({"type": "dropped",
                                              "count": tracer.dropped}).encode() + b"\n")
                    tracer.dropped = 0
                writer.write(render_json(doc).encode() + b"\n")
                await writer.drain()
            closed.cancel()
        finally:
            self._tracers.discard(tracer)
            log.info("trace client left (%d now)", len(self._tracers))
            with contextlib.suppress(ValueError):
                obs.on_ladder.remove(tracer.push)
            if not self._tracers:
                if not self.keep_ladders:
                    obs.disable_ladders()
                if not self.keep_packets and obs.packets:
                    obs.set_packets(False)


class _Tracer:
    __slots__ = ("dropped", "queue", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.queue: asyncio.Queue[Ladder] = asyncio.Queue(TRACE_QUEUE)
        self.dropped = 0

    def push(self, doc: Ladder) -> None:
        try:
            self.queue.put_nowait(doc)
        except asyncio.QueueFull:
            self.dropped += 1


def _opt_int(request: dict[str, Any], name: str) -> int | None:
    value = request.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer")
    return value


async def _send(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    writer.write(json.dumps(obj).encode() + b"\n")
    await writer.drain()


# --------------------------------------------------------------------- clients


def _connect(path: Path, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except FileNotFoundError:
        sock.close()
        raise ControlError(f"no daemon: {path} does not exist (is tcpstack serve running "
                           "with this --interface, or give --socket)") from None
    except PermissionError:
        sock.close()
        raise ControlError(f"permission denied on {path} (the control socket is the "
                           "daemon owner's only: run as root)") from None
    except OSError as e:
        sock.close()
        if e.errno == errno.ECONNREFUSED:
            raise ControlError(f"no daemon answers on {path}") from None
        raise ControlError(f"cannot connect to {path}: {e.strerror or e}") from None
    return sock


def request(path: Path, req: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request, return the daemon's answer; :class:`ControlError` on failure."""
    sock = _connect(path, timeout)
    try:
        sock.sendall(json.dumps(req).encode() + b"\n")
        f = sock.makefile("rb")
        line = f.readline()
    except OSError as e:
        raise ControlError(f"control socket {path}: {e}") from None
    finally:
        sock.close()
    if not line:
        raise ControlError(f"the daemon closed {path} without an answer")
    answer: dict[str, Any] = json.loads(line)
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "request failed")))
    return answer


def trace(path: Path, out: TextIO, *, as_json: bool = False, count: int = 0,
          duration: float = 0.0) -> int:
    """Print ladders from the daemon until interrupted, ``count`` ladders (0: no
    limit) or ``duration`` seconds (0: no limit). Returns how many were printed."""
    sock = _connect(path, 5.0)
    deadline = time.monotonic() + duration if duration > 0 else None
    printed = 0
    try:
        sock.sendall(b'{"cmd": "trace"}\n')
        f = sock.makefile("rb")
        first = f.readline()
        if not first or not json.loads(first).get("ok"):
            raise ControlError("the daemon refused to trace")
        if not as_json:
            print(f"tracing {path}: ladders appear as connections open and close "
                  "(Ctrl-C to stop)", file=sys.stderr, flush=True)
        while True:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
            else:
                sock.settimeout(None)
            line = f.readline()
            if not line:
                break
            doc = json.loads(line)
            if doc.get("type") == "dropped":
                print(f"[{doc['count']} ladder(s) dropped: this client read too slowly]",
                      file=sys.stderr)
                continue
            out.write(line.decode() if as_json else render_text(doc) + "\n\n")
            out.flush()
            printed += 1
            if count and printed >= count:
                break
    except TimeoutError:
        pass
    except OSError as e:
        raise ControlError(f"control socket {path}: {e}") from None
    finally:
        sock.close()
    return printed


__all__ = ["ControlError", "ControlServer", "bind_socket", "default_socket_path", "request",
           "trace"]
