"""A Linux TUN interface as a non-blocking packet file descriptor.

How TUN works (kernel ``Documentation/networking/tuntap.rst``):

* Every interface is made by opening the *clone device* ``/dev/net/tun`` and
  issuing the ``TUNSETIFF`` ioctl with a ``struct ifreq`` naming the interface
  and carrying flags (tuntap.rst section 3, "Program interface"). If no
  interface of that name exists the kernel creates one; if a TUN interface of
  that name exists (e.g. a persistent one made by ``ip tuntap add``), the file
  descriptor is attached to it instead. The name may be a template such as
  ``"tun%d"``; the kernel writes the name it chose back into the ``ifreq``.
* ``IFF_TUN`` asks for a layer-3 device: each ``read()`` returns exactly one IP
  packet the kernel routed into the interface, each ``write()`` hands exactly
  one IP packet to the kernel's input path as if it had arrived on the wire.
  No link-layer header, no ARP.
* ``IFF_NO_PI`` drops the 4-byte "packet information" prefix (flags and an
  EtherType) that TUN would otherwise put in front of every frame
  (tuntap.rst 3.2, "Frame format"); the kernel then infers IPv4 vs IPv6 on
  write from the version nibble of the packet.
* A non-persistent interface lives exactly as long as some file descriptor is
  attached to it: closing the last one unregisters it. A *persistent* one
  (``TUNSETPERSIST``, which is what ``ip tuntap add`` does) survives.
* Without ``IFF_MULTI_QUEUE`` an interface has a single queue, so only one file
  descriptor can be attached at a time; a second ``TUNSETIFF`` fails with
  ``EBUSY`` (see the "Multiqueue tuntap interface" part of tuntap.rst).

Addresses, MTU and link state are configured over rtnetlink with pyroute2.

.. warning::
   pyroute2 (0.9.x) runs its netlink socket on an asyncio event loop of its own
   and cannot run while an event loop is already running in the calling
   thread; it also fails outright on uvloop loops (uvloop cannot open an
   ``AF_NETLINK`` datagram endpoint), including when a uvloop event-loop policy
   is merely installed. This module therefore always hands pyroute2 a private
   stdlib :class:`asyncio.SelectorEventLoop`. Call :meth:`TunDevice.open` and
   :meth:`TunDevice.close` before the application's loop starts, after it
   stops, or from a worker thread (``await asyncio.to_thread(dev.close)``). If
   they are called on a thread whose loop is running, the netlink work is done
   on a short-lived helper thread and the loop is blocked until it finishes
   (milliseconds), which is correct but stalls every other task meanwhile.

The reading and writing methods never touch netlink and are safe to call from
``loop.add_reader`` callbacks. pyroute2 itself is imported only when netlink is
used, so validating names (:func:`check_name`) works without it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno as _errno
import fcntl
import io
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

__all__ = [
    "IFF_MULTI_QUEUE",
    "IFF_NO_PI",
    "IFF_TAP",
    "IFF_TUN",
    "IFF_TUN_EXCL",
    "IFF_VNET_HDR",
    "IFNAMSIZ",
    "TUNSETIFF",
    "Packet",
    "TunDevice",
    "TunError",
    "ipv6_disabled",
]

TUN_CLONE_DEVICE = "/dev/net/tun"
"""The clone device every TUN/TAP file descriptor is opened from."""

IFNAMSIZ = 16
"""Size of an interface name buffer in ``struct ifreq``, including the NUL:
names are at most 15 bytes (``include/uapi/linux/if.h``)."""

# Flags for ifreq.ifr_flags, from include/uapi/linux/if_tun.h.
IFF_TUN = 0x0001
"""Layer-3 device: the file carries bare IP packets."""
IFF_TAP = 0x0002
"""Layer-2 device: the file carries Ethernet frames (not used here)."""
IFF_NO_PI = 0x1000
"""Do not prefix each packet with the 4-byte ``struct tun_pi``."""
IFF_TUN_EXCL = 0x8000
"""Fail with EBUSY instead of attaching if the interface already exists."""
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100
"""Several file descriptors (queues) per interface; the kernel spreads flows over them."""
"""Prefix every packet with a ``struct virtio_net_hdr`` (see :mod:`tcpstack.wire.virtio`)."""

# Offload features for TUNSETOFFLOAD (if_tun.h): what the kernel may hand us.
TUN_F_CSUM = 0x01
"""Packets may arrive with a partial checksum (virtio NEEDS_CSUM)."""
TUN_F_TSO4 = 0x02
"""TCP/IPv4 super-segments (up to 64 KiB) may arrive unsegmented."""
TUN_F_TSO6 = 0x04
"""TCP/IPv6 super-segments may arrive unsegmented."""

# TUNSETIFF is _IOW('T', 202, int) in if_tun.h. Encoded with the asm-generic
# ioctl layout (x86, arm, arm64, riscv): dir(write=1)<<30 | size<<16 | type<<8 | nr.
TUNSETIFF = (1 << 30) | (4 << 16) | (ord("T") << 8) | 202  # == 0x400454CA
# TUNSETOFFLOAD is _IOW('T', 208, unsigned int).
TUNSETOFFLOAD = (1 << 30) | (4 << 16) | (ord("T") << 8) | 208  # == 0x400454D0

# struct ifreq: char ifr_name[IFNAMSIZ] then a union whose first member we use,
# short ifr_flags; the union is 24 bytes on 64-bit, so the struct is 40 bytes.
_IFREQ = struct.Struct("16sH22x")

_MIN_MTU = 68  # ETH_MIN_MTU; the TUN driver's lower bound
_MAX_MTU = 65535  # MAX_MTU in drivers/net/tun.c

_RTNL_TUN_KIND = "tun"  # IFLA_INFO_KIND of both TUN and TAP interfaces
_IFA_F_NODAD = 0x02  # linux/if_addr.h: no duplicate address detection for this address

Packet = bytes | bytearray | memoryview
"""Anything :meth:`TunDevice.write` accepts."""

_T = TypeVar("_T")


class TunError(Exception):
    """Opening or configuring a TUN interface failed; the message is one line.

    ``errno`` holds the underlying error number when there was one.
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


