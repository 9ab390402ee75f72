"""Open a file below a directory without ever leaving it, whatever races happen.

Checking a path (``resolve()``, ``realpath``) and then opening it by name is a
time-of-check/time-of-use race: anyone who can write inside the web root can
swap a directory or file for a symlink between the check and the open, and
the open then follows it out of the root. :func:`open_beneath` never opens a
path by name from the process's point of view. It walks the request path one
component at a time from a descriptor of the root, ``openat``-style
(``dir_fd=``), each component with ``O_NOFOLLOW``, so what it checked is what
it holds:

* the request path may not contain ``..`` at all (clients remove dot-segments
  before sending, RFC 3986 5.2.4, so one is a probe); inside a symlink's
  target ``..`` pops back to the parent descriptor and may never pop above
  the root;
* a symlink is read (``readlinkat``) and its target walked with the same
  rules: a relative target from the link's directory, an absolute one only if
  it spells a path under the root (then walked from the root descriptor). So
  symlinks that stay inside the root are followed and everything else is
  refused, as Linux's ``openat2(RESOLVE_BENEATH)`` does; at most
  :data:`MAX_SYMLINKS` links per lookup, as Linux allows (``ELOOP``);
* components are first opened with ``O_PATH`` (no read access, no side
  effects on device files or FIFOs) and ``fstat``-ed; only a regular file is
  then opened for reading, again with ``O_NOFOLLOW`` from the same directory
  descriptor, and must be the same inode (``st_dev``/``st_ino``), so a swap
  between the two opens is refused too;
* a path that ends at a directory serves its ``index.html`` (looked up by
  the same rules); a non-directory followed by more components (``/a.txt/``)
  is refused, as ``ENOTDIR`` would be.

The root itself is trusted: it is resolved once when the service starts and
opened by that name for every request. Hard links inside the root are files
of the root by definition (a user who can make them can copy the file too).
"""

from __future__ import annotations

import os
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MAX_SYMLINKS: Final = 40
"""Symlinks followed in one lookup (Linux's ``MAXSYMLINKS``)."""

INDEX_NAME: Final = "index.html"
"""What a directory request serves."""

_O_PATH: Final = getattr(os, "O_PATH", 0)  # Linux since 2.6.39
_WALK_FLAGS: Final = _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class OpenedFile:
    """A regular file opened for reading: its descriptor (the caller closes it),
    its name (the last component, for the content type) and its ``fstat``."""

    fd: int
    name: str
    info: os.stat_result


class _Refused(Exception):
    """The lookup must not succeed (outside the root, a loop, not a regular file)."""


def open_beneath(root: Path, path: str) -> OpenedFile | None:
    """Open the regular file that ``path`` names below the directory ``root``.

    ``path`` is a decoded URL path (``/docs/a.txt``); ``root`` should be
    absolute and resolved. Returns None for anything that does not exist,
    lies outside the root, needs too many symlinks, or is not a regular file.
    Never raises for any ``path``.
    """
    if "\x00" in path or ".." in path.split("/"):
        return None
    try:
        root_fd = os.open(root, _WALK_FLAGS | os.O_DIRECTORY)
    except OSError:
        return None
    walker = _Walker(root, root_fd)
    try:
        return walker.walk(path)
    except (_Refused, OSError, ValueError):
        return None
    finally:
        walker.release()


class _Walker:
    """One lookup: a stack of directory descriptors from the root down."""

    __slots__ = ("dirs", "hops", "root")

    def __init__(self, root: Path, root_fd: int) -> None:
        self.root = root
        self.dirs = [root_fd]
        self.hops = 0

    def release(self) -> None:
        for fd in self.dirs:
            os.close(fd)
        self.dirs = []

    def _to_root(self) -> None:
        while len(self.dirs) > 1:
            os.close(self.dirs.pop())

    def _relative_to_root(self, target: str) -> str:
        """The part of an absolute symlink target below the root, or refuse."""
        prefix = str(self.root).rstrip("/") + "/"
        if target.rstrip("/") == prefix.rstrip("/"):
            return ""
        if not target.startswith(prefix):
            raise _Refused(f"symlink to {target!r} leaves the root")
        return target[len(prefix) :]

    def walk(self, path: str) -> OpenedFile:
        pending = deque(path.split("/"))
        index_tried = False
        while True:
            if not pending:
                # The path ended at a directory: serve its index, once.
                if index_tried:
                    raise _Refused("index is not a regular file")
                index_tried = True
                pending.append(INDEX_NAME)
            part = pending.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if len(self.dirs) == 1:
                    raise _Refused("'..' above the root")
                os.close(self.dirs.pop())
                continue
            parent = self.dirs[-1]
            fd = os.open(part, _WALK_FLAGS, dir_fd=parent)
            try:
                info = os.fstat(fd)
            except OSError:
                os.close(fd)
                raise
            mode = info.st_mode
            if stat.S_ISDIR(mode):
                self.dirs.append(fd)
                continue
            os.close(fd)
            if stat.S_ISLNK(mode):
                self.hops += 1
                if self.hops > MAX_SYMLINKS:
                    raise _Refused("too many symlinks")
                target = os.readlink(part, dir_fd=parent)
                if target.startswith("/"):
                    target = self._relative_to_root(target)
                    self._to_root()
                pending.extendleft(reversed(target.split("/")))
                continue
            if not stat.S_ISREG(mode):
                raise _Refused("not a regular file")
            if pending:  # "a.txt/" or "a.txt/b": a file is not a directory (ENOTDIR)
                raise _Refused("path continues after a file")
            return _reopen_for_reading(parent, part, info)


def _reopen_for_reading(parent: int, name: str, checked: os.stat_result) -> OpenedFile:
    """Open ``name`` in ``parent`` for reading; it must still be the inode checked."""
    fd = os.open(name, _READ_FLAGS, dir_fd=parent)
    try:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (checked.st_dev, checked.st_ino) or \
                not stat.S_ISREG(info.st_mode):
            raise _Refused(f"{name!r} changed while being opened")
    except BaseException:
        os.close(fd)
        raise
    return OpenedFile(fd, name, info)
