"""A connection's agreed options and current state as a plain dictionary, as Linux's
``TCP_INFO`` gives a socket's: what ``get_extra_info("tcp_info")`` returns.

Everything negotiated in the handshake is here -- MSS (RFC 9293 3.7.1), window
scaling and timestamps (RFC 7323), SACK (RFC 2018), TCP-MD5 signatures (RFC 2385),
TCP-AO (RFC 5925: the KeyIDs in use, never a key), ECN (RFC 3168) or Accurate
ECN (RFC 9768, with its counters), Fast Open (RFC 7413)
-- with the congestion controller (and HyStart++'s phase, RFC 9406) and the
estimates that drive sending (RFC 6298).
"""

from __future__ import annotations

from typing import Any

from tcpstack.tcp.control import ControlBlock
from tcpstack.tcp.seq import MASK

NO_SSTHRESH = 1 << 30  # ssthresh at or above it: still "infinite" (RFC 5681 3.1)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def ecn_mode(tcb: ControlBlock) -> str | None:
    """"accecn" (RFC 9768), "classic" (RFC 3168), or None: how the connection does
    ECN."""
    if not tcb.ecn_ok:
        return None
    return "classic" if tcb.accecn is None else "accecn"


def tcp_info(tcb: ControlBlock) -> dict[str, Any]:
    """A snapshot of ``tcb``; a new dictionary each call."""
    cc = tcb.cc
    return {
        "state": tcb.state.value,
        "mss": tcb.snd_mss,
        "payload_per_segment": tcb.seg_mss,
        "peer_mss": tcb.peer_mss,
        "sack": tcb.sack_ok,
        "timestamps": tcb.ts_ok,
        "window_scaling": tcb.wscale_ok,
        "snd_wscale": tcb.snd_wscale if tcb.wscale_ok else None,
        "rcv_wscale": tcb.rcv_wscale if tcb.wscale_ok else None,
        "md5": tcb.md5,
        "ao": tcb.auth.info() if tcb.auth is not None else None,
        "ecn": tcb.ecn_ok,
        # "accecn" (RFC 9768), "classic" (RFC 3168) or None; AccECN's counters.
        "ecn_mode": ecn_mode(tcb),
        "accecn": tcb.accecn.info() if tcb.accecn is not None else None,
        # TCP Fast Open (RFC 7413): how it went ("data accepted", "cookie sent",
        # "data acked", "cookie requested", ...), None when not used.
        "fastopen": tcb.tfo.result or None if tcb.tfo is not None else None,
        "congestion_control": type(cc).__name__.lower(),
        "hystart": cc.hystart_phase,
        # BBR's model (as Linux's tcp_bbr_info): mode, bottleneck bandwidth (bytes/s),
        # RTprop, gains, pacing rate, whether a policer was detected; None otherwise.
        "bbr": cc.info(),
        "pacing_rate": round(cc.pacing_rate) if cc.pacing_rate > 0 else None,
        "cwnd": cc.cwnd,
        "ssthresh": None if cc.ssthresh >= NO_SSTHRESH else cc.ssthresh,
        "srtt_ms": _ms(tcb.rtt.srtt),
        "rttvar_ms": _ms(tcb.rtt.rttvar),
        "rto_ms": _ms(tcb.rtt.rto),
        "snd_wnd": tcb.snd_wnd,
        "in_flight": (tcb.snd_max - tcb.snd_una) & MASK,
        "retransmits": tcb.retries,  # timeouts in a row, as tcpi_retransmits
    }


__all__ = ["ecn_mode", "tcp_info"]
