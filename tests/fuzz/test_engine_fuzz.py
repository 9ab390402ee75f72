"""Property tests of the TCP engine: hostile segments, application calls and time.

Each example starts a :class:`Tcb` in one of the RFC 9293 states (built the way
the unit tests build them), then applies a random sequence of peer segments --
any flags, sequence and acknowledgment numbers near and far from the window
edges, windows, SACK blocks (tiny, overlapping, reversed, out of range),
timestamps (current, old, far future), payloads --, application calls (send,
recv, shutdown_write, close, abort; refusals must be ConnectionErrors that change
nothing) and clock advances (timers run when due). Nothing may raise, and the
invariants of :data:`engine_harness.INVARIANTS` hold after every step.
"""

from __future__ import annotations

from dataclasses import replace

from engine_harness import (
    MAX_PAYLOAD,
    START_STATES,
    Abort,
    Action,
    Advance,
    Close,
    Driver,
    Flush,
    NoDelay,
    Recv,
    Seg,
    Send,
    Shutdown,
    Start,
    build,
)
from fuzz_settings import examples
from hypothesis import given
from hypothesis import strategies as st
from tcp_helpers import base_config

from tcpstack.tcp.config import TcpConfig
from tcpstack.wire.tcp import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

# -------------------------------------------------------------- configurations


@st.composite
def configs(draw: st.DrawFn) -> TcpConfig:
    """Small buffers and short timeouts, so windows fill and timers fire within a run."""
    return base_config(
        rcv_buf=draw(st.sampled_from([1024, 3000, 65535, 262144])),
        snd_buf=draw(st.sampled_from([1024, 16384, 262144])),
        mss=draw(st.sampled_from([88, 536, 1460])),
        sack=draw(st.booleans()),
        timestamps=draw(st.booleans()),
        delayed_ack=draw(st.sampled_from([0.0, 0.04])),
        nagle=draw(st.booleans()),
        congestion_control=draw(st.sampled_from(["newreno", "cubic"])),
        tso_size=draw(st.sampled_from([0, 65000])),
        max_retries=draw(st.sampled_from([2, 15])),
        syn_retries=2, synack_retries=2, msl=1.0, fin_timeout=3.0,
        keepalive=draw(st.booleans()), keepalive_idle=2.0, keepalive_interval=0.5,
        keepalive_count=2,
    )


def starts(states: tuple[str, ...]) -> st.SearchStrategy[Start]:
    return st.builds(
        Start,
        state=st.sampled_from(states),
        mss=st.sampled_from([None, 64, 536, 1460, 65535]),
        wscale=st.sampled_from([None, 0, 7, 14]),
        sack=st.booleans(),
        ts=st.booleans(),
        in_flight=st.sampled_from([0, 0, 1, 3000, 40000]),
    )


# -------------------------------------------------------------- peer segments

offsets = st.one_of(
    st.sampled_from([0, 0, 0, 1, -1, 2, -2, 536, 1460, -1460, 65535, -65536]),
    st.integers(-70_000, 70_000),
    st.sampled_from([1 << 31, (1 << 31) - 1, -(1 << 31), 1 << 30]),
)
seq_specs = st.one_of(
    st.tuples(st.sampled_from(["nxt", "nxt", "nxt", "edge", "irs"]), offsets),
    st.tuples(st.just("abs"), u32),
)
ack_specs = st.one_of(
    st.tuples(st.sampled_from(["una", "max", "max", "iss"]), offsets),
    st.tuples(st.just("abs"), u32),
)
block_ends = st.one_of(
    st.tuples(st.sampled_from(["una", "max"]), st.integers(-3000, 3000)),
    st.tuples(st.sampled_from(["una", "max"]), offsets),
    st.tuples(st.just("abs"), u32),
)
flag_sets = st.one_of(
    st.sampled_from([ACK, ACK, ACK | PSH, ACK | FIN, ACK | PSH | FIN, SYN, SYN | ACK, RST,
                     RST | ACK, FIN, 0, ACK | URG, SYN | FIN, SYN | ACK | ECE | CWR,
                     SYN | RST]),
    st.integers(0, 0xFF),
)
timestamps = st.one_of(
    st.none(),
    st.tuples(st.sampled_from([0, 0, 1, 5, -1, -5000, 1 << 31, (1 << 31) - 1]), st.none()),
    st.tuples(st.integers(-(1 << 31), 1 << 31), st.one_of(st.none(), st.just(0), u32)),
)
lengths = st.one_of(
    st.just(0), st.just(0), st.integers(1, 100),
    st.sampled_from([535, 536, 1448, 1460, 2920, 4096]),
    st.integers(0, MAX_PAYLOAD),
)

segments = st.builds(
    Seg,
    flags=flag_sets,
    seq=seq_specs,
    ack=ack_specs,
    window=st.one_of(st.sampled_from([0, 1, 512, 65535, 65535]), u16),
    length=lengths,
    sack=st.lists(st.tuples(block_ends, block_ends), max_size=4).map(tuple),
    ts=timestamps,
    syn_opts=st.tuples(st.sampled_from([None, 0, 1, 64, 536, 1460, 65535]),
                       st.sampled_from([None, 0, 3, 14, 255]), st.booleans()),
    urgent=st.sampled_from([0, 0, 0, 1, 0xFFFF]),
)

