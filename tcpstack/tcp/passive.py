"""SEGMENT ARRIVES at a listening port (RFC 9293 3.10.7.2), with SYN cookies (RFC 4987).

:class:`PassiveOpener` decides what a segment for a listener (and no connection)
does, and says so in a :class:`Passive`: a new connection, a stateless SYN,ACK,
a RST, or nothing (each counted by reason in the stack's counters):

============================  ==========================================================
counter                       what happened
============================  ==========================================================
tcp_listen_rst_ignored        a RST: ignored (3.10.7.2 first)
tcp_listen_ack_reset          an ACK that is no valid cookie: RST (3.10.7.2 second)
tcp_listen_no_syn             neither SYN, ACK nor RST: dropped (3.10.7.2 fourth)
tcp_listen_accept_queue_full  a SYN while the accept queue is full: dropped, as Linux
tcp_listen_overflow           a SYN while the SYN queue is full and cookies are off
tcp_syn_accepted              a SYN queued: a connection in SYN-RECEIVED
tcp_syncookie_sent            a SYN answered with a cookie (SYN queue full, or always)
tcp_syncookie_accepted        an ACK carrying a valid cookie: the connection is made
tcp_syncookie_invalid         an ACK while cookies were recently sent, but not one of
                              ours (or too old): RST
============================  ==========================================================

Limits decided by the stack (a batch's SYN budget, the connection limit) are
passed in as ``may_open``; a SYN or a valid cookie ACK that would open a
connection when ``may_open`` is False comes back ``refused`` (nothing counted:
the stack knows which limit, and may set the segment aside for later). The
opener itself keeps no state but when it last sent a cookie (ACKs are checked for
cookies only within a cookie's lifetime after that, as Linux).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from tcpstack.tcp import handshake
from tcpstack.tcp.config import TcpConfig
from tcpstack.tcp.isn import IsnGenerator
from tcpstack.tcp.limits import Commons
from tcpstack.tcp.listener import Listener
from tcpstack.tcp.seq import seq_add, seq_gt
from tcpstack.tcp.syncookies import TICK_SECONDS, SynCookies
from tcpstack.tcp.tcb import Tcb
from tcpstack.wire.tcp import ACK, RST, SYN, OutSegment, TcpSegment

Key = tuple[int, int, int, int]  # (local ip, local port, remote ip, remote port)

DEFAULT_PEER_MSS = 536  # RFC 9293 3.7.1


class CookieMode(enum.Enum):
    """When SYN cookies are used (as Linux's net.ipv4.tcp_syncookies 1, 2, 0)."""

    AUTO = "auto"  # when the listener's SYN queue is full
    ALWAYS = "always"
    OFF = "off"


class Passive(NamedTuple):
    """What a segment at a listener leads to."""

    tcb: Tcb | None = None  # a new connection (SYN-RECEIVED, or from a cookie)
    reply: OutSegment | None = None  # a stateless SYN,ACK carrying a cookie
    reset: bool = False  # answer with a RST (RFC 9293 3.10.7.1)
    refused: bool = False  # it would open a connection, but may_open was False


NOTHING = Passive()
RESET = Passive(reset=True)
REFUSED = Passive(refused=True)


class PassiveOpener:
    """RFC 9293 3.10.7.2 for every listener of a stack."""

    __slots__ = ("_cookie_until", "cfg", "commons", "cookies", "counters", "isn", "mode")

    def __init__(self, cfg: TcpConfig, isn: IsnGenerator, cookies: SynCookies,
                 mode: CookieMode, commons: Commons) -> None:
        self.cfg = cfg
        self.isn = isn
        self.cookies = cookies
        self.mode = mode
        self.commons = commons
        self.counters = commons.counters
        self._cookie_until = -1.0  # ACKs may carry our cookies until then

    def segment(self, listener: Listener, key: Key, seg: TcpSegment, now: float, *,
                may_open: bool, old_snd_max: int | None = None,
                signed: bool = False) -> Passive:
        """What ``seg`` (for no connection) does at ``listener``.

        ``may_open`` is False when the stack will not take another connection now
        (its SYN budget for this batch is spent, or its connection limit reached):
        then what would open one is ``refused``.
        ``old_snd_max`` is set when the SYN reuses the 4-tuple of a connection in
        TIME-WAIT (RFC 6191): the new ISS must lie above it. ``signed``: the stack
        has a TCP-MD5 key for the peer (RFC 2385) and signs what we send.
        """
        flags = seg.flags
        if flags & RST:
            self.counters["tcp_listen_rst_ignored"] += 1
            return NOTHING
        if flags & ACK:
            if not flags & SYN and now <= self._cookie_until:
                return self._cookie_ack(listener, key, seg, now, may_open, signed)
            self.counters["tcp_listen_ack_reset"] += 1
            return RESET
        if not flags & SYN:
            self.counters["tcp_listen_no_syn"] += 1
            return NOTHING
        return self._syn(listener, key, seg, now, may_open, old_snd_max, signed)

    def _syn(self, listener: Listener, key: Key, seg: TcpSegment, now: float,
             may_open: bool, old_snd_max: int | None, signed: bool) -> Passive:
        if listener.accept_queue_full:
            self.counters["tcp_listen_accept_queue_full"] += 1
            return NOTHING
        if not may_open:
            return REFUSED  # the stack counts why
        if self.mode is CookieMode.ALWAYS or listener.syn_queue_full:
            if self.mode is CookieMode.OFF:
                self.counters["tcp_listen_overflow"] += 1
                return NOTHING
            return Passive(reply=self._cookie_syn_ack(key, seg, now, signed))
        lip, lport, rip, rport = key
        iss = self.isn.isn(lip, lport, rip, rport, now)
        if old_snd_max is not None and not seq_gt(iss, old_snd_max):
            iss = seq_add(old_snd_max, 65537)  # as Linux does after TIME-WAIT
        tcb = Tcb.passive_open(self.cfg, (lip, lport), (rip, rport), seg, iss, now,
                               self.commons, self.isn.ts_offset(*key), signed)
        tcb.listener = listener
        tcb.half_open = True
        listener.half_open += 1
        self.counters["tcp_syn_accepted"] += 1
        return Passive(tcb=tcb)

    def _cookie_syn_ack(self, key: Key, syn: TcpSegment, now: float,
                        signed: bool) -> OutSegment:
        lip, lport, rip, rport = key
        peer_mss = syn.options.mss or DEFAULT_PEER_MSS
        cookie = self.cookies.make(lip, lport, rip, rport, syn.seq, peer_mss, now)
        self._cookie_until = now + 2 * TICK_SECONDS
        self.counters["tcp_syncookie_sent"] += 1
        return handshake.cookie_syn_ack(self.cfg, (lip, lport), (rip, rport), syn, cookie,
                                        self.isn.ts_offset(*key), now, signed)

    def _cookie_ack(self, listener: Listener, key: Key, seg: TcpSegment, now: float,
                    may_open: bool, signed: bool) -> Passive:
        lip, lport, rip, rport = key
        peer_mss = self.cookies.check(lip, lport, rip, rport, seq_add(seg.seq, -1),
                                      seq_add(seg.ack, -1), now)
        if peer_mss is None:
            self.counters["tcp_syncookie_invalid"] += 1
            return RESET
        if listener.accept_queue_full:
            # As Linux: drop it; the client's retransmission (or its data) tries again.
            self.counters["tcp_listen_accept_queue_full"] += 1
            return NOTHING
        if not may_open:
            return REFUSED  # the stack counts why
        tcb = Tcb.from_cookie(self.cfg, (lip, lport), (rip, rport), seg, peer_mss, now,
                              self.commons, self.isn.ts_offset(*key), signed)
        # In SYN-RECEIVED until the stack gives it this ACK, like a queued SYN.
        tcb.listener = listener
        tcb.half_open = True
        listener.half_open += 1
        self.counters["tcp_syncookie_accepted"] += 1
        return Passive(tcb=tcb)
