"""TCP Fast Open's cookies (RFC 7413 4.1): the server's keys, the client's cache,
and one connection's Fast Open record.

* :class:`FastOpenKeys` -- the server's secret keys (a primary and a backup, as
  Linux's ``tcp_fastopen_key``; rotated by the application, or derived anew every
  ``rotate_every`` seconds) and the cookie: a MAC of the two addresses (RFC 7413
  4.1.2; BLAKE2s keyed with the key, 8 bytes, where Linux uses AES).
* :class:`FastOpenCache` -- the client's cookies by server (RFC 7413 4.1.3), with
  the server's MSS, and the SYN losses that switch Fast Open off for a while
  towards a server whose path drops SYNs with data (as Linux, RFC 7413 4.1.3.1).
* :class:`FastOpen` -- one connection's Fast Open state, on ``tcb.tfo`` (None for
  every connection that does not use it).

The rules that use them are in :mod:`tcpstack.tcp.fastopen`. Nothing here
performs I/O or reads a clock (new keys come from an injectable source).
"""


from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence

from tcpstack.tcp.isn import pack_tuple

KEY_LEN = 16  # bytes of a Fast Open key (Linux's TCP_FASTOPEN_KEY_LENGTH)
COOKIE_LEN = 8  # bytes of our cookies (Linux's TCP_FASTOPEN_COOKIE_SIZE)
CACHE_SIZE = 1024  # servers whose cookies a client stack remembers
#: Linux's rule for SYNs with data that went unanswered: after the second loss in a
#: row, no Fast Open to that server for 60 s << losses.
LOSS_BASE_SECONDS = 60.0


def parse_key(text: str) -> bytes:
    """A key as Linux's ``net.ipv4.tcp_fastopen_key`` writes it: 32 hex digits, in
    groups separated by ``-`` or not. Raises ValueError otherwise."""
    digits = text.strip().replace("-", "")
    # (The text is not echoed in the errors: it is a secret, if a mistyped one.)
    try:
        key = bytes.fromhex(digits)
    except ValueError:
        raise ValueError("a Fast Open key is 32 hex digits (dashes allowed); this one "
                         "has other characters") from None
    if len(key) != KEY_LEN:
        raise ValueError(f"a Fast Open key is 32 hex digits, not {len(digits)}")
    return key


def format_key(key: bytes) -> str:
    """``key`` as Linux shows it: four groups of 8 hex digits."""
    h = key.hex()
    return "-".join(h[i:i + 8] for i in range(0, len(h), 8))


