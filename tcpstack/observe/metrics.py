"""Prometheus metrics for a running stack (``--metrics ADDR:PORT``).

Needs the ``prometheus-client`` package (``pip install 'tcpstack[metrics]'``); the
daemon imports this module only when ``--metrics`` is given.

Most figures are read when Prometheus scrapes (nothing is done per packet for
them): the stack's counters, the device's packet and byte counts, connections by
state, listeners. Two histograms are fed by the observatory as connections are
synchronized and end (that needs full observation, which ``--metrics`` turns on).

======================================  ==============================================
metric                                  what
======================================  ==============================================
tcpstack_packets_total{direction}       IP packets read from / written to the TUN
tcpstack_bytes_total{direction}         their bytes (without virtio-net headers)
tcpstack_drops_total{reason}            packets dropped or refused, by the stack's
                                        counter name (``ipv4_bad_checksum``,
                                        ``tcp_listen_accept_queue_full``, ...)
tcpstack_events_total{counter}          every counter the stack has, drops or not
tcpstack_retransmissions_total{kind}    retransmitted segments: ``rto``, ``fast``
                                        (NewReno), ``rack``, ``tlp``, ``syn``
tcpstack_rto_timeouts_total             retransmission timeouts with data outstanding
tcpstack_syncookies_total{result}       ``sent``, ``accepted`` (validated), ``invalid``
tcpstack_connections{state}             connections per RFC 9293 state
tcpstack_listeners                      listening ports
tcpstack_buffered_bytes                 bytes all connections hold in buffers
tcpstack_handshake_duration_seconds     first SYN to synchronized (histogram)
tcpstack_rtt_seconds{sample}            smoothed RTT of connections: ``initial`` when
                                        synchronized, ``final`` when they end
======================================  ==============================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tcpstack.observe.core import ConnInfo, Observatory
from tcpstack.observe.reasons import RETRANS_KINDS, is_drop
from tcpstack.stack import Stack
from tcpstack.tcp.state import State
from tcpstack.tcp.tcb import Tcb

HANDSHAKE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RTT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
               0.1, 0.25, 0.5, 1.0, 2.5)


class _StackCollector(Collector):
    def __init__(self, stack: Stack, device: Any | None) -> None:
        self.stack = stack
        self.device = device

    def collect(self) -> Iterator[Any]:
        counters = dict(self.stack.counters)
        packets = CounterMetricFamily("tcpstack_packets", "IP packets through the TUN",
                                      labels=["direction"])
        octets = CounterMetricFamily("tcpstack_bytes", "bytes through the TUN",
                                     labels=["direction"])
        dev = self.device
        if dev is not None and hasattr(dev, "packets_in"):
            packets.add_metric(["in"], dev.packets_in)
            packets.add_metric(["out"], dev.packets_out)
            octets.add_metric(["in"], dev.bytes_in)
            octets.add_metric(["out"], dev.bytes_out)
        else:
            packets.add_metric(["in"], counters.get("ip_received", 0))
            packets.add_metric(["out"], counters.get("ip_sent", 0))
        yield packets
        yield octets
        drops = CounterMetricFamily("tcpstack_drops", "packets dropped or refused, by reason",
                                    labels=["reason"])
        events = CounterMetricFamily("tcpstack_events", "every counter of the stack",
                                     labels=["counter"])
        for name, value in sorted(counters.items()):
            events.add_metric([name], value)
            if is_drop(name):
                drops.add_metric([name], value)
        yield drops
        yield events
        retrans = CounterMetricFamily("tcpstack_retransmissions",
                                      "retransmitted segments by kind", labels=["kind"])
        for name, kind in RETRANS_KINDS.items():
            retrans.add_metric([kind], counters.get(name, 0))
        yield retrans
        yield CounterMetricFamily("tcpstack_rto_timeouts",
                                  "retransmission timeouts with data outstanding",
                                  value=counters.get("tcp_rto_timeouts", 0))
        cookies = CounterMetricFamily("tcpstack_syncookies", "SYN cookies",
                                      labels=["result"])
        for result in ("sent", "accepted", "invalid"):
            cookies.add_metric([result], counters.get(f"tcp_syncookie_{result}", 0))
        yield cookies
        states = dict.fromkeys(State, 0)
        for tcb in list(self.stack.tcbs.values()):
            states[tcb.state] += 1
        conns = GaugeMetricFamily("tcpstack_connections", "connections by state",
                                  labels=["state"])
        for state, n in states.items():
            if state is not State.LISTEN:
                conns.add_metric([state.value], n)
        yield conns
        yield GaugeMetricFamily("tcpstack_listeners", "listening ports",
                                value=len(self.stack.listeners))
        yield GaugeMetricFamily("tcpstack_buffered_bytes",
                                "bytes all connections hold in their buffers",
                                value=self.stack.memory.used)


class Metrics:
    """The registry for one stack; :meth:`render` is the scrape."""

    def __init__(self, stack: Stack, observatory: Observatory | None = None,
                 device: Any | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_StackCollector(stack, device))
        self.handshake = Histogram("tcpstack_handshake_duration_seconds",
                                   "time from the first SYN to the connection being "
                                   "synchronized", buckets=HANDSHAKE_BUCKETS,
                                   registry=self.registry)
        self.rtt = Histogram("tcpstack_rtt_seconds", "smoothed RTT of connections",
                             labelnames=["sample"], buckets=RTT_BUCKETS,
                             registry=self.registry)
        self._rtt_initial = self.rtt.labels("initial")
        self._rtt_final = self.rtt.labels("final")
        if observatory is not None:
            observatory.on_established.append(self._established)
            observatory.on_ended.append(self._ended)

    def _established(self, info: ConnInfo, tcb: Tcb, now: float) -> None:
        if info.established is not None:
            self.handshake.observe(max(0.0, info.established - info.created))
        if tcb.rtt.srtt is not None:
            self._rtt_initial.observe(tcb.rtt.srtt)

    def _ended(self, info: ConnInfo, tcb: Tcb, error: str | None, now: float) -> None:
        if info.established is not None and tcb.rtt.srtt is not None:
            self._rtt_final.observe(tcb.rtt.srtt)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def routes(metrics: Metrics) -> dict[str, Callable[..., Any]]:
    """HTTP routes: ``/metrics`` (and ``/`` pointing at it)."""
    from tcpstack.observe.web import Response

    def scrape(path: str, query: dict[str, list[str]]) -> Response:
        body, ctype = metrics.render()
        return Response(200, body, ctype)

    def index(path: str, query: dict[str, list[str]]) -> Response:
        return Response(200, b'<a href="/metrics">/metrics</a>\n', "text/html; charset=utf-8")

    return {"/metrics": scrape, "/": index}


__all__ = ["Metrics", "routes"]
