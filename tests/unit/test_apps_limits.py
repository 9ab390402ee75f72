"""Limits that stop a peer from pinning a service's connection forever.

For every built-in service: an idle timeout (no input), a bound on each wait in
``drain()`` for a peer that never reads (then the connection is reset), a bound
on closing (FIN never acknowledged: reset), and TCP keepalive switched on for
each connection through the public socket-option path
(``writer.get_extra_info("socket").setsockopt``). Each limit that fires is
counted under ``<service>_<reason>``.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Callable

import pytest
from aio_helpers import B_IP, NetPair
from app_harness import (
    FakeWriter,
    SilentReader,
    connection,
    get,
    reader_with,
    serving,
)

from tcpstack.aio import open_connection, start_server
from tcpstack.apps import (
    DiscardService,
    EchoService,
    HttpLimits,
    HttpService,
    Keepalive,
    ServiceLimits,
    StreamHandler,
)
from tcpstack.apps.limits import COMPACT_MIN, ConnectionGuard, LimitExpired, guard_clock

SHORT = 0.2
"""A limit short enough to fire during a test; the waits around it are generous."""

WAIT = 10.0
"""Upper bound for anything a test waits for (a loaded 2-core machine is slow)."""

Factory = Callable[[ServiceLimits, "Counter[str]"], StreamHandler]

SERVICES: dict[str, Factory] = {
    "echo": lambda limits, counters: EchoService(limits=limits, counters=counters),
    "discard": lambda limits, counters: DiscardService(limits=limits, counters=counters),
    "http": lambda limits, counters: HttpService(limits=limits, counters=counters),
}

# What makes each service write something (so that drain() is reached).
PROVOKE: dict[str, bytes] = {
    "echo": b"x" * 1000,
    "discard": b"",
    "http": get("/bytes/1000000"),
}


async def _until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# -- configuration ----------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"idle_timeout": 0},
        {"idle_timeout": -1.0},
        {"idle_timeout": float("nan")},
        {"idle_timeout": float("inf")},
        {"send_timeout": 0},
        {"close_timeout": 2e6},
    ],
)
def test_service_limits_reject_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ServiceLimits(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"idle": 0}, {"interval": 0}, {"count": 0}, {"idle": 40000}, {"count": 128}],
)
def test_keepalive_settings_reject_values_linux_would_refuse(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Keepalive(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"header_timeout": 0},
        {"body_timeout": -5.0},
        {"max_body": -1},
        {"max_body": 1 << 50},
        {"max_requests": 0},
    ],
)
def test_http_limits_reject_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        HttpLimits(**kwargs)  # type: ignore[arg-type]


def test_defaults_are_the_documented_ones() -> None:
    limits, http, keepalive = ServiceLimits(), HttpLimits(), Keepalive()
    assert (limits.idle_timeout, limits.send_timeout, limits.close_timeout) == (60, 60, 10)
    assert limits.keepalive == keepalive
    assert (keepalive.idle, keepalive.interval, keepalive.count) == (60, 10, 6)
    assert (http.header_timeout, http.body_timeout) == (60, 60)
    assert http.max_body == 1 << 20
    assert http.max_requests == 1000


# -- idle -------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
async def test_idle_connection_is_closed_after_idle_timeout_and_counted(name: str) -> None:
    counters: Counter[str] = Counter()
    service = SERVICES[name](ServiceLimits(idle_timeout=SHORT), counters)
    async with serving(service) as port, connection(port) as (reader, _writer):
        data = await asyncio.wait_for(reader.read(), WAIT)
    assert data == b"", "an idle close sends nothing (not even an HTTP 408)"
    assert counters[f"{name}_idle_timeout"] == 1


@pytest.mark.parametrize("name", ["echo", "discard"])
async def test_input_resets_the_idle_timer(name: str) -> None:
    """The idle timeout bounds silence, not the life of a busy connection."""
    counters: Counter[str] = Counter()
    service = SERVICES[name](ServiceLimits(idle_timeout=1.0), counters)
    async with serving(service) as port, connection(port) as (reader, writer):
        for _ in range(44):  # a ping every 0.05 s for 2.2 s: twice the idle timeout
            writer.write(b"ping")
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write_eof()
        await asyncio.wait_for(reader.read(), WAIT)
    assert counters[f"{name}_idle_timeout"] == 0


# -- drain() and close() bounds ----------------------------------------------


@pytest.mark.parametrize("name", ["echo", "http"])
async def test_peer_that_never_reads_is_reset_after_send_timeout(name: str) -> None:
    counters: Counter[str] = Counter()
    service = SERVICES[name](ServiceLimits(send_timeout=SHORT), counters)
    writer = FakeWriter(stuck_drain=True)
    await asyncio.wait_for(service(reader_with(PROVOKE[name], eof=False), writer), WAIT)
    assert writer.aborted, "a stuck drain() must end in an abort (RST)"
    assert counters[f"{name}_send_timeout"] == 1


@pytest.mark.parametrize("name", SERVICES)
async def test_close_that_never_completes_is_reset_after_close_timeout(name: str) -> None:
    counters: Counter[str] = Counter()
    service = SERVICES[name](ServiceLimits(close_timeout=SHORT), counters)
    writer = FakeWriter(stuck_close=True)
    request = get("/", "Connection: close") if name == "http" else b"bye"
    await asyncio.wait_for(service(reader_with(request), writer), WAIT)
    assert writer.closed and writer.waited
    assert writer.aborted
    assert counters[f"{name}_close_timeout"] == 1


async def test_http_client_that_stops_reading_a_download_is_reset() -> None:
    """Over real loopback sockets: the handler ends although the client never reads."""
    counters: Counter[str] = Counter()
    service = HttpService(limits=ServiceLimits(send_timeout=SHORT), counters=counters)
    async with serving(service) as port, connection(port) as (_reader, writer):
        writer.write(get(f"/bytes/{1 << 33}"))
        await _until(lambda: counters["http_send_timeout"] == 1)


async def test_echo_client_that_sends_but_never_reads_is_reset() -> None:
    counters: Counter[str] = Counter()
    service = EchoService(limits=ServiceLimits(send_timeout=SHORT), counters=counters)
    async with serving(service) as port, connection(port) as (_reader, writer):
        chunk = b"y" * (1 << 20)
        try:
            async with asyncio.timeout(WAIT):
                while counters["echo_send_timeout"] == 0:
                    writer.write(chunk)
                    await writer.drain()
        except ConnectionError:
            pass  # the reset reached our writes first
        await _until(lambda: counters["echo_send_timeout"] == 1)


# -- keepalive ---------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
async def test_services_switch_keepalive_on_through_the_socket_options(name: str) -> None:
    keepalive = Keepalive(idle=30, interval=5, count=4)
    service = SERVICES[name](ServiceLimits(keepalive=keepalive), Counter())
    writer = FakeWriter()
    await asyncio.wait_for(service(reader_with(b""), writer), WAIT)
    options = {(level, option): value for level, option, value in writer.sockopts}
    assert options == {
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE): 30,
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL): 5,
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT): 4,
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE): 1,
    }


@pytest.mark.parametrize("name", SERVICES)
async def test_keepalive_none_leaves_the_socket_alone(name: str) -> None:
    service = SERVICES[name](ServiceLimits(keepalive=None), Counter())
    writer = FakeWriter()
    await asyncio.wait_for(service(reader_with(b""), writer), WAIT)
    assert writer.sockopts == []


async def test_keepalive_reaches_the_tcpstack_connection() -> None:
    """On tcpstack's own streams the options land on the TCB (RFC 1122 4.2.3.6)."""
    nets = NetPair()
    seen: list[tuple[bool, float, float, int]] = []

    async def observed(reader: object, writer: object) -> None:
        service = EchoService(limits=ServiceLimits(keepalive=Keepalive(45, 7, 3)))
        tcb = writer.get_extra_info("tcb")  # type: ignore[attr-defined]
        task = asyncio.create_task(service(reader, writer))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        seen.append((tcb.keepalive, tcb.keepalive_idle, tcb.keepalive_interval,
                     tcb.keepalive_count))
        await task

    try:
        await start_server(observed, port=7007, network=nets.b)
        reader, writer = await asyncio.wait_for(
            open_connection(B_IP, 7007, network=nets.a), WAIT)
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"hello"
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
    finally:
        await nets.aclose()
    assert seen == [(True, 45.0, 7.0, 3)]