class FastOpenKeys:
    """A server's Fast Open keys and cookies (RFC 7413 4.1.2).

    Cookies are made with the primary key and accepted with the primary or the
    backup, so a rotation does not turn away the clients that got a cookie just
    before it: :meth:`set` (the application's new primary, the old one as backup,
    as Linux's ``tcp_fastopen_key`` takes them), :meth:`rotate` (a random new
    primary), or, every ``rotate_every`` seconds, a key derived from the primary
    and the period's number -- derived, not drawn, so that worker processes sharing
    the primary rotate in step; a cookie is then valid for one or two periods.
    ``random_key`` makes new keys.
    """

    __slots__ = ("_period", "_period_keys", "_random_key", "backup", "primary",
                 "rotate_every")

    def __init__(self, keys: Sequence[bytes] = (), rotate_every: float = 0.0,
                 random_key: Callable[[int], bytes] = secrets.token_bytes) -> None:
        if len(keys) > 2:
            raise ValueError("at most two Fast Open keys: a primary and a backup")
        for key in keys:
            if len(key) != KEY_LEN:
                raise ValueError(f"a Fast Open key is {KEY_LEN} bytes")
        if not (rotate_every == 0 or 1 <= rotate_every <= 1e9):
            raise ValueError("the Fast Open key rotation interval is 0 (never) or "
                             "1 to 1e9 seconds")
        self._random_key = random_key
        self.primary: bytes = keys[0] if keys else random_key(KEY_LEN)
        self.backup: bytes | None = keys[1] if len(keys) > 1 else None
        self.rotate_every = rotate_every
        self._period = -1
        self._period_keys: tuple[bytes, ...] = ()

    def set(self, primary: bytes, backup: bytes | None = None) -> None:
        """Use ``primary`` from now on, and accept cookies made with ``backup`` too."""
        for key in (primary, backup):
            if key is not None and len(key) != KEY_LEN:
                raise ValueError(f"a Fast Open key is {KEY_LEN} bytes")
        self.primary = primary
        self.backup = backup
        self._period = -1

    def rotate(self) -> None:
        """A new random primary key; the old one stays valid as the backup."""
        self.set(self._random_key(KEY_LEN), self.primary)

    def keys(self, now: float) -> tuple[bytes, ...]:
        """The keys in force at ``now``: the one cookies are made with first."""
        if self.rotate_every <= 0:
            return (self.primary,) if self.backup is None else (self.primary, self.backup)
        period = int(now // self.rotate_every)
        if period != self._period:
            derive = self._derive
            self._period = period
            keys = [derive(self.primary, period), derive(self.primary, period - 1)]
            backup = self.backup
            if backup is not None:
                # The previous primary's cookies, rotated or not, stay good too.
                keys += [derive(backup, period), derive(backup, period - 1), backup]
            self._period_keys = tuple(keys)
        return self._period_keys

    @staticmethod
    def _derive(key: bytes, period: int) -> bytes:
        return hashlib.blake2s(period.to_bytes(8, "big", signed=True), key=key,
                               digest_size=KEY_LEN, person=b"tfo-rot").digest()

    @staticmethod
    def _mac(key: bytes, local_ip: int, remote_ip: int) -> bytes:
        # RFC 7413 4.1.2: a MAC of the client's address (and, as Linux, ours).
        return hashlib.blake2s(pack_tuple(remote_ip, 0, local_ip, 0), key=key,
                               digest_size=COOKIE_LEN).digest()

    def cookie(self, local_ip: int, remote_ip: int, now: float) -> bytes:
        """The cookie for a client at ``remote_ip`` reaching us at ``local_ip``."""
        return self._mac(self.keys(now)[0], local_ip, remote_ip)

    def check(self, cookie: bytes, local_ip: int, remote_ip: int, now: float) -> int:
        """0: not our cookie; 1: made with the key cookies are made with now; 2: with
        another key in force (valid, but the client should get a fresh one)."""
        for i, key in enumerate(self.keys(now)):
            if hmac.compare_digest(cookie, self._mac(key, local_ip, remote_ip)):
                return 1 if i == 0 else 2
        return 0


class FastOpenCache:
    """A client's cookies by server address (RFC 7413 4.1.3): the most recent
    ``size`` servers, each with the MSS it announced (what the SYN's data is sized
    by) and its record of SYNs with data that went unanswered."""

    __slots__ = ("_entries", "size")

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        # server -> [cookie (b"": none yet), MSS (0: unknown), losses, last loss]
        self._entries: dict[int, list[object]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, remote_ip: int) -> list[object]:
        entries = self._entries
        entry = entries.pop(remote_ip, None)
        if entry is None:
            entry = [b"", 0, 0, 0.0]
            if len(entries) >= self.size:
                del entries[next(iter(entries))]
        entries[remote_ip] = entry  # most recently used last
        return entry

    def lookup(self, remote_ip: int, now: float) -> tuple[bytes, int] | None:
        """(cookie, MSS) to open a connection to ``remote_ip`` with -- ``b""``: none
        yet, ask for one -- or None: SYNs with data to it were lost twice or more in
        a row recently, so no Fast Open for now (as Linux: for 60 s << losses)."""
        entry = self._entries.get(remote_ip)
        if entry is None:
            return b"", 0
        cookie, mss, losses, last = entry
        assert isinstance(cookie, bytes) and isinstance(mss, int)
        assert isinstance(losses, int) and isinstance(last, float)
        if losses > 1 and now < last + (LOSS_BASE_SECONDS * (1 << min(losses, 16))):
            return None
        return cookie, mss

    def learn(self, remote_ip: int, cookie: bytes | None, mss: int) -> None:
        """A SYN,ACK from ``remote_ip``: its MSS, and its cookie if it gave one."""
        entry = self._entry(remote_ip)
        if cookie:
            entry[0] = cookie
        if mss:
            entry[1] = mss

    def syn_data_acked(self, remote_ip: int) -> None:
        """The server took our SYN's data: the path carries SYNs with data."""
        entry = self._entries.get(remote_ip)
        if entry is not None:
            entry[2] = 0

    def syn_lost(self, remote_ip: int, now: float) -> None:
        """A SYN with data to ``remote_ip`` timed out (or its data was not taken
        after a retransmission): perhaps the path drops such SYNs."""
        entry = self._entry(remote_ip)
        losses = entry[2]
        assert isinstance(losses, int)
        entry[2] = losses + 1
        entry[3] = now

    def forget(self, remote_ip: int) -> None:
        self._entries.pop(remote_ip, None)


class FastOpen:
    """One connection's Fast Open state (``tcb.tfo``).

    Server: ``cookie`` is the cookie our SYN,ACK gives the client (None: none);
    ``child`` is set when the client's cookie was valid, so the connection is
    handed to the application in SYN-RECEIVED, with the SYN's data, and may send
    before the handshake completes (RFC 7413 4.2.2). Client (``client``): ``cookie``
    is what our first SYN carries (``b""``: a request); ``deferred`` while the SYN
    waits for the application's first write, at most until ``defer_until``;
    ``syn_data`` the bytes it carried; ``mss`` the server's MSS from the cache,
    ``cache`` the stack's cache to teach.
    ``result`` says how it went (for ``tcp_info`` and the connection table).
    """

    __slots__ = ("cache", "child", "client", "cookie", "defer_until", "deferred", "mss",
                 "result", "syn_data")

    def __init__(self, cookie: bytes | None, *, child: bool = False, client: bool = False,
                 deferred: bool = False, defer_until: float = 0.0, mss: int = 0,
                 cache: FastOpenCache | None = None, result: str = "") -> None:
        self.cookie = cookie
        self.child = child
        self.client = client
        self.deferred = deferred
        self.defer_until = defer_until
        self.mss = mss
        self.cache = cache
        self.syn_data = 0
        self.result = result

    def __repr__(self) -> str:
        return f"<FastOpen {self.result or 'pending'}>"


__all__ = ["CACHE_SIZE", "COOKIE_LEN", "KEY_LEN", "LOSS_BASE_SECONDS", "FastOpen",
           "FastOpenCache", "FastOpenKeys", "format_key", "parse_key"]