@dataclass(frozen=True, slots=True)
class _Link:
    """What rtnetlink tells about one interface."""

    index: int
    kind: str | None
    tun_type: int | None
    multi_queue: bool
    mtu: int
    addresses: frozenset[ipaddress.IPv4Interface | ipaddress.IPv6Interface]


# --------------------------------------------------------------------- netlink


def _netlink(fn: Callable[[Any], _T]) -> _T:
    """Run ``fn(ipr)`` with a short-lived pyroute2 ``IPRoute`` in this network namespace.

    See the module docstring for why pyroute2 gets a private selector loop and
    why a thread whose event loop is running delegates to a helper thread.
    (A new thread inherits the caller's network namespace, so this is safe.)
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _netlink_here(fn)
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="tcpstack-netlink"
    ) as pool:
        return pool.submit(_netlink_here, fn).result()


def _netlink_here(fn: Callable[[Any], _T]) -> _T:
    from pyroute2 import IPRoute

    loop = asyncio.SelectorEventLoop()
    try:
        try:
            ipr = IPRoute(use_event_loop=loop)
        except OSError as exc:
            raise TunError(
                f"cannot open an rtnetlink socket: {os.strerror(exc.errno or 0)}",
                errno=exc.errno,
            ) from exc
        with ipr:
            return fn(ipr)
    finally:
        if not loop.is_closed():
            # pyroute2 closes its datagram transport but the transport only
            # finishes closing (connection_lost) on a later loop iteration;
            # give it one so that no ResourceWarning is left behind.
            try:
                loop.run_until_complete(asyncio.sleep(0))
            finally:
                loop.close()


def _nl_step(what: str, fn: Callable[[], _T]) -> _T:
    """Run one netlink request, turning its failure into a one-line :class:`TunError`."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return fn()
    except NetlinkError as exc:
        code = int(exc.code)
        raise TunError(f"{what}: {os.strerror(code)}", errno=code) from exc