async def test_socket_without_keepalive_support_is_counted_not_fatal() -> None:
    class NoOptionsWriter(FakeWriter):
        def get_extra_info(self, name: str) -> object:
            return None if name == "socket" else super().get_extra_info(name)

    counters: Counter[str] = Counter()
    writer = NoOptionsWriter()
    await EchoService(counters=counters)(reader_with(b"abc"), writer)
    assert writer.written == b"abc"
    assert counters["echo_keepalive_unavailable"] == 1


# -- silent peers are bounded even with nothing else happening ----------------


@pytest.mark.parametrize("name", SERVICES)
async def test_a_silent_peer_cannot_hold_a_handler(name: str) -> None:
    counters: Counter[str] = Counter()
    service = SERVICES[name](ServiceLimits(idle_timeout=SHORT), counters)
    writer = FakeWriter()
    await asyncio.wait_for(service(SilentReader(), writer), WAIT)
    assert writer.closed
    assert counters[f"{name}_idle_timeout"] == 1


# -- the guard's lazy timer ----------------------------------------------------


async def test_an_expired_bound_raises_and_leaves_the_task_usable() -> None:
    guard = ConnectionGuard("t", FakeWriter(), ServiceLimits(), Counter())
    with pytest.raises(LimitExpired) as caught, guard.bound("slow", 0.05):
        await asyncio.sleep(WAIT)
    assert caught.value.kind == "slow"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.01)  # a later await is not hit by a stale cancellation


