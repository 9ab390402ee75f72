"""Logs for people and for machines, and refusals logged without flooding.

* :class:`JsonFormatter` -- ``--log-format json``: one JSON object per line with
  ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message`` and any ``extra``
  fields a call gave (``event``, ``remote``, ``reason`` ...).
* :class:`RefusalLog` -- every refused or reset connection is logged once, with
  its reason, at INFO (logger ``tcpstack.refusals``), within a budget of
  :data:`RATE` lines per second (burst :data:`BURST`); beyond it lines are
  counted, not written, and a summary says how many were suppressed. Refusals
  the stack makes without a connection to name (a full accept queue, the SYN
  budget of a batch, invalid cookies ...) are summed per reason and logged at
  most every :data:`SUMMARY_INTERVAL` seconds. Under a flood the log therefore
  grows by a bounded number of lines per second.

It works in the observatory's light mode (no per-packet cost): it hears about
connections ending and RSTs sent for no connection.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any, Final

from tcpstack.observe.core import ConnInfo, Observatory
from tcpstack.observe.ladder import endpoint
from tcpstack.observe.reasons import REFUSALS, TERMINATION
from tcpstack.stack import Key
from tcpstack.tcp.tcb import Tcb

RATE: Final = 20.0
BURST: Final = 50.0
SUMMARY_INTERVAL: Final = 10.0

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime"}

log = logging.getLogger("tcpstack.refusals")


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        out: dict[str, Any] = {
            "time": when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool | None) \
                    else str(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure(level: int, fmt: str, process_label: str = "") -> None:
    """Set up the root logger: ``fmt`` is ``text`` or ``json``."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s {process_label}%(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class RefusalLog:
    """Logs refused and reset connections, rate-limited (see the module docstring).

    ``clock`` is the stack's clock. Call :meth:`tick` now and then (the daemon
    does every second) for the per-reason summaries.
    """

    def __init__(self, observatory: Observatory, *, rate: float = RATE, burst: float = BURST,
                 logger: logging.Logger = log) -> None:
        self.obs = observatory
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = 0.0
        self.suppressed = 0
        self.logger = logger
        self.logged = 0
        self._counted: dict[str, int] = {name: observatory.counters.get(name, 0)
                                         for name in REFUSALS}
        self._last_summary = 0.0
        observatory.on_ended.append(self._ended)
        observatory.on_stray_rst.append(self._stray_rst)

    def _allow(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.suppressed += 1
        return False

    def _emit(self, now: float, message: str, **fields: Any) -> None:
        if self._allow(now):
            self.logged += 1
            self.logger.info("%s", message, extra=fields)

    def _ended(self, info: ConnInfo, tcb: Tcb, error: str | None, now: float) -> None:
        if error is None:
            return
        lip, lport, rip, rport = info.key
        remote, local = endpoint(rip, rport), endpoint(lip, lport)
        why = TERMINATION.get(error, error)
        self._emit(now, f"connection {remote} -> {local} {why}", event="connection_ended",
                   remote=remote, local=local, reason=error)

    def _stray_rst(self, key: Key, now: float) -> None:
        lip, lport, rip, rport = key
        remote, local = endpoint(rip, rport), endpoint(lip, lport)
        if lport not in self.obs.stack.listeners:
            reason, why = "no_listener", f"no listener on port {lport}"
        else:
            reason, why = "no_connection", "segment for no connection at a listener"
        self._emit(now, f"refused {remote} -> {local}: {why} (RST sent)", event="refused",
                   remote=remote, local=local, reason=reason)

    def tick(self, now: float) -> None:
        """Log the refusals counted per reason since the last summary, and how many
        lines the rate limit suppressed."""
        if now - self._last_summary < SUMMARY_INTERVAL:
            return
        self._last_summary = now
        counters = self.obs.counters
        deltas = {}
        for name, before in self._counted.items():
            value = counters.get(name, 0)
            if value != before:
                deltas[name] = value - before
                self._counted[name] = value
        if deltas:
            self.logger.info("refused without a connection in the last %gs: %s",
                             SUMMARY_INTERVAL,
                             ", ".join(f"{k}={v}" for k, v in sorted(deltas.items())),
                             extra={"event": "refusal_summary", **deltas})
        if self.suppressed:
            self.logger.info("%d refusal/reset line(s) suppressed by the log rate limit "
                             "(%g per second)", self.suppressed, self.rate,
                             extra={"event": "log_suppressed", "count": self.suppressed})
            self.suppressed = 0


__all__ = ["JsonFormatter", "RefusalLog", "configure"]