def _lookup(ipr: Any, name: str) -> _Link | None:
    """Describe interface ``name``, or return None when there is none."""
    indices = ipr.link_lookup(ifname=name)
    if not indices:
        return None
    index = int(indices[0])
    msg = ipr.get_links(index)[0]
    kind: str | None = None
    tun_type: int | None = None
    multi_queue = False
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    if linkinfo is not None:
        kind = linkinfo.get_attr("IFLA_INFO_KIND")
        data = linkinfo.get_attr("IFLA_INFO_DATA")
        if kind == _RTNL_TUN_KIND and data is not None and hasattr(data, "get_attr"):
            raw_type = data.get_attr("IFLA_TUN_TYPE")
            tun_type = None if raw_type is None else int(raw_type)
            multi_queue = bool(data.get_attr("IFLA_TUN_MULTI_QUEUE"))
    addresses: set[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = set()
    for amsg in ipr.get_addr(index=index, family=socket.AF_INET):
        # On point-to-point links (TUN is one) IFA_ADDRESS is the peer; the
        # interface's own address is IFA_LOCAL.
        local = amsg.get_attr("IFA_LOCAL") or amsg.get_attr("IFA_ADDRESS")
        if local is not None:
            addresses.add(ipaddress.IPv4Interface(f"{local}/{int(amsg['prefixlen'])}"))
    for amsg in ipr.get_addr(index=index, family=socket.AF_INET6):
        local = amsg.get_attr("IFA_ADDRESS")
        if local is not None:
            addresses.add(ipaddress.IPv6Interface(f"{local}/{int(amsg['prefixlen'])}"))
    return _Link(
        index=index,
        kind=None if kind is None else str(kind),
        tun_type=tun_type,
        multi_queue=multi_queue,
        mtu=int(msg.get_attr("IFLA_MTU")),
        addresses=frozenset(addresses),
    )


def _configure(
    ipr: Any,
    name: str,
    mtu: int,
    host_address: ipaddress.IPv4Interface | None,
    txqueuelen: int | None = None,
    host_address6: ipaddress.IPv6Interface | None = None,
) -> _Link:
    """Set the MTU (and queue length), add the host-side addresses if missing, bring it up.

    The IPv6 address is added without duplicate address detection
    (``IFA_F_NODAD``): on a TUN nobody could answer DAD's neighbour solicitation,
    so it would only keep the address tentative -- unusable -- for a second or so.
    """
    link = _nl_step(f"cannot look up {name!r}", lambda: _lookup(ipr, name))
    if link is None:
        raise TunError(f"interface {name!r} vanished while being configured")
    index = link.index
    if txqueuelen is not None:
        _nl_step(
            f"cannot set txqueuelen {txqueuelen} on {name!r}",
            lambda: ipr.link("set", index=index, txqlen=txqueuelen),
        )
    if link.mtu != mtu:
        _nl_step(
            f"cannot set MTU {mtu} on {name!r}",
            lambda: ipr.link("set", index=index, mtu=mtu),
        )
    if host_address is not None and host_address not in link.addresses:
        _nl_step(
            f"cannot add address {host_address} to {name!r}",
            lambda: ipr.addr(
                "add",
                index=index,
                address=str(host_address.ip),
                prefixlen=host_address.network.prefixlen,
            ),
        )
    if host_address6 is not None and host_address6 not in link.addresses:
        _nl_step(
            f"cannot add address {host_address6} to {name!r} (IPv6 needs an MTU of at "
            "least 1280 and IPv6 enabled in the namespace)",
            lambda: ipr.addr(
                "add",
                index=index,
                address=str(host_address6.ip),
                prefixlen=host_address6.network.prefixlen,
                flags=_IFA_F_NODAD,
            ),
        )
    _nl_step(f"cannot bring {name!r} up", lambda: ipr.link("set", index=index, state="up"))
    final = _nl_step(f"cannot look up {name!r}", lambda: _lookup(ipr, name))
    if final is None:
        raise TunError(f"interface {name!r} vanished while being configured")
    return final


def _delete_if_ours(ipr: Any, name: str, index: int) -> None:
    """Delete ``name`` if it still exists and is the TUN interface we created."""
    from pyroute2.netlink.exceptions import NetlinkError

    link = _lookup(ipr, name)
    if link is None or link.index != index or link.kind != _RTNL_TUN_KIND:
        return
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if int(exc.code) != _errno.ENODEV:  # gone in the meantime is fine
            raise


def ipv6_disabled(proc: Path = Path("/proc/sys/net/ipv6/conf/default/disable_ipv6")) -> bool:
    """True if a new interface in this network namespace gets no IPv6 (the kernel has
    none, or ``net.ipv6.conf.default.disable_ipv6`` is 1, as in a Docker container
    on a network without IPv6): an IPv6 host-side address could not be added."""
    try:
        return proc.read_text().strip() != "0"
    except OSError:
        return True


# ----------------------------------------------------------------- char device


def check_name(name: str) -> bytes:
    """Validate an interface name the way the kernel's ``dev_valid_name`` does."""
    encoded = name.encode()
    if not encoded:
        raise TunError("interface name is empty")
    if len(encoded) > IFNAMSIZ - 1:
        raise TunError(
            f"interface name {name!r} is {len(encoded)} bytes long; "
            f"Linux allows at most {IFNAMSIZ - 1}"
        )
    if name in (".", "..") or any(c == "/" or c == ":" or c.isspace() for c in name):
        raise TunError(f"invalid interface name {name!r}")
    return encoded


def _open_clone_device() -> int:
    try:
        return os.open(TUN_CLONE_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (_errno.ENOENT, _errno.ENODEV, _errno.ENXIO):
            why = "not available (no device node, or the tun driver is missing)"
        elif exc.errno in (_errno.EACCES, _errno.EPERM):
            why = "not accessible (needs root or permission on the device node)"
        else:
            why = os.strerror(exc.errno or 0)
        raise TunError(f"cannot open {TUN_CLONE_DEVICE}: {why}", errno=exc.errno) from exc


def _tunsetiff(fd: int, encoded_name: bytes, flags: int, *, creating: bool) -> str:
    """Issue TUNSETIFF; return the name the kernel reports back."""
    name = encoded_name.decode()
    try:
        result = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(encoded_name, flags))
    except OSError as exc:
        code = exc.errno
        if code == _errno.EPERM:
            msg = (
                f"not permitted to {'create' if creating else 'attach to'} TUN interface "
                f"{name!r}: needs CAP_NET_ADMIN in the network namespace "
                "(or to be the device's owner/group)"
            )
        elif code == _errno.EBUSY and creating:
            msg = f"interface {name!r} appeared while it was being created"
        elif code == _errno.EBUSY:
            msg = (
                f"TUN interface {name!r} is busy: another file descriptor is already "
                "attached to its single queue"
            )
        elif code == _errno.EINVAL:
            msg = (
                f"kernel rejected TUNSETIFF for {name!r}: invalid name or incompatible "
                "existing device (TAP or multi-queue)"
            )
        else:
            msg = f"TUNSETIFF for {name!r} failed: {os.strerror(code or 0)}"
        raise TunError(msg, errno=code) from exc
    raw_name: bytes = _IFREQ.unpack(result)[0]
    return raw_name.split(b"\0", 1)[0].decode()


def _set_offload(fd: int) -> int:
    """Ask for checksum + TSO offloads, degrading to what the kernel grants; return it."""
    for features in (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6, TUN_F_CSUM):
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, features)
        except OSError:
            continue
        return features
    return 0