# Mostly the peer "playing along" (ACK at SND.MAX, data at RCV.NXT), so that runs
# go deep into recovery, reassembly and closing instead of bouncing off the checks.
plausible_segments = st.builds(
    Seg,
    flags=st.sampled_from([ACK] * 6 + [ACK | PSH] * 3 + [ACK | FIN]),
    seq=st.tuples(st.just("nxt"), st.sampled_from([0, 0, 0, 536, 1460, 2920, -100])),
    ack=st.tuples(st.sampled_from(["una", "max", "max"]),
                  st.sampled_from([0, 0, 536, 1460, -536])),
    window=st.sampled_from([0, 512, 65535, 65535, 65535]),
    length=st.sampled_from([0, 0, 1, 100, 536, 1460, 3000]),
    sack=st.lists(st.tuples(st.tuples(st.just("una"), st.integers(0, 20_000)),
                            st.tuples(st.just("una"), st.integers(0, 20_000))),
                  max_size=3).map(tuple),
    ts=st.one_of(st.just((0, None)), timestamps),
)

# ------------------------------------------------------------ application, time

benign_app_calls = st.one_of(
    st.builds(Send, st.sampled_from([0, 1, 100, 1460, 5000, 20_000])),
    st.builds(Recv, st.sampled_from([-1, -1, 1, 100, 5000])),
    st.builds(NoDelay, st.booleans()),
)
ending_app_calls = st.sampled_from([Shutdown(), Close(), Abort()])
time_steps = st.one_of(
    st.builds(Advance, st.sampled_from([0.0, 0.001, 0.01, 0.04, 0.2, 0.2, 1.0])),
    st.builds(Advance, st.none(), st.sampled_from([0.0, 0.0, 1e-6, 0.5])),
    st.builds(Advance, st.sampled_from([5.0, 100.0])),
)
# Weighted by repetition (one_of picks a branch uniformly): mostly a peer that plays
# along, then hostile segments, the application, time and flushes; calls that end
# the connection are rarer so that runs reach deep states.
actions: st.SearchStrategy[Action] = st.one_of(
    plausible_segments, plausible_segments, plausible_segments, plausible_segments,
    plausible_segments, segments, segments, benign_app_calls, benign_app_calls,
    benign_app_calls, ending_app_calls, time_steps, time_steps, st.just(Flush()),
    st.just(Flush()), st.just(Flush()),
)
action_lists = st.lists(actions, min_size=20, max_size=80)

# For a connection that lives long: no closing calls, no long silences; the peer
# sends data (in and out of order), SACKs and hostile segments.
long_lived_actions: st.SearchStrategy[Action] = st.one_of(
    plausible_segments, plausible_segments, plausible_segments, plausible_segments,
    segments, benign_app_calls, benign_app_calls,
    st.builds(Advance, st.sampled_from([0.0, 0.001, 0.01, 0.04, 0.2])), st.just(Flush()),
    st.just(Flush()),
)

MAX_WRITE = 20_000  # the largest Send above


def run(start: Start, cfg: TcpConfig, steps: list[Action]) -> Driver:
    tcb, now = build(start, cfg)
    driver = Driver(tcb, now, max(MAX_WRITE, start.in_flight))
    after_closed = 0
    for action in steps:
        driver.apply(action)
        if driver.closed_flushed:
            after_closed += 1
            if after_closed > 5:  # enough to see that nothing more is sent
                break
    driver.apply(Flush())
    return driver


# ------------------------------------------------------------------- tests

OPENING = ("SYN-SENT", "SYN-RECEIVED")
SYNCHRONIZED = ("ESTABLISHED", "ESTABLISHED-active", "CLOSE-WAIT")
CLOSING = ("FIN-WAIT-1", "FIN-WAIT-1-half", "FIN-WAIT-2", "CLOSING", "TIME-WAIT", "LAST-ACK",
           "CLOSED")
assert set(OPENING + SYNCHRONIZED + CLOSING) == set(START_STATES)


@examples(150)
@given(starts(OPENING), configs(), action_lists)
def test_opening_connections_survive_hostile_segments_with_invariants_intact(
        start: Start, cfg: TcpConfig, steps: list[Action]) -> None:
    run(start, cfg, steps)


@examples(250)
@given(starts(SYNCHRONIZED), configs(), action_lists)
def test_synchronized_connections_survive_hostile_segments_with_invariants_intact(
        start: Start, cfg: TcpConfig, steps: list[Action]) -> None:
    run(start, cfg, steps)


@examples(150)
@given(starts(("ESTABLISHED",)).map(lambda s: Start("ESTABLISHED", s.mss, s.wscale, True, s.ts,
                                                    s.in_flight)),
       configs().map(lambda c: replace(c, sack=True, max_retries=15, keepalive=False)),
       st.lists(long_lived_actions, min_size=40, max_size=100))
def test_long_lived_connection_keeps_its_scoreboard_and_reassembly_queue_consistent(
        start: Start, cfg: TcpConfig, steps: list[Action]) -> None:
    run(start, cfg, steps)


@examples(200)
@given(starts(CLOSING), configs(), action_lists)
def test_closing_connections_survive_hostile_segments_with_invariants_intact(
        start: Start, cfg: TcpConfig, steps: list[Action]) -> None:
    run(start, cfg, steps)
