"""BBR congestion control, version 1, as Linux's ``net/ipv4/tcp_bbr.c``
(draft-cardwell-iccrg-bbr-congestion-control-00).

BBR builds a model of the path -- its bottleneck bandwidth (``BtlBw``: the
windowed maximum of the delivery rate samples, over 10 round trips) and its
round-trip propagation time (``RTprop``: the windowed minimum RTT, over 10
seconds) -- and sends at the model's pace instead of reacting to each loss: it
paces at ``pacing_gain x BtlBw`` and keeps at most ``cwnd_gain x BtlBw x RTprop``
(the bandwidth-delay product, plus an allowance for ACK aggregation and for
sending in bursts) in flight. It moves through four modes:

============  ==================================================================
mode          what it does
============  ==================================================================
STARTUP       doubles the sending rate each round trip (gain 2/ln 2) until
              BtlBw stops growing by 25 % for three rounds: the pipe is full
DRAIN         paces at the inverse gain until what is in flight falls to one BDP
PROBE_BW      cycles its pacing gain over eight phases of one RTprop each: 5/4
              (probe for more bandwidth), 3/4 (drain what the probe queued),
              then six at 1; starting at a random phase other than 3/4
PROBE_RTT     every 10 s without a new minimum RTT: at most 4 segments in flight
              for 200 ms and a round trip, to measure RTprop without a queue
============  ==================================================================

Losses do not lower the model. In fast recovery the window follows packet
conservation for the first round trip, and is restored at the end of recovery;
after a timeout it restarts from one segment. A sender whose losses show a token
bucket policer (a steady 20 % loss rate at a steady delivery rate, over 4 to 16
round trips) paces at the policed rate for 48 round trips (the long-term
bandwidth, ``lt_bw``). ECE is not a signal for BBR v1 (as in Linux).

The rate samples come from :mod:`tcpstack.tcp.rate`; pacing itself is done by
the sender (:mod:`tcpstack.tcp.output`), at :attr:`Bbr.pacing_rate`. Units here are
bytes and seconds (Linux counts packets and microseconds); the constants are
Linux's. Nothing here performs I/O or reads a clock; the random start of the gain
cycle comes from a generator seeded per connection.
"""

from __future__ import annotations

import math

from tcpstack.tcp.controller import CongestionControl
from tcpstack.tcp.rate import DeliveryRate, RateSample

# Modes.
STARTUP = 0
DRAIN = 1
PROBE_BW = 2
PROBE_RTT = 3
MODE_NAMES = ("startup", "drain", "probe_bw", "probe_rtt")

# The loss states the sender is in (Linux's TCP_CA_* values that BBR looks at).
CA_OPEN = 0
CA_CWR = 2
CA_RECOVERY = 3
CA_LOSS = 4