def _validate_open_args(name: str, mtu: int) -> bytes:
    """Check the name (as the kernel would) and the MTU; return the encoded name."""
    encoded = check_name(name)
    if not _MIN_MTU <= mtu <= _MAX_MTU:
        raise TunError(f"MTU {mtu} out of range [{_MIN_MTU}, {_MAX_MTU}] for a TUN device")
    return encoded


def _check_existing(name: str, queues: int) -> _Link | None:
    """Look ``name`` up over netlink; refuse an existing interface we cannot attach to.

    Returns None when there is no such interface (it will be created).
    """
    existing = _netlink(
        lambda ipr: _nl_step(f"cannot look up interface {name!r}", lambda: _lookup(ipr, name))
    )
    if existing is None:
        return None
    if existing.kind != _RTNL_TUN_KIND:
        raise TunError(
            f"interface {name!r} exists but is not a TUN device "
            f"(kind: {existing.kind or 'unknown, e.g. physical or loopback'})"
        )
    if existing.tun_type == IFF_TAP:
        raise TunError(f"interface {name!r} exists but is a TAP device, not TUN")
    if existing.multi_queue != (queues > 1):
        raise TunError(
            f"interface {name!r} is "
            f"{'a multi-queue' if existing.multi_queue else 'a single-queue'} TUN "
            f"device; {queues} queue(s) requested"
        )
    return existing