async def test_bounds_that_finish_in_time_never_fire_however_many() -> None:
    """Each wait only moves a deadline; the one timer keeps up with all of them."""
    guard = ConnectionGuard("t", FakeWriter(), ServiceLimits(), Counter())
    loop = asyncio.get_running_loop()
    end = loop.time() + 0.5
    waits = 0
    while loop.time() < end:  # 0.5 s of 1 ms waits under a 0.1 s limit each
        with guard.bound("each", 0.1):
            await asyncio.sleep(0.001)
        waits += 1
    assert waits > 10


async def test_cancelling_the_handler_is_not_mistaken_for_a_limit() -> None:
    counters: Counter[str] = Counter()
    service = EchoService(limits=ServiceLimits(idle_timeout=WAIT), counters=counters)
    writer = FakeWriter()
    task = asyncio.create_task(service(SilentReader(), writer))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert counters["echo_idle_timeout"] == 0
    assert writer.closed


async def test_bounds_do_not_nest() -> None:
    guard = ConnectionGuard("t", FakeWriter(), ServiceLimits(), Counter())
    with guard.bound("outer", 1.0), pytest.raises(RuntimeError), guard.bound("inner", 1.0):
        pass


# -- one clock for all the guards of a loop ---------------------------------------


async def test_many_guards_share_one_clock_and_each_fires_on_its_own_deadline() -> None:
    """Guards of one loop keep their deadlines in one shared clock (one event-loop
    timer, not one per connection); each bound still expires on its own."""
    loop = asyncio.get_running_loop()
    clock = guard_clock(loop)
    assert guard_clock(loop) is clock
    expired: list[int] = []

    async def waiter(i: int) -> None:
        guard = ConnectionGuard("t", FakeWriter(), ServiceLimits(), Counter())
        assert guard._clock is clock
        try:
            with guard.bound("idle", 0.05 + 0.01 * (i % 5)):
                await asyncio.sleep(WAIT)
        except LimitExpired:
            expired.append(i)

    start = loop.time()
    await asyncio.wait_for(asyncio.gather(*(waiter(i) for i in range(200))), WAIT)
    assert sorted(expired) == list(range(200))
    assert loop.time() - start < WAIT / 2


async def test_a_guard_rearmed_for_the_same_deadline_fires_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped guard's clock entry is stale even if the guard re-arms for the very
    same time: the task is cancelled once, and nothing is left cancelling it."""
    loop = asyncio.get_running_loop()
    guard = ConnectionGuard("t", FakeWriter(), ServiceLimits(), Counter())
    frozen = loop.time()
    with monkeypatch.context() as m:
        m.setattr(loop, "time", lambda: frozen)  # both bounds get the same deadline
        guard._arm("first", 0.05)
        guard._disarm("first")
        guard._stop_timer()
        guard._arm("second", 0.05)
    assert guard._clock.pending >= 2  # the stale entry and the live one, same time
    with pytest.raises(LimitExpired):
        try:
            await asyncio.sleep(WAIT)
        finally:
            if guard._disarm("second"):
                raise LimitExpired("second")
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.1)  # no second cancellation arrives


async def test_stale_clock_entries_are_dropped_so_the_clock_stays_small() -> None:
    """Connections that come and go (their bounds finish early, the guard goes away)
    leave stale entries; the clock rebuilds its heap, so it holds about twice the
    live entries at most, not one per bound ever made."""
    clock = guard_clock(asyncio.get_running_loop())
    for _ in range(5 * COMPACT_MIN):
        guard = ConnectionGuard("t", FakeWriter(), ServiceLimits(), Counter())
        with guard.bound("quick", WAIT):
            pass
        guard._stop_timer()
    assert clock.pending <= 2 * COMPACT_MIN
