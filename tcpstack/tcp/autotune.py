"""Buffer autotuning, as Linux does it (``tcp_rcv_space_adjust``, ``tcp_sndbuf_expand``).

A fixed buffer limits a connection to one buffer per round trip: 256 KiB over a
20 ms path is 13 MB/s however fast the path. So both buffers start at the
configured size and grow with what the connection needs, up to
``cfg.rcv_buf_max`` and ``cfg.snd_buf_max`` (``cfg.autotune``; window scaling is
chosen for the maximum, see :attr:`TcpConfig.rcv_wscale`):

* **Receive side, dynamic right-sizing.** Once per round trip the bytes the
  application read in that round trip are measured; when they exceed the last
  measurement, the receive buffer (the window we offer) grows to twice that plus
  sixteen segments -- room for the data in flight and what the reader has not
  taken yet -- and faster while the rate keeps growing (Linux's slow-start
  factor). A slow or idle reader never grows it. The round trip is the
  receiver's: the time since the timestamp the peer echoes (RFC 7323 4), or our
  SRTT where we send data too.
* **Send side.** The high-water mark above which writers wait grows with the
  congestion window: twice the largest cwnd seen, between ``cfg.snd_buf`` and
  ``cfg.snd_buf_max``, so a window's worth is always queued behind what is in
  flight. It never shrinks when the window does (as Linux's ``tcp_sndbuf_expand``,
  which only raises ``sk_sndbuf``): after a reduction the unacknowledged data above
  a hole may fill more than twice the new window, and a buffer that shrank with it
  would stop the writer -- and with it the new data whose SACKs let RACK detect a
  lost retransmission -- until a retransmission timeout.

Neither grows while the stack's memory pool is over its limit.
"""

from __future__ import annotations

from tcpstack.tcp.control import ControlBlock

_RTT_GAIN = 8  # the receiver's RTT estimate moves 1/8 of the way up to a new sample


def note_read(tcb: ControlBlock, n: int) -> None:
    """The application took ``n`` bytes."""
    tcb.rcvq_copied += n


def rtt_sample(tcb: ControlBlock, rtt: float) -> None:
    """A receiver-side round-trip sample (Linux's rcv_rtt_est): it falls at once and
    rises slowly, so the measurement period errs short."""
    old = tcb.rcv_rtt
    if old is None or rtt < old:
        tcb.rcv_rtt = rtt
    else:
        tcb.rcv_rtt = old + (rtt - old) / _RTT_GAIN


def on_data(tcb: ControlBlock, now: float) -> None:
    """In-order data arrived: once per round trip, size the receive buffer."""
    if not tcb.cfg.autotune:
        return
    rtt = tcb.rcv_rtt if tcb.rcv_rtt is not None else tcb.rtt.srtt
    if rtt is None or now - tcb.rcvq_time < rtt:
        return
    copied = tcb.rcvq_copied
    tcb.rcvq_copied = 0
    tcb.rcvq_time = now
    previous = tcb.rcvq_space
    if copied <= previous:
        return
    tcb.rcvq_space = copied
    window = 2 * copied + 16 * tcb.rcv_mss
    if previous:
        # The reader speeds up: grow by twice the relative increase on top.
        window += 2 * window * (copied - previous) // previous
    if window > tcb.rcv_space and not tcb.pool.pressure:
        tcb.rcv_space = min(window, tcb.cfg.rcv_buf_limit)


def send_space(tcb: ControlBlock) -> int:
    """The send buffer's high-water mark: twice the largest congestion window seen,
    within the configured bounds (the initial size only, under memory pressure)."""
    cfg = tcb.cfg
    if not cfg.autotune or tcb.pool.pressure:
        tcb.snd_space = cfg.snd_buf  # pressure shrinks it (Linux: sk_stream_moderate_sndbuf)
        return cfg.snd_buf
    want = 2 * tcb.cc.cwnd
    if want > tcb.snd_space:
        tcb.snd_space = min(want, cfg.snd_buf_limit)
    return tcb.snd_space