def _check_queue_count(queues: int) -> None:
    if not 1 <= queues <= 256:
        raise TunError(f"queue count {queues} out of range 1..256")


def _tun_flags(*, creating: bool, queues: int) -> int:
    """``ifr_flags`` for TUNSETIFF: a layer-3 device without packet information;
    exclusive when creating (a concurrent creator makes us fail, not attach)."""
    flags = IFF_TUN | IFF_NO_PI | (IFF_TUN_EXCL if creating else 0)
    if queues > 1:
        flags |= IFF_MULTI_QUEUE
    return flags


def _attach(encoded: bytes, flags: int, *, offload: bool, creating: bool) -> tuple[int, str, bool]:
    """Open the clone device and TUNSETIFF it; return the fd, the kernel's name for
    the interface, and whether it has virtio-net headers.

    With ``offload``, ``IFF_VNET_HDR`` is asked for first; a kernel that refuses
    it (EINVAL) gets a plain request instead. The fd is closed on failure.
    """
    fd = _open_clone_device()
    try:
        if offload:
            try:
                return fd, _tunsetiff(fd, encoded, flags | IFF_VNET_HDR, creating=creating), True
            except TunError as exc:
                if exc.errno != _errno.EINVAL:
                    raise
        return fd, _tunsetiff(fd, encoded, flags, creating=creating), False
    except BaseException:
        os.close(fd)
        raise


# ---------------------------------------------------------------------- device


