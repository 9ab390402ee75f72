"""The asyncio runtime's device handling: a device that dies, and writes it refuses.

A scripted device stands in for the TUN: its readiness comes from one end of a
socketpair (so the event loop really polls a descriptor), its reads and writes
do what each test says. The stack is real; a SYN to a closed port makes it
send a RST, the kind of packet that must never vanish without a count.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Iterable, Iterator

import pytest
from tcp_helpers import IRS, packet, parse, stack, syn_from_peer

from tcpstack.aio.devices import DeviceError
from tcpstack.aio.runtime import StackRuntime
from tcpstack.link.tun import TunDevice
from tcpstack.stack import Stack
from tcpstack.wire.tcp import ACK, RST, OutPacket

PEER = "10.0.0.1"
US = "10.0.0.2"
WAIT = 5.0


class ScriptedDevice:
    """A ``PacketDevice`` whose reads and writes follow the test's script.

    ``read_error``: what every read raises (None: return ``inbox``).
    ``write_script``: one entry per ``write_batch`` call, then "take":
    ``"take"`` writes everything; ``("stall", errno)`` takes nothing and sets
    ``last_write_errno`` (EAGAIN, ENOBUFS), as the TUN device does;
    ``("raise", errno, n)`` takes ``n`` packets, then raises that error.
    """

    def __init__(self) -> None:
        self.sock, self.peer = socket.socketpair()
        self.sock.setblocking(False)
        self.inbox: list[bytes] = []
        self.read_error: BaseException | None = None
        self.reads = 0
        self.write_calls = 0
        self.write_script: list[object] = []
        self.written: list[bytes] = []
        self.last_write_errno: int | None = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def make_readable(self) -> None:
        self.peer.send(b"!")

    def read_batch(self, max_packets: int = 256, bufsize: int = 65536) -> list[bytes]:
        self.reads += 1
        if self.read_error is not None:
            raise self.read_error  # leaves the descriptor readable, like a dead TUN
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            pass
        batch, self.inbox = self.inbox[:max_packets], self.inbox[max_packets:]
        return batch

    def write_batch(self, packets: Iterable[OutPacket]) -> int:
        self.write_calls += 1
        batch = [b"".join(p) if isinstance(p, tuple) else bytes(p) for p in packets]
        step = self.write_script.pop(0) if self.write_script else "take"
        self.last_write_errno = None
        if step == "take":
            self.written += batch
            return len(batch)
        assert isinstance(step, tuple)
        if step[0] == "stall":
            self.last_write_errno = step[1]
            return 0
        _, code, taken = step
        self.written += batch[:taken]
        exc = OSError(code, os.strerror(code))
        exc.written = taken  # type: ignore[attr-defined]
        raise exc

    def close(self) -> None:
        self.sock.close()
        self.peer.close()


@pytest.fixture
def device() -> Iterator[ScriptedDevice]:
    dev = ScriptedDevice()
    yield dev
    dev.close()


def _runtime(st: Stack, dev: ScriptedDevice, failures: list[DeviceError] | None = None
             ) -> StackRuntime:
    rt = StackRuntime(st, dev, lambda tcb, events: None, asyncio.get_running_loop(),
                      on_fatal=None if failures is None else failures.append)
    rt.start()
    return rt


def _syn(port: int, seq: int = IRS, src_port: int = 40000) -> bytes:
    return bytes(packet(syn_from_peer(seq=seq, dst_port=port, src_port=src_port), PEER, US))


async def _until(predicate: object, timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def _settle() -> None:
    """Give the loop many iterations (and a little time) to do something wrong."""
    for _ in range(20):
        await asyncio.sleep(0.005)


# -- the device goes away ------------------------------------------------------


@pytest.mark.parametrize(
    "code", [errno.EBADFD, errno.EIO, errno.ENODEV, errno.ENXIO, errno.EBADF],
    ids=errno.errorcode.get,
)
async def test_read_error_of_a_vanished_device_is_reported_once_and_reading_stops(
    device: ScriptedDevice, code: int
) -> None:
    failures: list[DeviceError] = []
    rt = _runtime(stack(), device, failures)
    device.read_error = OSError(code, os.strerror(code))
    device.make_readable()
    await _until(lambda: failures)
    await _settle()
    assert device.reads == 1, "the runtime kept reading a dead device (busy loop)"
    (failure,) = failures
    assert failure.errno == code
    assert failure.operation == "read"
    assert rt.error is failure
    assert rt.stack.counters["device_failed"] == 1


async def test_end_of_file_on_the_device_is_fatal(device: ScriptedDevice) -> None:
    failures: list[DeviceError] = []
    _runtime(stack(), device, failures)
    device.read_error = EOFError("end of file")
    device.make_readable()
    await _until(lambda: failures)
    await _settle()
    assert device.reads == 1
    assert "end of file" in str(failures[0])


async def test_transient_read_error_is_counted_and_reading_goes_on(
    device: ScriptedDevice,
) -> None:
    failures: list[DeviceError] = []
    rt = _runtime(stack(), device, failures)
    device.read_error = OSError(errno.ENOMEM, "no memory")
    device.make_readable()
    await _until(lambda: rt.stack.counters["device_read_error"] >= 1)
    device.read_error = None
    device.inbox.append(_syn(81))
    device.make_readable()
    await _until(lambda: device.written)
    assert failures == []
    assert parse(device.written[0]).seg.flags == RST | ACK


async def test_write_error_of_a_vanished_device_is_fatal(device: ScriptedDevice) -> None:
    failures: list[DeviceError] = []
    rt = _runtime(stack(), device, failures)
    device.write_script = [("raise", errno.EBADFD, 0)]
    device.inbox.append(_syn(81))
    device.make_readable()
    await _until(lambda: failures)
    assert failures[0].operation == "write"
    assert failures[0].errno == errno.EBADFD
    assert rt.stack.counters["device_write_gone"] == 1, "the RST that was lost is counted"


async def test_nothing_is_written_to_a_device_after_it_failed(device: ScriptedDevice) -> None:
    failures: list[DeviceError] = []
    rt = _runtime(stack(), device, failures)
    device.read_error = OSError(errno.EBADFD, "gone")
    device.make_readable()
    await _until(lambda: failures)
    rt.stack.receive(_syn(81), 0.0)  # output produced after the failure
    rt.flush_now()
    assert device.write_calls == 0
    assert rt.stack.counters["device_write_gone"] == 1


async def test_without_an_owner_the_failure_is_logged_once(
    device: ScriptedDevice, caplog: pytest.LogCaptureFixture
) -> None:
    rt = _runtime(stack(), device)
    device.read_error = OSError(errno.EBADFD, "gone")
    with caplog.at_level(logging.ERROR, logger="tcpstack.runtime"):
        device.make_readable()
        await _until(lambda: rt.error is not None)
        await _settle()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "EBADFD" in errors[0].getMessage()


# -- writes the device refuses (ENOBUFS, EAGAIN) ----------------------------------


@pytest.mark.parametrize("code", [errno.ENOBUFS, errno.EAGAIN], ids=errno.errorcode.get)
async def test_refused_write_is_retried_and_the_rst_still_goes_out(
    device: ScriptedDevice, code: int
) -> None:
    rt = _runtime(stack(), device)
    device.write_script = [("stall", code)]
    device.inbox.append(_syn(81))
    device.make_readable()
    await _until(lambda: device.written)
    assert parse(device.written[0]).seg.flags == RST | ACK
    counters = rt.stack.counters
    assert counters["device_write_retried"] == 1
    assert counters["device_write_dropped"] == 0


@pytest.mark.parametrize("code", [errno.ENOBUFS, errno.EAGAIN], ids=errno.errorcode.get)
async def test_persistently_refused_writes_are_dropped_and_counted_by_reason(
    device: ScriptedDevice, code: int
) -> None:
    rt = _runtime(stack(), device)
    device.write_script = [("stall", code)] * 50
    device.inbox += [_syn(81, src_port=40000 + i) for i in range(3)]
    device.make_readable()
    name = errno.errorcode[code].lower()
    await _until(lambda: rt.stack.counters[f"device_write_{name}"] == 3)
    await _settle()
    assert device.written == []
    assert rt.stack.counters["device_write_dropped"] == 3
    assert rt.error is None, "a full queue is not a dead device"


async def test_stall_raised_as_an_error_is_retried_too(device: ScriptedDevice) -> None:
    """A device may raise ENOBUFS instead of returning short: the same retry applies."""
    rt = _runtime(stack(), device)
    device.write_script = [("raise", errno.ENOBUFS, 0)]
    device.inbox.append(_syn(81))
    device.make_readable()
    await _until(lambda: device.written)
    assert rt.stack.counters["device_write_retried"] == 1
    assert rt.stack.counters["device_write_dropped"] == 0


@pytest.mark.parametrize(("script", "delivered"), [
    pytest.param([("stall", errno.ENOBUFS)], 1, id="last-attempt-succeeds"),
    pytest.param([("stall", errno.ENOBUFS)] * 2, 0, id="last-attempt-refused"),
])
async def test_stopping_gives_held_packets_a_last_attempt_then_counts_them(
    device: ScriptedDevice, script: list[object], delivered: int
) -> None:
    """At shutdown the final RSTs are held like any others: never lost uncounted."""
    rt = _runtime(stack(), device)
    device.write_script = list(script)
    rt.stack.receive(_syn(81), 0.0)
    rt.flush_now()  # refused: held for a retry that stop() cancels
    rt.stop()
    assert len(device.written) == delivered
    assert rt.stack.counters["device_write_enobufs"] == 1 - delivered
    assert rt.stack.counters["device_write_dropped"] == 1 - delivered


async def test_packets_wait_behind_held_ones_in_order(device: ScriptedDevice) -> None:
    rt = _runtime(stack(), device)
    device.write_script = [("stall", errno.ENOBUFS)]
    device.inbox.append(_syn(81, src_port=40001))
    device.make_readable()
    await _until(lambda: device.write_calls >= 1)
    rt.stack.receive(_syn(81, src_port=40002), 0.0)
    rt.flush_now()
    await _until(lambda: len(device.written) == 2)
    assert [parse(p).seg.dst_port for p in device.written] == [40001, 40002]


async def test_a_packet_the_device_rejects_is_dropped_alone_and_counted(
    device: ScriptedDevice,
) -> None:
    rt = _runtime(stack(), device)
    device.write_script = [("raise", errno.EINVAL, 1)]
    device.inbox += [_syn(81, src_port=40000 + i) for i in range(3)]
    device.make_readable()
    await _until(lambda: len(device.written) == 2)
    assert [parse(p).seg.dst_port for p in device.written] == [40000, 40002]
    assert rt.stack.counters["device_write_einval"] == 1
    assert rt.stack.counters["device_write_dropped"] == 1
    assert rt.error is None


async def test_link_down_drops_are_counted_as_eio_and_not_fatal(device: ScriptedDevice) -> None:
    """A TUN whose link is down refuses writes with EIO: counted, not a dead device."""
    rt = _runtime(stack(), device)
    device.write_script = [("raise", errno.EIO, 0), ("raise", errno.EIO, 0)]
    device.inbox += [_syn(81, src_port=40000 + i) for i in range(2)]
    device.make_readable()
    await _until(lambda: rt.stack.counters["device_write_eio"] == 2)
    assert rt.error is None


# -- the TUN device's own read and write paths (on a pipe: no root needed) ------


def test_tun_read_batch_raises_eof_when_the_descriptor_reports_end_of_file() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    dev = TunDevice(r, "fake0", 1500, False, 0)
    try:
        assert dev.read_batch() == []  # nothing queued: EAGAIN, not an error
        os.write(w, b"\x45" * 20)
        assert dev.read_batch() == [b"\x45" * 20]
        os.close(w)
        with pytest.raises(EOFError):
            dev.read_batch()
    finally:
        dev.release_queues()


def test_tun_read_batch_returns_each_packet_at_its_own_size() -> None:
    # A SOCK_SEQPACKET pair keeps packet boundaries and truncates a packet longer
    # than the read, as a TUN does.
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.setblocking(False)
    dev = TunDevice(a.detach(), "fake0", 1500, False, 0)
    try:
        for packet in (b"\x45" * 20, b"\x46" * 1500, b"\x47" * 3000, b"\x48" * 40):
            b.send(packet)
        got = dev.read_batch(max_packets=3, bufsize=2048)
        assert got == [b"\x45" * 20, b"\x46" * 1500, b"\x47" * 2048]
        assert all(type(p) is bytes for p in got)
        assert dev.read_batch(bufsize=2048) == [b"\x48" * 40]  # the buffer is reused
        assert got[0] == b"\x45" * 20
    finally:
        dev.release_queues()
        b.close()


def test_tun_write_batch_reports_a_full_queue_as_a_stall_with_its_errno() -> None:
    r, w = os.pipe()
    os.set_blocking(w, False)
    dev = TunDevice(w, "fake0", 1500, False, 0)
    try:
        big = b"\x45" * 65536
        written = dev.write_batch([big] * 64)  # far more than a pipe buffer holds
        assert 0 < written < 64
        assert dev.last_write_errno == errno.EAGAIN
        os.read(r, 1 << 20)
        assert dev.write_batch([b"\x45" * 20]) == 1
        assert dev.last_write_errno is None
    finally:
        dev.release_queues()
        os.close(r)
