"""The live web view (``--dashboard ADDR:PORT``): routes and the state behind them.

Everything is served from the package (``tcpstack/observe/static/``: one HTML
page, one small dependency-free script, one style sheet); no CDN. The page
subscribes to ``/api/events`` (server-sent events: the connection table every
:data:`PUSH_INTERVAL` seconds) and, for the connection selected, loads three
SVG drawings made by :mod:`tcpstack.observe.svg`:

=================================  =============================================
``/``                              the page
``/static/app.js``, ``style.css``  its script and style
``/api/connections``               the table (JSON), with the recent ladders
``/api/events``                    the same, pushed as server-sent events
``/api/conn/ID``                   one connection: row, ladders, history (JSON)
``/api/conn/ID/ladder.svg``        its handshake and teardown as a sequence diagram
``/api/conn/ID/tseq.svg?dir=out``  time-sequence graph (``dir=in``: the peer's data)
``/api/conn/ID/cc.svg``            cwnd, ssthresh, SRTT and RTO over time
=================================  =============================================

Ladders of the last :data:`KEEP_LADDERS` connections (and refusals) are kept for
the page; histories are bounded as :mod:`tcpstack.observe.history` says.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any, Final

from tcpstack.observe import svg, table
from tcpstack.observe.core import Observatory
from tcpstack.observe.ladder import Ladder
from tcpstack.observe.web import Response, Route, Stream

PUSH_INTERVAL: Final = 1.0
KEEP_LADDERS: Final = 256
RECENT: Final = 40
MAX_ROWS: Final = 500

STATIC: Final = {"app.js": "text/javascript; charset=utf-8",
                 "style.css": "text/css; charset=utf-8",
                 "index.html": "text/html; charset=utf-8"}
CSP: Final = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
              "connect-src 'self'; frame-ancestors 'none'")


class Dashboard:
    """Keeps the recent ladders and answers the page's requests."""

    def __init__(self, observatory: Observatory, clock: Callable[[], float],
                 static: dict[str, bytes] | None = None) -> None:
        self.obs = observatory
        self.clock = clock
        self.ladders: OrderedDict[int, list[Ladder]] = OrderedDict()
        self.recent: list[Ladder] = []
        observatory.enable_ladders()
        observatory.enable_history()
        observatory.on_ladder.append(self._ladder)
        self._static = static if static is not None else load_static()

    def _ladder(self, doc: Ladder) -> None:
        ident = int(doc["id"])
        self.ladders.setdefault(ident, []).append(doc)
        self.ladders.move_to_end(ident)
        while len(self.ladders) > KEEP_LADDERS:
            self.ladders.popitem(last=False)
        self.recent.append({k: doc.get(k) for k in ("id", "phase", "local", "remote",
                                                     "outcome", "why", "start")})
        del self.recent[:-RECENT]

    # ---------------------------------------------------------------- data

    def snapshot(self) -> dict[str, Any]:
        rows = table.rows(self.obs.stack, self.obs, self.clock())[:MAX_ROWS]
        return {"time": self.clock() + self.obs.epoch, "rows": rows,
                "listeners": table.listeners(self.obs.stack),
                "recent": list(reversed(self.recent)),
                "connections": len(self.obs.stack.tcbs)}

    def _history(self, ident: int) -> dict[str, Any]:
        book = self.obs.history
        h = book.get(ident) if book is not None else None
        return h.as_json() if h is not None else {"id": ident, "segments": [], "samples": []}

    def connection(self, ident: int) -> dict[str, Any]:
        found = self.obs.connection_by_id(ident)
        row = None
        if found is not None:
            tcb, info = found
            row = table.row(tcb, info, self.clock(), self.obs.packets)
        ladders = self.ladders.get(ident, [])
        hist = self._history(ident)
        if row is None and not ladders and not hist["segments"]:
            raise KeyError(ident)
        return {"id": ident, "row": row, "ladders": ladders, "history": hist}

    # -------------------------------------------------------------- routes

    def routes(self) -> dict[str, Route]:
        return {"/": self._index, "/index.html": self._index, "/static/": self._file,
                "/api/connections": self._connections, "/api/events": self._events,
                "/api/conn/": self._conn}

    def _index(self, path: str, query: dict[str, list[str]]) -> Response:
        return Response(200, self._static["index.html"], STATIC["index.html"],
                        {"Content-Security-Policy": CSP})

    def _file(self, path: str, query: dict[str, list[str]]) -> Response:
        name = path.removeprefix("/static/")
        if name not in STATIC or name == "index.html":
            raise KeyError(name)
        return Response(200, self._static[name], STATIC[name])

    def _connections(self, path: str, query: dict[str, list[str]]) -> Response:
        return _json(self.snapshot())

    def _events(self, path: str, query: dict[str, list[str]]) -> Stream:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            while True:
                yield b"data: " + json.dumps(self.snapshot()).encode() + b"\n\n"
                await asyncio.sleep(PUSH_INTERVAL)

        return Stream(chunks)

    def _conn(self, path: str, query: dict[str, list[str]]) -> Response:
        parts = path.removeprefix("/api/conn/").split("/")
        try:
            ident = int(parts[0])
        except ValueError:
            raise KeyError(path) from None
        what = parts[1] if len(parts) > 1 else ""
        if what == "":
            return _json(self.connection(ident))
        if what == "ladder.svg":
            return _svg(svg.ladder_svg(self.ladders.get(ident, [])))
        if what == "tseq.svg":
            direction = query.get("dir", ["out"])[0]
            if direction not in ("in", "out"):
                raise ValueError("dir must be in or out")
            return _svg(svg.time_sequence_svg(self._history(ident), direction))
        if what == "cc.svg":
            return _svg(svg.cc_svg(self._history(ident)))
        raise KeyError(path)


def load_static() -> dict[str, bytes]:
    """The page's files, from the package (read before privileges are dropped)."""
    return {name: resources.files("tcpstack.observe").joinpath("static", name).read_bytes()
            for name in STATIC}


def _json(obj: Any) -> Response:
    return Response(200, json.dumps(obj).encode(), "application/json")


def _svg(body: str) -> Response:
    return Response(200, body.encode(), "image/svg+xml")


__all__ = ["Dashboard", "load_static"]
