"""Dropping root after the TUN interface is set up (``tcpstack serve --user``).

Creating and configuring a TUN interface needs ``CAP_NET_ADMIN``; using it
afterwards does not: reads and writes go through the file descriptor that
``TUNSETIFF`` attached, and the kernel checks nothing more on them. So the
daemon opens and configures the interface as root, then becomes an
unprivileged user with no capabilities at all and serves from there.

The order of the steps follows capabilities(7) and setresuid(2):

1. ``prctl(PR_SET_KEEPCAPS, 0)``: when the real, effective and saved user IDs
   all leave 0, the kernel clears the permitted, effective and ambient
   capability sets ("Effect of user ID changes on capabilities").
2. The capability bounding set is emptied (``PR_CAPBSET_DROP``, while we still
   hold ``CAP_SETPCAP``) and the ambient set cleared, so nothing can be
   regained later, not even through an ``execve`` of a privileged file.
3. ``setgroups([])``, then ``setresgid`` and ``setresuid`` to the target IDs
   (groups first: changing them needs the privileges that ``setresuid``
   gives up).
4. The inheritable set is cleared with ``capset(2)``.
5. ``prctl(PR_SET_NO_NEW_PRIVS, 1)``: no ``execve`` can grant privileges again
   (set-user-ID bits and file capabilities are ignored; see the kernel's
   ``Documentation/userspace-api/no_new_privs.rst``).
6. ``/proc/self/status`` is read back: every user and group ID must be the
   target ones and ``CapInh``, ``CapPrm``, ``CapEff`` and ``CapAmb`` must be 0.
   Anything else is an error; the caller must not serve in that case.

What this means for the interface: the descriptor stays open and keeps
working. An interface the daemon created without ``TUNSETPERSIST`` is removed
by the kernel when its last descriptor is closed, which needs no privilege, so
shutdown still leaves nothing behind. Deleting a *persistent* interface (or
changing any interface setting) would need ``CAP_NET_ADMIN`` and is then no
longer possible; :meth:`tcpstack.link.tun.TunDevice.close` only deletes an
interface that is still there after its descriptors are closed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import grp
import importlib
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Credentials",
    "PrivilegeError",
    "drop_privileges",
    "preload_modules",
    "process_status",
    "resolve_credentials",
]

# <linux/prctl.h>
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# <linux/capability.h>
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
CAP_SETPCAP = 8

_CAP_SETS = ("CapInh", "CapPrm", "CapEff", "CapAmb")


class PrivilegeError(Exception):
    """A user or group cannot be resolved, or the privileges could not be dropped."""


@dataclass(frozen=True)
class Credentials:
    """The user and group to become; ``name`` is for log messages."""

    uid: int
    gid: int
    name: str


def _lookup_user(user: str) -> pwd.struct_passwd:
    try:
        if user.isdigit():
            return pwd.getpwuid(int(user))
        return pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise PrivilegeError(f"unknown user {user!r}") from None


def _lookup_group(group: str) -> int:
    try:
        if group.isdigit():
            return grp.getgrgid(int(group)).gr_gid
        return grp.getgrnam(group).gr_gid
    except (KeyError, OverflowError):
        raise PrivilegeError(f"unknown group {group!r}") from None


def resolve_credentials(user: str, group: str | None = None) -> Credentials:
    """Look up ``user`` (a name or a numeric ID in the user database) and its group.

    The group is ``group`` if given (a name or a numeric ID in the group
    database), otherwise the user's primary group. The target must not be
    root: dropping "to" UID 0 would keep every capability.
    """
    if not user:
        raise PrivilegeError("--user needs a user name")
    entry = _lookup_user(user)
    gid = entry.pw_gid if group is None else _lookup_group(group)
    if entry.pw_uid == 0:
        raise PrivilegeError(f"--user {user!r} is root; name an unprivileged user")
    return Credentials(uid=entry.pw_uid, gid=gid, name=entry.pw_name)


def process_status(path: Path = Path("/proc/self/status")) -> dict[str, str]:
    """The ``Key:\\tvalue`` fields of a ``/proc/PID/status`` file (see proc(5))."""
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


def preload_modules(names: Iterable[str]) -> None:
    """Import ``names`` now, before the switch, so that later lazy imports find them.

    After the switch the Python installation may no longer be readable (one
    under ``/root`` is not, for ``nobody``), and an ``import`` inside a function
    would then fail at its first call. A module that cannot be imported is
    skipped here; its later import reports the error where it is handled.
    """
    for name in names:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _prctl(libc: ctypes.CDLL, option: int, arg2: int = 0) -> int:
    result: int = libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(0),
                             ctypes.c_ulong(0), ctypes.c_ulong(0))
    if result < 0:
        err = ctypes.get_errno()
        raise PrivilegeError(f"prctl({option}) failed: {os.strerror(err)}")
    return result


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _clear_capabilities(libc: ctypes.CDLL) -> None:
    """Set all three capability sets of this thread to empty with ``capset(2)``."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()  # version 3 uses two 32-bit words per set, all zero here
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(f"capset failed: {os.strerror(err)}")