class TunDevice:
    """An open, non-blocking TUN interface (``IFF_TUN | IFF_NO_PI``).

    Create one with :meth:`open`. Attributes:

    ``fd``
        The non-blocking file descriptor (``-1`` once closed); register it with
        ``loop.add_reader`` and drain it with :meth:`read_batch`.
    ``name``
        The interface name as the kernel reports it.
    ``mtu``
        The interface MTU as configured in the kernel when the device was opened.
    ``created``
        True if :meth:`open` created the interface (it is then removed by
        :meth:`close`), False if it attached to an existing one.
    ``index``
        The interface index (``ifindex``).
    """

    __slots__ = ("_rbuf", "_reader", "created", "extra_fds", "fd", "index", "last_write_errno",
                 "mtu", "name", "offloads", "vnet_hdr")

    def __init__(self, fd: int, name: str, mtu: int, created: bool, index: int) -> None:
        self.fd = fd
        self.name = name
        self.mtu = mtu
        self.created = created
        self.index = index
        self.vnet_hdr = False
        self.offloads = 0
        #: Why the last :meth:`write_batch` stopped short (EAGAIN, ENOBUFS) or None.
        self.last_write_errno: int | None = None
        # Queues 1..N-1 of a multi-queue interface (queue 0 is ``fd``).
        self.extra_fds: list[int] = []
        # What read_batch reads into (then copies each packet out at its own size).
        self._rbuf = bytearray()
        # read_batch's reads: FileIO.readinto answers None when nothing is queued
        # (os.readv raises BlockingIOError, once per batch) and costs less per call.
        # It never closes the descriptor; close() does.
        self._reader = io.FileIO(fd, "rb", closefd=False)

    # -- lifecycle ------------------------------------------------------------

    @classmethod
    def open(
        cls,
        name: str,
        *,
        mtu: int = 1500,
        host_address: ipaddress.IPv4Interface | None = None,
        host_address6: ipaddress.IPv6Interface | None = None,
        configure: bool | None = None,
        offload: bool = False,
        txqueuelen: int | None = None,
        queues: int = 1,
    ) -> TunDevice:
        """Open (creating if needed) the TUN interface ``name`` in this network namespace.

        If an interface called ``name`` already exists it must be a single-queue
        TUN interface (for example a persistent one from
        ``ip tuntap add mode tun name NAME``); the device attaches to it and,
        unless ``configure`` is True, leaves its MTU, addresses and link state
        alone. Such an interface is never deleted by :meth:`close`.

        Otherwise the interface is created (``IFF_TUN_EXCL`` guards against a
        concurrent creator) and, unless ``configure`` is False, given ``mtu``,
        the host-side (kernel) address ``host_address`` such as
        ``IPv4Interface("10.0.0.1/24")`` and, for IPv6, ``host_address6`` such
        as ``IPv6Interface("fd00::1/64")`` (added without duplicate address
        detection, which a TUN cannot answer), and brought up. The kernel adds
        the connected routes for their networks, so traffic to the other
        addresses of those networks is routed into the device. No neighbour
        discovery (RFC 4861) happens on a TUN: it has no link-layer addresses,
        so the kernel's neighbour entries for it need no resolution (NOARP) and
        packets for on-link IPv6 addresses are written to the device directly.

        ``configure=True`` on an existing interface sets its MTU, adds
        ``host_address`` and ``host_address6`` if they are not present and
        brings it up.

        ``name`` may be a kernel template like ``"tcpst%d"``; the chosen name is
        in :attr:`name`.

        Raises :class:`TunError` (one-line message) on any failure: name too
        long or invalid, MTU out of range, an existing interface that is not a
        TUN interface, missing permission (EPERM), an interface already held
        by another file descriptor (EBUSY), or a netlink configuration error
        (such as EEXIST for an address). A device created before a
        configuration error is removed again.

        With ``offload`` the descriptor is opened with ``IFF_VNET_HDR`` and asks
        for checksum and TSO offloads (``TUNSETOFFLOAD``), as wireguard-go does:
        packets then carry a virtio-net header both ways, the kernel hands over
        TCP super-segments of up to 64 KiB and accepts them for segmentation.
        If the kernel refuses, it falls back to checksum offload only, then to
        plain packets; :attr:`vnet_hdr` and :attr:`offloads` say what was granted.

        ``queues`` > 1 opens a multi-queue interface (``IFF_MULTI_QUEUE``) with that
        many file descriptors: queue 0 is :attr:`fd`; :meth:`queue` hands each to
        a worker. The kernel steers every flow to one queue by its hash.

        ``txqueuelen``, when configuring, sets how many packets the kernel queues
        for us before dropping (the TUN default of 500 drops bursts such as
        thousands of simultaneous connection attempts).

        Uses pyroute2; see the module docstring about event loops.

        The steps, each below: validate the arguments, look at an existing
        interface of that name, open the clone device and attach (TUNSETIFF),
        ask for offloads, attach the other queues, then configure or look up
        the link over netlink. Anything opened is closed again if a later
        step fails.
        """
        encoded = _validate_open_args(name, mtu)
        existing = _check_existing(name, queues)
        _check_queue_count(queues)
        creating = existing is None
        flags = _tun_flags(creating=creating, queues=queues)
        fd, actual_name, vnet = _attach(encoded, flags, offload=offload, creating=creating)
        device = cls(fd, actual_name, mtu, creating, -1)
        device.vnet_hdr = vnet
        device.offloads = _set_offload(fd) if vnet else 0
        queue_flags = (flags & ~IFF_TUN_EXCL) | (IFF_VNET_HDR if vnet else 0)
        device._or_close(lambda: device._attach_extra_queues(queue_flags, queues - 1))
        do_configure = creating if configure is None else configure
        device._or_close(
            lambda: device._set_up_link(do_configure, mtu, host_address, txqueuelen,
                                        host_address6)
        )
        return device

    def _or_close(self, step: Callable[[], None]) -> None:
        """Run one step of :meth:`open`; if it fails, close the device and re-raise.

        A failure to close is not reported: the step's own error is the one
        that matters.
        """
        try:
            step()
        except BaseException:
            try:
                self.close()
            except TunError:
                pass
            raise

    def _attach_extra_queues(self, flags: int, count: int) -> None:
        """Open ``count`` more descriptors on the interface (multi-queue)."""
        encoded = self.name.encode()
        for _ in range(count):
            qfd = _open_clone_device()
            try:
                _tunsetiff(qfd, encoded, flags, creating=False)
            except BaseException:
                os.close(qfd)
                raise
            self.extra_fds.append(qfd)

    def _set_up_link(
        self,
        configure: bool,
        mtu: int,
        host_address: ipaddress.IPv4Interface | None,
        txqueuelen: int | None,
        host_address6: ipaddress.IPv6Interface | None = None,
    ) -> None:
        """Learn the index; over netlink, configure the link or just look it up.

        The index comes from SIOCGIFINDEX (an ioctl, no netlink); it is what
        :meth:`close` later uses to recognise "our" interface. The netlink
        part runs through :func:`_netlink`, which keeps pyroute2 off a running
        (uvloop) event loop. Sets :attr:`index` and :attr:`mtu` from the
        kernel's answer.
        """
        name = self.name
        self.index = socket.if_nametoindex(name)
        if configure:
            link = _netlink(lambda ipr: _configure(ipr, name, mtu, host_address, txqueuelen,
                                                   host_address6))
        else:
            found = _netlink(
                lambda ipr: _nl_step(f"cannot look up {name!r}", lambda: _lookup(ipr, name))
            )
            if found is None:
                raise TunError(f"interface {name!r} vanished after TUNSETIFF")
            link = found
        self.index = link.index
        self.mtu = link.mtu

    def close(self) -> None:
        """Close the file descriptor; remove the interface if :meth:`open` created it.

        Closing the last descriptor of a non-persistent TUN interface makes the
        kernel unregister it; if it is still there (its descriptor was shared
        with a forked child, or someone made it persistent) it is deleted over
        netlink, but only if it still has the ifindex it was created with.
        Idempotent. Uses pyroute2 when the interface was created; see the
        module docstring about event loops.
        """
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        os.close(fd)
        self.release_queues()
        if self.created:
            name, index = self.name, self.index
            _netlink(
                lambda ipr: _nl_step(
                    f"cannot delete interface {name!r}", lambda: _delete_if_ours(ipr, name, index)
                )
            )

    @property
    def queue_count(self) -> int:
        return 1 + len(self.extra_fds)

    def queue(self, i: int) -> TunDevice:
        """A device for queue ``i`` alone, for a worker process (after ``fork``).

        It shares this device's settings, owns only that queue's descriptor and never
        deletes the interface; the caller should :meth:`release_queues` the others.
        """
        fds = [self.fd, *self.extra_fds]
        if not 0 <= i < len(fds) or fds[i] < 0:
            raise ValueError(f"no queue {i}")
        q = TunDevice(fds[i], self.name, self.mtu, False, self.index)
        q.vnet_hdr = self.vnet_hdr
        q.offloads = self.offloads
        return q

    def release_queues(self, keep: int | None = None) -> None:
        """Close every queue descriptor except ``keep`` (no netlink involved)."""
        fds = [self.fd, *self.extra_fds]
        for i, fd in enumerate(fds):
            if i != keep and fd >= 0:
                os.close(fd)
        self.extra_fds = []
        if keep != 0:
            self.fd = -1

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self.fd < 0

    def fileno(self) -> int:
        """The file descriptor, for ``select``/``loop.add_reader``."""
        return self.fd

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.fd < 0 else f"fd={self.fd}"
        return (
            f"<TunDevice {self.name!r} {state} mtu={self.mtu} "
            f"{'created' if self.created else 'attached'}>"
        )

    # -- I/O ------------------------------------------------------------------

    def read_batch(self, max_packets: int = 256, bufsize: int = 65536) -> list[bytes]:
        """Read up to ``max_packets`` packets without blocking; ``[]`` if none is queued.

        Each read returns one whole IP packet. A packet longer than ``bufsize``
        is silently truncated by the kernel, so keep ``bufsize`` at least the
        MTU (the default covers the largest possible TUN MTU). Raises
        :class:`ValueError` on a closed device and :class:`EOFError` if a read
        returns nothing (end of file: a TUN never does while attached); other
        ``OSError`` s propagate (EBADFD once the interface was deleted
        underneath).
        """
        fd = self.fd
        if fd < 0:
            raise ValueError("I/O on a closed TunDevice")
        # Into one reused buffer, then a copy at the packet's size: os.read(fd, 64 KiB)
        # would allocate 64 KiB per packet and shrink it in place, and the malloc heap,
        # with small long-lived objects settling into the remainders, fragments and
        # grows for as long as packets come (about 35 MiB per million, mostly garbage).
        if len(self._rbuf) < bufsize:
            self._rbuf = bytearray(bufsize)
        view = memoryview(self._rbuf)[:bufsize]
        packets: list[bytes] = []
        append = packets.append
        readinto = self._reader.readinto
        for _ in range(max_packets):
            n = readinto(view)
            if n is None:
                break  # EAGAIN: nothing more queued
            if not n:
                raise EOFError(f"end of file on TUN device {self.name!r}")
            append(view[:n].tobytes())
        return packets

    def write(self, packet: Packet) -> bool:
        """Hand one IP packet to the kernel; False if it was not taken.

        False means the kernel had no room right now (EAGAIN or ENOBUFS); the
        packet was dropped and nothing was counted, so the caller decides
        whether to retry or count a drop. Any other ``OSError`` propagates
        (e.g. EINVAL for a packet whose first nibble is neither 4 nor 6).
        """
        fd = self.fd
        if fd < 0:
            raise ValueError("I/O on a closed TunDevice")
        try:
            os.write(fd, packet)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno == _errno.ENOBUFS:
                return False
            raise
        return True

    #: write_batch accepts ``(headers, payload)`` tuples, written with one writev.
    supports_scatter = True

    def write_batch(self, packets: Iterable[Packet | tuple[Packet, Packet]]) -> int:
        """Write packets in order until one is not taken; return how many were written.

        A packet may be a tuple of buffers, gathered by ``writev`` into one packet.
        When the kernel has no room (EAGAIN or ENOBUFS) the batch stops there and
        :attr:`last_write_errno` says which (it is None after a complete batch);
        the caller decides whether to retry. Any other ``OSError`` propagates,
        with a ``written`` attribute: how many packets went out before it.
        """
        fd = self.fd
        if fd < 0:
            raise ValueError("I/O on a closed TunDevice")
        write = os.write
        writev = os.writev
        written = 0
        self.last_write_errno = None
        for packet in packets:
            try:
                if isinstance(packet, tuple):
                    writev(fd, packet)  # headers + payload view: no copy in Python
                else:
                    write(fd, packet)
            except BlockingIOError:
                self.last_write_errno = _errno.EAGAIN
                break
            except OSError as exc:
                if exc.errno == _errno.ENOBUFS:
                    self.last_write_errno = _errno.ENOBUFS
                    break
                setattr(exc, "written", written)  # noqa: B010 -- see the docstring
                raise
            written += 1
        return written
