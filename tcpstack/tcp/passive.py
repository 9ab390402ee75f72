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
tcp_tfo_cookie_requested      a SYN asking for a Fast Open cookie (RFC 7413 4.1.1)
tcp_tfo_passive               a SYN with a valid Fast Open cookie: its data taken, the
                              connection handed to the application at once
tcp_tfo_passive_alt_key       ... valid with the backup key: a fresh cookie given too
tcp_tfo_passive_fail          a SYN with a Fast Open cookie not ours (or of an old
                              key): its data ignored, a fresh cookie given
tcp_tfo_listen_overflow       a SYN with a cookie or request while the listener's
                              Fast Open queue is full: the ordinary handshake
============================  ==========================================================

Fast Open (RFC 7413 4.2.2) is decided here too, for listeners that allow it
(``Listener.fastopen``), as Linux's ``tcp_try_fastopen`` does: never for a SYN
answered with a SYN cookie (a Fast Open connection needs its state), nor for a
signed one (TCP-MD5 or TCP-AO: no room for the option).

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
from tcpstack.tcp.tfocookies import FastOpen, FastOpenKeys
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

    __slots__ = ("_cookie_until", "cfg", "commons", "cookies", "counters", "fastopen", "isn",
                 "mode")

    def __init__(self, cfg: TcpConfig, isn: IsnGenerator, cookies: SynCookies,
                 mode: CookieMode, commons: Commons,
                 fastopen: FastOpenKeys | None = None) -> None:
        self.cfg = cfg
        self.fastopen = fastopen
        self.isn = isn
        self.cookies = cookies
        self.mode = mode
        self.commons = commons
        self.counters = commons.counters
        self._cookie_until = -1.0  # ACKs may carry our cookies until then

    def segment(self, listener: Listener, key: Key, seg: TcpSegment, now: float, *,
                may_open: bool, old_snd_max: int | None = None,
                signed: bool = False, fastopen_ok: bool = True) -> Passive:
        """What ``seg`` (for no connection) does at ``listener``.

        ``may_open`` is False when the stack will not take another connection now
        (its SYN budget for this batch is spent, or its connection limit reached):
        then what would open one is ``refused``.
        ``old_snd_max`` is set when the SYN reuses the 4-tuple of a connection in
        TIME-WAIT (RFC 6191): the new ISS must lie above it. ``signed``: the stack
        has a TCP-MD5 key for the peer (RFC 2385) and signs what we send.
        ``fastopen_ok``: False where the stack signs with TCP-AO (no room for Fast
        Open's option beside it).
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
        return self._syn(listener, key, seg, now, may_open, old_snd_max, signed,
                         fastopen_ok and not signed)

    def _syn(self, listener: Listener, key: Key, seg: TcpSegment, now: float,
             may_open: bool, old_snd_max: int | None, signed: bool,
             fastopen_ok: bool) -> Passive:
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
        tfo = None
        if seg.options.tfo is not None and listener.fastopen and fastopen_ok \
                and self.fastopen is not None:
            tfo = self._fast_open(listener, key, seg, now, self.fastopen)
        tcb = Tcb.passive_open(self.cfg, (lip, lport), (rip, rport), seg, iss, now,
                               self.commons, self.isn.ts_offset(*key), signed, tfo)
        tcb.listener = listener
        tcb.half_open = True
        listener.half_open += 1
        if tfo is not None and tfo.child:
            listener.tfo_pending += 1
        self.counters["tcp_syn_accepted"] += 1
        return Passive(tcb=tcb)

    def _fast_open(self, listener: Listener, key: Key, seg: TcpSegment, now: float,
                   keys: FastOpenKeys) -> FastOpen | None:
        """RFC 7413 4.2.2 for a SYN carrying the Fast Open option: a valid cookie makes
        a Fast Open child (its data taken now); a request or a cookie not ours gets a
        fresh cookie in our SYN,ACK (and the data waits for the handshake)."""
        counters = self.counters
        cookie = seg.options.tfo
        if cookie == b"":
            counters["tcp_tfo_cookie_requested"] += 1
        if listener.fastopen_full(now):
            counters["tcp_tfo_listen_overflow"] += 1
            return None
        lip, _, rip, _ = key
        if cookie:
            valid = keys.check(cookie, lip, rip, now)
            if valid:
                counters["tcp_tfo_passive"] += 1
                fresh = None
                if valid == 2:
                    counters["tcp_tfo_passive_alt_key"] += 1
                    fresh = keys.cookie(lip, rip, now)
                return FastOpen(fresh, child=True, result="data accepted" if seg.payload
                                else "cookie accepted")
            counters["tcp_tfo_passive_fail"] += 1
        return FastOpen(keys.cookie(lip, rip, now), result="cookie sent")

    def _cookie_syn_ack(self, key: Key, syn: TcpSegment, now: float,
                        signed: bool) -> OutSegment:
        lip, lport, rip, rport = key
        cookie = self._cookie(key, syn.seq, syn.options.mss or 0, now)
        ts_offset = self.isn.ts_offset(*key) if syn.options.timestamps is not None else 0
        return handshake.cookie_syn_ack(self.cfg, (lip, lport), (rip, rport), syn, cookie,
                                        ts_offset, now, signed)

    def _cookie(self, key: Key, peer_isn: int, peer_mss: int, now: float) -> int:
        """A SYN cookie for the SYN of ``key`` with ``peer_isn`` and the MSS option
        ``peer_mss`` (0: none, RFC 9293 3.7.1's default then), counted."""
        lip, lport, rip, rport = key
        cookie = self.cookies.make(lip, lport, rip, rport, peer_isn,
                                   peer_mss or DEFAULT_PEER_MSS, now)
        self._cookie_until = now + 2 * TICK_SECONDS
        self.counters["tcp_syncookie_sent"] += 1
        return cookie

    def answers_with_cookie(self, listener: Listener) -> bool:
        """Whether a SYN that may open a connection is answered with a SYN cookie now
        (as :meth:`segment` decides): cookies always, or the SYN queue full -- and
        the accept queue not full (then the SYN is dropped)."""
        if listener.accept_queue_full:
            return False
        mode = self.mode
        return mode is CookieMode.ALWAYS or (mode is CookieMode.AUTO and listener.syn_queue_full)

    def plain_syn_cookie(self, key: Key, peer_isn: int, peer_mss: int, peer_wscale: int,
                         peer_sack: bool, peer_tsval: int,
                         now: float) -> tuple[int, int, int, int, bool, int]:
        """The SYN,ACK for a plain SYN (:mod:`tcpstack.wire.syn`: flags SYN alone, no
        data, no options but MSS, window scale, SACK-permitted and timestamps) to a
        listener that :meth:`answers_with_cookie`, exactly as :meth:`segment` would
        answer it: (cookie, window, our MSS, our window scale shift or -1,
        SACK-permitted, our TSval or -1). The caller has checked that the listener
        answers with a cookie, that the SYN may open a connection (``may_open``) and
        that the peer signs nothing."""
        cookie = self._cookie(key, peer_isn, peer_mss, now)
        ts_offset = self.isn.ts_offset(*key) if peer_tsval >= 0 else 0
        wscale, sack, tsval, window = handshake.cookie_syn_ack_options(
            self.cfg, peer_wscale, peer_sack, peer_tsval >= 0, ts_offset, now, False)
        return cookie, window, self.cfg.mss, wscale, sack, tsval

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