def _empty_bounding_set(libc: ctypes.CDLL) -> None:
    """Drop every capability from the bounding set (needs ``CAP_SETPCAP`` in effect).

    Without ``CAP_SETPCAP`` (a container started with ``--cap-drop SETPCAP``)
    the bounding set stays as it is; the drop is still complete, because
    ``PR_SET_NO_NEW_PRIVS`` keeps ``execve`` from granting any of them.
    Dropping a capability from the bounding set leaves the effective set alone,
    so the order of the drops does not matter.
    """
    if not int(process_status().get("CapEff", "0"), 16) >> CAP_SETPCAP & 1:
        return
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last + 1):
        _prctl(libc, PR_CAPBSET_DROP, cap)


def drop_privileges(creds: Credentials) -> dict[str, str]:
    """Become ``creds`` with no capabilities and no way back; return the new status.

    Must run as root (real or effective UID 0) in a single-threaded process:
    ID and capability changes through these system calls apply to the calling
    thread only. Raises :class:`PrivilegeError` if any step fails or the result
    read back from ``/proc/self/status`` is not exactly what was asked for.
    """
    if os.geteuid() != 0:
        raise PrivilegeError(
            f"--user needs root to switch users (running as uid {os.geteuid()})")
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        # capset(2) and prctl(2) act on the calling thread only: another thread
        # would keep its capabilities.
        raise PrivilegeError(f"cannot drop privileges with {threads} threads running")
    libc = _libc()
    try:
        _prctl(libc, PR_SET_KEEPCAPS, 0)
        _prctl(libc, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        _empty_bounding_set(libc)
        os.setgroups([])
        os.setresgid(creds.gid, creds.gid, creds.gid)
        os.setresuid(creds.uid, creds.uid, creds.uid)
    except OSError as e:
        raise PrivilegeError(f"cannot switch to user {creds.name!r}: {e.strerror}") from None
    _clear_capabilities(libc)
    _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
    status = process_status()
    _verify(status, creds)
    return status


def _verify(status: dict[str, str], creds: Credentials) -> None:
    """Check the ``/proc/self/status`` fields against what :func:`drop_privileges` set."""
    uids = status.get("Uid", "").split()
    gids = status.get("Gid", "").split()
    if uids != [str(creds.uid)] * 4 or gids != [str(creds.gid)] * 4:
        raise PrivilegeError(f"user/group IDs after the switch are Uid {uids}, Gid {gids}")
    if status.get("Groups", "") != "":
        raise PrivilegeError(f"supplementary groups left: {status['Groups']}")
    left = {key: status.get(key) for key in _CAP_SETS if int(status.get(key, "1"), 16) != 0}
    if left:
        raise PrivilegeError(f"capabilities left after the switch: {left}")
    if status.get("NoNewPrivs") != "1":
        raise PrivilegeError("no_new_privs is not set")
