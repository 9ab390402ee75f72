"""Tunables of the TCP engine, validated once at construction."""

from __future__ import annotations

from dataclasses import dataclass

from tcpstack.tcp import congestion

ECN_MODES = ("off", "passive", "on", "accecn")


@dataclass(frozen=True, slots=True)
class TcpConfig:
    """Per-stack TCP settings. Times are in seconds, sizes in bytes.

    ``mss`` is the MSS we advertise (RFC 9293 3.7.1: interface MTU minus 40 for IPv4).
    ``rcv_buf`` is a connection's initial receive buffer (its window), ``snd_buf``
    the initial high-water mark above which writers are asked to wait. With
    ``autotune`` (as Linux's tcp_moderate_rcvbuf) both grow with the connection's
    needs up to ``rcv_buf_max`` and ``snd_buf_max`` (the defaults of Linux's
    tcp_rmem and tcp_wmem maxima); see :mod:`tcpstack.tcp.autotune`.
    """

    mss: int = 1460
    rcv_buf: int = 256 * 1024
    snd_buf: int = 256 * 1024
    rcv_buf_max: int = 6 * 1024 * 1024
    snd_buf_max: int = 4 * 1024 * 1024
    autotune: bool = True
    msl: float = 30.0
    fin_timeout: float = 60.0
    rto_initial: float = 1.0
    rto_min: float = 0.2
    rto_max: float = 120.0
    max_retries: int = 15
    syn_retries: int = 6
    synack_retries: int = 5
    initial_window: int = 10
    congestion_control: str = "cubic"
    #: HyStart++ (RFC 9406): leave the initial slow start when the RTT rises,
    #: before the queue overflows (Linux's CUBIC has its own HyStart, on by default).
    hystart: bool = True
    window_scaling: bool = True
    #: Largest payload handed to the device in one segment when it segments for us
    #: (TSO); 0 means every segment is at most one MSS.
    tso_size: int = 0
    sack: bool = True  # RFC 2018 / RFC 6675, offered in SYNs and accepted
    timestamps: bool = True  # RFC 7323: RTTM and PAWS
    #: ECN (RFC 3168) and Accurate ECN (RFC 9768): "passive" agrees to either when a
    #: peer's SYN asks (Linux's default, tcp_ecn=2, agrees to classic only), "on"
    #: also asks for classic ECN in our SYNs (tcp_ecn=1), "accecn" for AccECN
    #: (tcp_ecn=3), "off" never (see tcpstack.tcp.ecn).
    ecn: str = "passive"
    delayed_ack: float = 0.04  # RFC 1122 4.2.3.2 (<= 0.5 s; Linux's minimum 40 ms); 0 = off
    nagle: bool = True  # RFC 9293 3.7.4 / RFC 896; per connection: Tcb.set_nodelay
    tlp: bool = True  # RFC 8985 7: tail loss probes
    keepalive: bool = False  # RFC 1122 4.2.3.6; per connection: Tcb.set_keepalive
    keepalive_idle: float = 7200.0
    keepalive_interval: float = 75.0
    keepalive_count: int = 9
    #: At most one unsolicited reply (challenge ACK, ACK to an out-of-window or PAWS-
    #: rejected segment without data, SYN,ACK to a repeated SYN) per connection per
    #: this many seconds (Linux tcp_invalid_ratelimit; RFC 5961 7).
    invalid_ratelimit: float = 0.5
    #: Stack-wide challenge ACKs per second (randomized per second, RFC 5961 7).
    challenge_ack_limit: int = 1000
    #: RFC 9293 3.10.8 USER TIMEOUT (RFC 5482; Linux TCP_USER_TIMEOUT): give up when
    #: data waiting to be sent or acknowledged has made no progress for this long --
    #: a zero window held while probes are answered, or a window opened a byte at a
    #: time (progress is a full segment acknowledged, or everything). 0: never.
    user_timeout: float = 900.0
    #: Packetization-layer path MTU discovery for black holes (RFC 4821; Linux's
    #: tcp_mtu_probing=1): when full-sized segments time out repeatedly, try smaller
    #: ones (see tcpstack.tcp.path).
    mtu_probing: bool = True
    #: Seconds a lowered path MTU holds before the full size is tried again
    #: (RFC 1191 6.3 / RFC 8201 4; Linux's mtu_expires, 10 minutes).
    pmtu_expires: float = 600.0

    def __post_init__(self) -> None:
        if not 88 <= self.mss <= 65495:
            raise ValueError(f"MSS {self.mss} out of range 88..65495")
        if not 1024 <= self.rcv_buf <= 1 << 30:
            raise ValueError(f"receive buffer {self.rcv_buf} out of range 1024..2**30")
        if not 1024 <= self.snd_buf <= 1 << 30:
            raise ValueError(f"send buffer {self.snd_buf} out of range 1024..2**30")
        if not 1024 <= self.rcv_buf_max <= 1 << 30:
            raise ValueError(f"largest receive buffer {self.rcv_buf_max} out of range 1024..2**30")
        if not 1024 <= self.snd_buf_max <= 1 << 30:
            raise ValueError(f"largest send buffer {self.snd_buf_max} out of range 1024..2**30")
        if not 0 < self.msl <= 3600:
            raise ValueError(f"MSL {self.msl:g} out of range (0, 3600] seconds")
        if not 0 < self.rto_min <= self.rto_initial <= self.rto_max:
            raise ValueError("RTO settings must satisfy 0 < rto_min <= rto_initial <= rto_max")
        if not (1 <= self.max_retries <= 100 and 1 <= self.syn_retries <= 100
                and 1 <= self.synack_retries <= 100):
            raise ValueError("retry limits must be within 1..100")
        if self.fin_timeout <= 0:
            raise ValueError("fin_timeout must be positive")
        if self.initial_window < 1:
            raise ValueError("initial window must be at least one segment")
        if not 0 <= self.delayed_ack <= 0.5:
            raise ValueError("delayed ACK timeout must be within 0..0.5 s (RFC 1122 4.2.3.2)")
        if self.keepalive_idle <= 0 or self.keepalive_interval <= 0 or self.keepalive_count < 1:
            raise ValueError("keepalive idle and interval must be positive and count >= 1")
        if not 0 <= self.invalid_ratelimit <= 60:
            raise ValueError("invalid_ratelimit must be within 0..60 seconds")
        if not 0 <= self.user_timeout <= 86_400:
            raise ValueError("user_timeout must be within 0..86400 seconds (0: off)")
        if not 1 <= self.pmtu_expires <= 86_400:
            raise ValueError("pmtu_expires must be within 1..86400 seconds")
        if self.challenge_ack_limit < 1:
            raise ValueError("challenge_ack_limit must be at least 1 per second")
        if not 0 <= self.tso_size <= 65535 - 40:
            raise ValueError(f"TSO size {self.tso_size} out of range 0..65495")
        if self.ecn not in ECN_MODES:
            raise ValueError(f"ecn must be one of {', '.join(ECN_MODES)}, not {self.ecn!r}")
        if self.congestion_control not in congestion.ALGORITHMS:
            raise ValueError(f"unknown congestion control {self.congestion_control!r}")

    @property
    def rcv_buf_limit(self) -> int:
        """The largest receive buffer a connection may have (never below the initial)."""
        return max(self.rcv_buf, self.rcv_buf_max) if self.autotune else self.rcv_buf

    @property
    def snd_buf_limit(self) -> int:
        """The largest send-buffer high-water mark a connection may have."""
        return max(self.snd_buf, self.snd_buf_max) if self.autotune else self.snd_buf

    @property
    def rcv_wscale(self) -> int:
        """Our window-scale shift: the smallest letting the largest receive buffer fit
        (RFC 7323 2.2) -- chosen for the maximum, not the initial size, so that
        autotuning can grow the window."""
        limit = self.rcv_buf_limit
        shift = 0
        while (limit >> shift) > 0xFFFF and shift < 14:
            shift += 1
        return shift