HIGH_GAIN = 2 / math.log(2)  # 2.885: doubles the rate each round in STARTUP
DRAIN_GAIN = 1 / HIGH_GAIN
CWND_GAIN = 2.0
PACING_GAINS = (5 / 4, 3 / 4, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
CYCLE_LEN = len(PACING_GAINS)
CYCLE_RAND = 7  # the gain cycle starts at a random phase other than the 3/4 one
_MASK64 = (1 << 64) - 1
_LCG_MUL = 6364136223846793005  # Knuth, MMIX
_LCG_INC = 1442695040888963407
_LCG_SALT = 0x5DEECE66D  # so that seed 0 does not start from state 0
BW_RTTS = CYCLE_LEN + 2  # the BtlBw filter's window, in round trips
MIN_RTT_WIN = 10.0  # seconds: the RTprop filter's window
PROBE_RTT_TIME = 0.2  # seconds in PROBE_RTT (and at least one round trip)
CWND_MIN_SEGMENTS = 4
FULL_BW_THRESH = 1.25  # BtlBw must grow by this much per round ...
FULL_BW_COUNT = 3  # ... or after this many rounds the pipe is full
PACING_MARGIN = 0.99  # pace 1 % below the estimated bandwidth
INIT_CWND_SEGMENTS = 10
MIN_TSO_RATE = 1.2e6 / 8  # bytes/s: below it, TSO bursts of one segment
TSO_BURST_TIME = 1 / 1024  # seconds of data per burst (Linux's sk_pacing_shift 10)
TSO_MAX_BYTES = 65536 - 1 - 320  # GSO_LEGACY_MAX_SIZE - 1 - MAX_TCP_HEADER
# Long-term (policed) bandwidth.
LT_INTVL_MIN_RTTS = 4
LT_LOSS_THRESH = 50 / 256  # a loss rate of 20 %
LT_BW_RATIO = 1 / 8
LT_BW_DIFF = 4000 / 8  # bytes/s
LT_BW_MAX_RTTS = 48
# ACK aggregation.
EXTRA_ACKED_GAIN = 1.0
EXTRA_ACKED_WIN_RTTS = 5
EXTRA_ACKED_MAX_TIME = 0.1  # seconds of BtlBw at most
ACK_EPOCH_RESET_SEGMENTS = 1 << 20


class WindowedMax:
    """A running maximum over a sliding window of "time" (round trips here), kept
    in three samples (Kathleen Nichols' algorithm, Linux's ``lib/win_minmax.c``)."""

    __slots__ = ("_t", "_v")

    def __init__(self) -> None:
        self._t = [0, 0, 0]
        self._v = [0.0, 0.0, 0.0]

    @property
    def value(self) -> float:
        return self._v[0]

    def reset(self, t: int, value: float) -> float:
        self._t = [t, t, t]
        self._v = [value, value, value]
        return value

    def update(self, window: int, t: int, value: float) -> float:
        """Add ``value`` measured at ``t``; return the maximum over ``window``."""
        ts, vs = self._t, self._v
        if value >= vs[0] or t - ts[2] > window:
            return self.reset(t, value)  # a new maximum, or the window is empty
        if value >= vs[1]:
            ts[2] = ts[1] = t
            vs[2] = vs[1] = value
        elif value >= vs[2]:
            ts[2] = t
            vs[2] = value
        dt = t - ts[0]
        if dt > window:
            # The best left the window: the second choice becomes the best, the
            # third the second (twice, if the second is out too).
            ts[0], vs[0], ts[1], vs[1] = ts[1], vs[1], ts[2], vs[2]
            ts[2], vs[2] = t, value
            if t - ts[0] > window:
                ts[0], vs[0], ts[1], vs[1] = ts[1], vs[1], ts[2], vs[2]
                ts[2], vs[2] = t, value
        elif ts[1] == ts[0] and dt > window / 4:
            # A quarter of the window without a new maximum: a second choice from
            # the second quarter.
            ts[2] = ts[1] = t
            vs[2] = vs[1] = value
        elif ts[2] == ts[1] and dt > window / 2:
            ts[2] = t
            vs[2] = value
        return vs[0]


class Bbr(CongestionControl):
    """BBR v1 (see the module's documentation). ``cwnd`` is in bytes, the model's
    bandwidth in bytes per second, times in seconds."""

    name = "bbr"
    wants_rate = True
    controls_recovery = True
    __slots__ = (
        "_ack_epoch_acked", "_ack_epoch_time", "_bw", "_cwnd_gain", "_cycle_idx",
        "_cycle_time", "_extra_acked", "_extra_acked_idx", "_extra_acked_rtts",
        "_full_bw", "_full_bw_count", "_full_bw_reached", "_has_seen_rtt", "_idle_restart",
        "_lt_bw", "_lt_is_sampling", "_lt_last_delivered", "_lt_last_lost",
        "_lt_last_time", "_lt_rtt_count", "_lt_use_bw", "_min_rtt", "_min_rtt_time",
        "_next_rtt_delivered", "_packet_conservation", "_prev_ca_state", "_prior_cwnd",
        "_probe_rtt_done", "_probe_rtt_round_done", "_rate", "_rng", "_round_start",
        "_rtt_count", "mode", "pacing_gain",
    )

    def __init__(self, mss: int, iw_segments: int = 10, hystart: bool = False,
                 seed: int = 0) -> None:
        super().__init__(mss, iw_segments, False)  # BBR leaves STARTUP its own way
        # A 64-bit LCG state, not a random.Random: this is drawn from a few times per
        # connection, and a Mersenne Twister's state would be ~2.5 KiB of every idle
        # connection's memory.
        self._rng = (seed ^ _LCG_SALT) & _MASK64
        self.mode = STARTUP
        self._bw = WindowedMax()
        self._min_rtt: float | None = None
        self._min_rtt_time: float | None = None  # set at the first ACK (Linux: at init)
        self._probe_rtt_done: float | None = None
        self._probe_rtt_round_done = False
        self._rtt_count = 0
        self._next_rtt_delivered = 0
        self._round_start = False
        self._packet_conservation = False
        self._prior_cwnd = 0
        self._prev_ca_state = CA_OPEN
        self._idle_restart = False
        self.pacing_gain = HIGH_GAIN
        self._cwnd_gain = HIGH_GAIN
        self._cycle_idx = 0
        self._cycle_time = 0.0
        self._full_bw = 0.0
        self._full_bw_count = 0
        self._full_bw_reached = False
        self._has_seen_rtt = False
        self._lt_bw = 0.0
        self._lt_use_bw = False
        self._lt_is_sampling = False
        self._lt_rtt_count = 0
        self._lt_last_delivered = 0
        self._lt_last_lost = 0
        self._lt_last_time = 0.0
        self._extra_acked = [0, 0]
        self._extra_acked_rtts = 0
        self._extra_acked_idx = 0
        self._ack_epoch_time = 0.0
        self._ack_epoch_acked = 0
        self._rate: DeliveryRate | None = None  # the connection's, from the first ACK on
        self._init_pacing_rate(None)

    # ----------------------------------------------------------- the model

    @property
    def btl_bw(self) -> float:
        """The bandwidth the model uses, bytes per second: the policed rate while one
        is believed, else the windowed maximum of the samples."""
        return self._lt_bw if self._lt_use_bw else self._bw.value

    @property
    def min_rtt(self) -> float | None:
        """RTprop, the windowed minimum RTT (None before the first sample)."""
        return self._min_rtt

    @property
    def mode_name(self) -> str:
        return MODE_NAMES[self.mode]

    def _bdp(self, bw: float, gain: float) -> int:
        """``gain`` bandwidth-delay products, in bytes (10 segments before RTprop is
        known)."""
        if self._min_rtt is None:
            return INIT_CWND_SEGMENTS * self.mss
        return math.ceil(bw * self._min_rtt * gain)

    def _tso_segs(self) -> int:
        """Segments per burst the sender's pacing allows (Linux's bbr_tso_segs_goal)."""
        burst = min(int(self.pacing_rate * TSO_BURST_TIME), TSO_MAX_BYTES)
        floor = 1 if self.pacing_rate < MIN_TSO_RATE else 2
        return min(max(burst // self.mss, floor), 0x7F)

    def _quantization_budget(self, cwnd: int) -> int:
        """Room for the bursts pacing sends, and for the 5/4 phase's probe."""
        mss = self.mss
        segments = -(-cwnd // mss) + 3 * self._tso_segs()
        segments = (segments + 1) & ~1  # an even number, for delayed ACKs
        if self.mode == PROBE_BW and self._cycle_idx == 0:
            segments += 2
        return segments * mss

    def _inflight(self, bw: float, gain: float) -> int:
        return self._quantization_budget(self._bdp(bw, gain))

    # ----------------------------------------------------------- pacing

    def _init_pacing_rate(self, srtt: float | None) -> None:
        """Before any bandwidth sample: the initial window per SRTT (1 ms without one),
        at STARTUP's gain."""
        if srtt is not None and srtt > 0:
            self._has_seen_rtt = True
            rtt = srtt
        else:
            rtt = 0.001
        self.pacing_rate = HIGH_GAIN * self.cwnd / rtt * PACING_MARGIN

    def _set_pacing_rate(self, bw: float, gain: float) -> None:
        rate = gain * bw * PACING_MARGIN
        if not self._has_seen_rtt and self.srtt is not None:
            self._init_pacing_rate(self.srtt)
        # Until the pipe is full, never slower than the initial rate (which rests
        # on the first window only).
        if self._full_bw_reached or rate > self.pacing_rate:
            self.pacing_rate = rate

    # ----------------------------------------------------------- per ACK

    def on_ack(self, acked: int, flight: int, now: float) -> None:
        """Window growth comes from the model (:meth:`on_rate_sample`), not from ACKs."""

    def on_rtt(self, rtt: float) -> None:
        """An RTT sample (the handshake's first): it seeds RTprop (Linux's bbr_init
        takes tcp_min_rtt) and, once, the pacing rate."""
        if self._min_rtt is None and rtt > 0:
            self._min_rtt = rtt
        if not self._has_seen_rtt and self.srtt is not None:
            self._init_pacing_rate(self.srtt)

    def on_rate_sample(self, rs: RateSample, rate: DeliveryRate, in_flight: int,
                       ca_state: int, now: float) -> None:
        """An ACK was processed: update the model, then the pacing rate and window
        (Linux's bbr_main). ``in_flight``: bytes in the network after it;
        ``ca_state``: :data:`CA_OPEN`, :data:`CA_CWR`, :data:`CA_RECOVERY` or
        :data:`CA_LOSS`."""
        self._rate = rate
        self._update_bw(rs, rate)
        self._update_ack_aggregation(rs, rate)
        self._update_cycle_phase(rs, rate, now)
        self._check_full_bw_reached(rs)
        self._check_drain(in_flight, now)
        self._update_min_rtt(rs, rate, in_flight, now)
        self._update_gains()
        bw = self.btl_bw
        self._set_pacing_rate(bw, self.pacing_gain)
        self._set_cwnd(rs, rate, in_flight, ca_state, bw)

    def _update_bw(self, rs: RateSample, rate: DeliveryRate) -> None:
        self._round_start = False
        if rs.prior_time is None or rs.interval <= 0:
            return  # not a valid observation
        if rs.prior_delivered >= self._next_rtt_delivered:
            # A round trip: the data sent when the last one began is delivered.
            self._next_rtt_delivered = rate.delivered
            self._rtt_count += 1
            self._round_start = True
            self._packet_conservation = False
        self._lt_bw_sampling(rs, rate)
        bw = rs.rate
        # App-limited samples only count when they beat the model.
        if not rs.is_app_limited or bw >= self._bw.value:
            self._bw.update(BW_RTTS, self._rtt_count, bw)

    def _update_ack_aggregation(self, rs: RateSample, rate: DeliveryRate) -> None:
        """Estimate how much more than the model's rate the ACKs bring at once (ACK
        aggregation, as Linux since 5.1): the window allows that much extra."""
        if rs.acked_sacked <= 0 or rs.prior_time is None or rs.interval <= 0:
            return
        if self._round_start:
            self._extra_acked_rtts = min(0x1F, self._extra_acked_rtts + 1)
            if self._extra_acked_rtts >= EXTRA_ACKED_WIN_RTTS:
                self._extra_acked_rtts = 0
                self._extra_acked_idx ^= 1
                self._extra_acked[self._extra_acked_idx] = 0
        epoch = rate.delivered_time - self._ack_epoch_time
        expected = int(self.btl_bw * epoch)
        if self._ack_epoch_acked <= expected or \
                self._ack_epoch_acked + rs.acked_sacked >= ACK_EPOCH_RESET_SEGMENTS * self.mss:
            self._ack_epoch_acked = 0
            self._ack_epoch_time = rate.delivered_time
            expected = 0
        self._ack_epoch_acked = min(self._ack_epoch_acked + rs.acked_sacked,
                                    0xFFFFF * self.mss)
        extra = min(self._ack_epoch_acked - expected, self.cwnd)
        if extra > self._extra_acked[self._extra_acked_idx]:
            self._extra_acked[self._extra_acked_idx] = extra

    def _ack_aggregation_cwnd(self) -> int:
        if not self._full_bw_reached:
            return 0
        most = int(self.btl_bw * EXTRA_ACKED_MAX_TIME)
        return min(int(EXTRA_ACKED_GAIN * max(self._extra_acked)), most)

    def _update_cycle_phase(self, rs: RateSample, rate: DeliveryRate, now: float) -> None:
        if self.mode == PROBE_BW and self._is_next_cycle_phase(rs, rate):
            self._advance_cycle_phase(rate.delivered_time)

    def _is_next_cycle_phase(self, rs: RateSample, rate: DeliveryRate) -> bool:
        full_length = self._min_rtt is not None and \
            rate.delivered_time - self._cycle_time > self._min_rtt
        gain = self.pacing_gain
        if gain == 1.0:
            return full_length
        in_flight = rs.prior_in_flight
        if gain > 1.0:
            # Probing: until the probe has put gain x BDP in flight (or lost).
            return full_length and (rs.losses > 0 or
                                    in_flight >= self._inflight(self._bw.value, gain))
        # Draining the probe's queue: as soon as it is gone, or after one RTprop.
        return full_length or in_flight <= self._inflight(self._bw.value, 1.0)

    def _advance_cycle_phase(self, now: float) -> None:
        self._cycle_idx = (self._cycle_idx + 1) % CYCLE_LEN
        self._cycle_time = now

    def _check_full_bw_reached(self, rs: RateSample) -> None:
        if self._full_bw_reached or not self._round_start or rs.is_app_limited:
            return
        bw = self._bw.value
        if bw >= self._full_bw * FULL_BW_THRESH:
            self._full_bw = bw
            self._full_bw_count = 0
            return
        self._full_bw_count += 1
        self._full_bw_reached = self._full_bw_count >= FULL_BW_COUNT

    def _check_drain(self, in_flight: int, now: float) -> None:
        if self.mode == STARTUP and self._full_bw_reached:
            self.mode = DRAIN
            self.ssthresh = self._inflight(self._bw.value, 1.0)
        if self.mode == DRAIN and in_flight <= self._inflight(self._bw.value, 1.0):
            self._reset_probe_bw_mode(now)  # the queue STARTUP built is drained

    def _update_min_rtt(self, rs: RateSample, rate: DeliveryRate, in_flight: int,
                        now: float) -> None:
        if self._min_rtt_time is None:
            self._min_rtt_time = now  # the RTprop filter's window starts now
        expired = now > self._min_rtt_time + MIN_RTT_WIN
        rtt = rs.rtt
        if rtt is not None and rtt >= 0 and (
                self._min_rtt is None or rtt < self._min_rtt or expired):
            self._min_rtt = rtt
            self._min_rtt_time = now
        if expired and not self._idle_restart and self.mode != PROBE_RTT:
            # RTprop was not confirmed for 10 s: drain the queue to measure it.
            self.mode = PROBE_RTT
            self._save_cwnd()
            self._probe_rtt_done = None
        if self.mode == PROBE_RTT:
            # Samples while draining measure nothing about the path's bandwidth.
            rate.app_limited = (rate.delivered + in_flight) or 1
            # At most 4 segments in flight, for 200 ms and one round trip.
            if self._probe_rtt_done is None and in_flight <= CWND_MIN_SEGMENTS * self.mss:
                self._probe_rtt_done = now + PROBE_RTT_TIME
                self._probe_rtt_round_done = False
                self._next_rtt_delivered = rate.delivered
            elif self._probe_rtt_done is not None:
                if self._round_start:
                    self._probe_rtt_round_done = True
                if self._probe_rtt_round_done:
                    self._check_probe_rtt_done(now)
        if rs.delivered > 0:
            self._idle_restart = False

    def _check_probe_rtt_done(self, now: float) -> None:
        done = self._probe_rtt_done
        if done is None or now <= done:
            return
        self._min_rtt_time = now  # the next PROBE_RTT in 10 s
        self.cwnd = max(self.cwnd, self._prior_cwnd)
        self._reset_mode(now)

    def _reset_mode(self, now: float) -> None:
        if not self._full_bw_reached:
            self.mode = STARTUP
        else:
            self._reset_probe_bw_mode(now)

    def _draw(self, n: int) -> int:
        """A pseudo-random integer in [0, n): Knuth's MMIX linear congruential
        generator, its high bits (the low ones of an LCG repeat quickly)."""
        self._rng = (self._rng * _LCG_MUL + _LCG_INC) & _MASK64
        return (self._rng >> 33) % n

    def _reset_probe_bw_mode(self, now: float) -> None:
        self.mode = PROBE_BW
        self._cycle_idx = CYCLE_LEN - 1 - self._draw(CYCLE_RAND)
        self._advance_cycle_phase(now)  # never the 3/4 phase first

    def _update_gains(self) -> None:
        mode = self.mode
        if mode == STARTUP:
            self.pacing_gain = self._cwnd_gain = HIGH_GAIN
        elif mode == DRAIN:
            self.pacing_gain = DRAIN_GAIN
            self._cwnd_gain = HIGH_GAIN
        elif mode == PROBE_BW:
            self.pacing_gain = 1.0 if self._lt_use_bw else PACING_GAINS[self._cycle_idx]
            self._cwnd_gain = CWND_GAIN
        else:
            self.pacing_gain = self._cwnd_gain = 1.0

    def _set_cwnd(self, rs: RateSample, rate: DeliveryRate, in_flight: int, ca_state: int,
                  bw: float) -> None:
        acked = rs.acked_sacked
        cwnd = self.cwnd
        floor = CWND_MIN_SEGMENTS * self.mss
        if acked:
            recovering, cwnd = self._recover_or_restore(rs, rate, in_flight, ca_state, acked)
            if not recovering:
                target = self._bdp(bw, self._cwnd_gain) + self._ack_aggregation_cwnd()
                target = self._quantization_budget(target)
                if self._full_bw_reached:
                    cwnd = min(cwnd + acked, target)
                elif cwnd < target or rate.delivered < INIT_CWND_SEGMENTS * self.mss:
                    cwnd += acked  # slow start up to the target
                cwnd = max(cwnd, floor)
        if self.mode == PROBE_RTT:
            cwnd = min(cwnd, floor)
        self.cwnd = cwnd

    def _recover_or_restore(self, rs: RateSample, rate: DeliveryRate, in_flight: int,
                            ca_state: int, acked: int) -> tuple[bool, int]:
        """Loss recovery's window: packet conservation in its first round trip, the
        window from before it restored at its end (Linux's
        bbr_set_cwnd_to_recover_or_restore)."""
        prev = self._prev_ca_state
        cwnd = self.cwnd
        if rs.losses > 0:
            cwnd = max(cwnd - rs.losses, self.mss)  # an ACK releases at most 2x
        if ca_state == CA_RECOVERY and prev != CA_RECOVERY:
            self._packet_conservation = True
            self._next_rtt_delivered = rate.delivered  # a round starts now
            cwnd = in_flight + acked
        elif prev >= CA_RECOVERY and ca_state < CA_RECOVERY:
            cwnd = max(cwnd, self._prior_cwnd)
            self._packet_conservation = False
        self._prev_ca_state = ca_state
        if self._packet_conservation:
            return True, max(cwnd, in_flight + acked)
        return False, cwnd

    # ----------------------------------------------------------- policers

    def _lt_bw_sampling(self, rs: RateSample, rate: DeliveryRate) -> None:
        """A token-bucket policer shows as a steady loss rate at a steady delivery
        rate: then pace at that rate (Linux's bbr_lt_bw_sampling)."""
        if self._lt_use_bw:
            if self.mode == PROBE_BW and self._round_start:
                self._lt_rtt_count += 1
                if self._lt_rtt_count >= LT_BW_MAX_RTTS:
                    self._reset_lt_bw_sampling(rate)
                    self._reset_probe_bw_mode(rate.delivered_time)
            return
        if not self._lt_is_sampling:
            # Start at a loss: the policer's bucket is empty then.
            if not rs.losses:
                return
            self._reset_lt_bw_interval(rate)
            self._lt_is_sampling = True
        if rs.is_app_limited:
            self._reset_lt_bw_sampling(rate)
            return
        if self._round_start:
            self._lt_rtt_count += 1
        if self._lt_rtt_count < LT_INTVL_MIN_RTTS:
            return
        if self._lt_rtt_count > 4 * LT_INTVL_MIN_RTTS:
            self._reset_lt_bw_sampling(rate)
            return
        if not rs.losses:
            return  # end intervals at a loss: the bucket is empty again
        lost = rate.lost - self._lt_last_lost
        delivered = rate.delivered - self._lt_last_delivered
        if not delivered or lost < LT_LOSS_THRESH * delivered:
            return
        elapsed = rate.delivered_time - self._lt_last_time
        if elapsed < 0.001:
            return
        self._lt_bw_interval_done(delivered / elapsed, rate)

    def _lt_bw_interval_done(self, bw: float, rate: DeliveryRate) -> None:
        if self._lt_bw:
            diff = abs(bw - self._lt_bw)
            if diff <= LT_BW_RATIO * self._lt_bw or diff <= LT_BW_DIFF:
                # Two intervals agree: policed.
                self._lt_bw = (bw + self._lt_bw) / 2
                self._lt_use_bw = True
                self.pacing_gain = 1.0
                self._lt_rtt_count = 0
                return
        self._lt_bw = bw
        self._reset_lt_bw_interval(rate)

    def _reset_lt_bw_interval(self, rate: DeliveryRate) -> None:
        self._lt_last_time = rate.delivered_time
        self._lt_last_delivered = rate.delivered
        self._lt_last_lost = rate.lost
        self._lt_rtt_count = 0

    def _reset_lt_bw_sampling(self, rate: DeliveryRate | None) -> None:
        self._lt_bw = 0.0
        self._lt_use_bw = False
        self._lt_is_sampling = False
        self._lt_rtt_count = 0
        if rate is not None:
            self._reset_lt_bw_interval(rate)

    # ----------------------------------------------------------- events

    def _save_cwnd(self) -> None:
        if self._prev_ca_state < CA_RECOVERY and self.mode != PROBE_RTT:
            self._prior_cwnd = self.cwnd
        else:
            self._prior_cwnd = max(self._prior_cwnd, self.cwnd)

    def on_loss(self, flight: int, now: float) -> None:
        """Fast recovery begins: remember the window (the model is not cut; packet
        conservation runs from the next ACK)."""
        self._save_cwnd()

    def on_tlp_loss(self, flight: int, now: float) -> None:
        """A tail loss probe repaired a loss: the model is not cut (Linux's CWR state);
        the window is noted, as Linux's tcp_init_cwnd_reduction does."""
        self._save_cwnd()

    def on_congestion_signal(self, flight: int, now: float) -> None:
        """ECE: BBR v1 does not reduce for it (as Linux's); the window is noted, in case
        a loss turns the reduction into recovery."""
        self._save_cwnd()

    def on_timeout(self, flight: int, now: float) -> None:
        """A retransmission timeout: the window restarts at one segment and grows back
        to the model's; the bandwidth search starts over, and the policer detector
        counts a loss (Linux's CA_EVENT_LOSS)."""
        self._save_cwnd()
        self._prev_ca_state = CA_LOSS
        self._full_bw = 0.0
        self._round_start = True  # a timeout ends a round trip
        if self._rate is not None:
            rs = RateSample()
            rs.losses = 1
            self._lt_bw_sampling(rs, self._rate)
        self.cwnd = self.mss

    def on_recovery_end(self) -> None:
        """The window from before recovery comes back at the next ACK (see
        :meth:`_recover_or_restore`)."""

    def on_tx_start(self, now: float, rate: DeliveryRate) -> None:
        """Data goes out after an idle period (Linux's CA_EVENT_TX_START)."""
        if not rate.app_limited:
            return
        self._idle_restart = True
        self._ack_epoch_time = now
        self._ack_epoch_acked = 0
        if self.mode == PROBE_BW:
            self._set_pacing_rate(self.btl_bw, 1.0)  # no burst at the old gain
        elif self.mode == PROBE_RTT:
            self._check_probe_rtt_done(now)

    def undo(self) -> None:
        """A spurious retransmission: the window stays, the bandwidth search and the
        policer estimate restart (Linux's bbr_undo_cwnd)."""
        self._full_bw = 0.0
        self._full_bw_count = 0
        self._reset_lt_bw_sampling(self._rate)
        self._saved = None

    def info(self) -> dict[str, object]:
        """What Linux's ``tcp_bbr_info`` reports, in bytes and milliseconds."""
        return {
            "mode": self.mode_name,
            "bw": round(self.btl_bw),
            "min_rtt_ms": None if self._min_rtt is None else round(self._min_rtt * 1000, 3),
            "pacing_gain": round(self.pacing_gain, 3),
            "cwnd_gain": round(self._cwnd_gain, 3),
            "pacing_rate": round(self.pacing_rate),
            "policed": self._lt_use_bw,
        }


__all__ = ["Bbr", "WindowedMax"]
