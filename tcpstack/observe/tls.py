"""The TLS handshake above TCP, read from a connection's first bytes.

A :class:`TlsWatch` is fed the bytes of both directions of one connection, as the
observatory sees them in segments (``feed``: which direction, the offset in that
direction's byte stream, the bytes, the time). It keeps each direction's stream
contiguous from offset 0 (out-of-order pieces wait, bounded), cuts it into TLS
records (RFC 8446 5.1, RFC 5246 6.2.1) and reads what is in the clear:

* the ClientHello (RFC 8446 4.1.2): server name (SNI, RFC 6066 3), ALPN protocols
  (RFC 7301), offered versions (``supported_versions``, RFC 8446 4.2.1), groups
  (``supported_groups``, RFC 8446 4.2.7) and the groups with key shares (4.2.8);
* the ServerHello (RFC 8446 4.1.3): chosen version, cipher suite and key-share
  group; for TLS 1.2 the group comes from the ServerKeyExchange (RFC 8422 5.4)
  and ALPN from the ServerHello (in TLS 1.3 it travels encrypted);
* alerts sent in the clear (RFC 8446 6).

Records are grouped into *flights* (consecutive records one side sent before the
other answered), each with its time, the time since the previous flight ended and
how long its own records took to arrive. The handshake is over when the last
flight is on its way: for TLS 1.3 the client's Finished flight (the client's first
flight after the ServerHello), for TLS 1.2 the flight after which both sides have
sent ChangeCipherSpec and their encrypted Finished. Then :attr:`TlsWatch.result`
is set (also on an alert, or by :meth:`TlsWatch.close` for a connection that ends
first) and the watch holds nothing more.

Bounds: at most :data:`MAX_BYTES` of each direction are read (a handshake longer
than that is reported as not followed), and at most :data:`MAX_PENDING`
out-of-order pieces wait per direction. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Final

MAX_BYTES: Final = 65536
MAX_PENDING: Final = 64

CHANGE_CIPHER_SPEC: Final = 20
ALERT: Final = 21
HANDSHAKE: Final = 22
APPLICATION_DATA: Final = 23

TLS12: Final = 0x0303
TLS13: Final = 0x0304

#: ServerHello.random of a HelloRetryRequest (RFC 8446 4.1.3).
HRR_RANDOM: Final = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

VERSIONS: Final = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2",
                   0x0304: "TLS 1.3"}
GROUPS: Final = {23: "secp256r1", 24: "secp384r1", 25: "secp521r1", 29: "x25519", 30: "x448",
                 256: "ffdhe2048", 257: "ffdhe3072", 258: "ffdhe4096", 259: "ffdhe6144",
                 260: "ffdhe8192", 0x11EC: "X25519MLKEM768", 0x11EB: "SecP256r1MLKEM768",
                 0x6399: "X25519Kyber768Draft00"}
CIPHERS: Final = {
    0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256", 0x1304: "TLS_AES_128_CCM_SHA256",
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", 0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0x0067: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256", 0x006B: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA", 0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x00FF: "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
}
HANDSHAKE_TYPES: Final = {1: "ClientHello", 2: "ServerHello", 4: "NewSessionTicket",
                          8: "EncryptedExtensions", 11: "Certificate",
                          12: "ServerKeyExchange", 13: "CertificateRequest",
                          14: "ServerHelloDone", 15: "CertificateVerify",
                          16: "ClientKeyExchange", 20: "Finished"}
ALERTS: Final = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
                 22: "record_overflow", 40: "handshake_failure", 42: "bad_certificate",
                 43: "unsupported_certificate", 44: "certificate_revoked",
                 45: "certificate_expired", 46: "certificate_unknown",
                 47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied",
                 50: "decode_error", 51: "decrypt_error", 70: "protocol_version",
                 71: "insufficient_security", 80: "internal_error",
                 86: "inappropriate_fallback", 90: "user_canceled",
                 109: "missing_extension", 110: "unsupported_extension",
                 112: "unrecognized_name", 113: "bad_certificate_status_response",
                 115: "unknown_psk_identity", 116: "certificate_required",
                 120: "no_application_protocol"}

_U16: Final = struct.Struct("!H")


def _grease(value: int) -> bool:
    """RFC 8701 values (0x0A0A, 0x1A1A ...): offered to keep peers tolerant."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


def version_name(v: int) -> str:
    return "GREASE" if _grease(v) else VERSIONS.get(v, f"0x{v:04x}")


def group_name(g: int) -> str:
    return "GREASE" if _grease(g) else GROUPS.get(g, f"0x{g:04x}")


def cipher_name(c: int) -> str:
    return "GREASE" if _grease(c) else CIPHERS.get(c, f"0x{c:04x}")


def looks_like_tls(first: bytes) -> bool:
    """Whether a stream starting with ``first`` (at least 3 bytes) is a TLS handshake."""
    return len(first) >= 3 and first[0] == HANDSHAKE and first[1] == 3 and first[2] <= 4


class _Reader:
    """Bounds-checked reads from a handshake message body; ValueError past the end."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def vec(self, length_bytes: int) -> bytes:
        n = int.from_bytes(self.take(length_bytes), "big")
        return self.take(n)

    def done(self) -> bool:
        return self.pos >= len(self.data)


def _u16_list(data: bytes) -> list[int]:
    return [(data[i] << 8) | data[i + 1] for i in range(0, len(data) - 1, 2)]


def _extensions(r: _Reader) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    if r.done():
        return out
    ext = _Reader(r.vec(2))
    while not ext.done():
        kind = ext.u16()
        out[kind] = ext.vec(2)
    return out


def parse_client_hello(body: bytes) -> dict[str, Any]:
    """What a ClientHello offers (ValueError if it is malformed)."""
    r = _Reader(body)
    legacy = r.u16()
    r.take(32)  # random
    r.vec(1)  # legacy_session_id
    suites = _u16_list(r.vec(2))
    r.vec(1)  # legacy_compression_methods
    ext = _extensions(r)
    out: dict[str, Any] = {"legacy_version": version_name(legacy),
                           "cipher_suites": [cipher_name(c) for c in suites if not _grease(c)]}
    if 0 in ext:  # server_name
        names = _Reader(ext[0])
        lst = _Reader(names.vec(2))
        while not lst.done():
            kind = lst.u8()
            name = lst.vec(2)
            if kind == 0:
                out["sni"] = name.decode("ascii", "replace")
    if 16 in ext:  # application_layer_protocol_negotiation
        lst = _Reader(_Reader(ext[16]).vec(2))
        protocols = []
        while not lst.done():
            protocols.append(lst.vec(1).decode("ascii", "replace"))
        out["alpn"] = protocols
    if 43 in ext:  # supported_versions
        out["versions"] = [version_name(v) for v in _u16_list(_Reader(ext[43]).vec(1))
                           if not _grease(v)]
    if 10 in ext:  # supported_groups
        out["groups"] = [group_name(g) for g in _u16_list(_Reader(ext[10]).vec(2))
                         if not _grease(g)]
    if 51 in ext:  # key_share
        shares = _Reader(_Reader(ext[51]).vec(2))
        groups = []
        while not shares.done():
            group = shares.u16()
            shares.vec(2)
            if not _grease(group):
                groups.append(group_name(group))
        out["key_shares"] = groups
    return out


def parse_server_hello(body: bytes) -> dict[str, Any]:
    """What a ServerHello chose (ValueError if it is malformed)."""
    r = _Reader(body)
    legacy = r.u16()
    random = r.take(32)
    r.vec(1)  # legacy_session_id_echo
    suite = r.u16()
    r.u8()  # legacy_compression_method
    ext = _extensions(r)
    version = legacy
    if 43 in ext and len(ext[43]) == 2:
        version = _U16.unpack(ext[43])[0]
    out: dict[str, Any] = {"version": version_name(version), "cipher": cipher_name(suite),
                           "hello_retry_request": random == HRR_RANDOM, "_version": version}
    if 51 in ext and len(ext[51]) >= 2:
        out["group"] = group_name(_U16.unpack(ext[51][:2])[0])
    if 16 in ext:
        lst = _Reader(_Reader(ext[16]).vec(2))
        if not lst.done():
            out["alpn"] = lst.vec(1).decode("ascii", "replace")
    return out


def parse_server_key_exchange_group(body: bytes) -> str | None:
    """The named group of a TLS 1.2 ECDHE ServerKeyExchange (RFC 8422 5.4), if it is one."""
    if len(body) >= 3 and body[0] == 3:  # curve_type named_curve
        return group_name((body[1] << 8) | body[2])
    return None


@dataclass(slots=True)
class Record:
    """One TLS record as seen: who sent it, when it was complete, what it holds."""

    t: float
    sender: str  # "client" or "server"
    content: int
    length: int
    label: str


@dataclass(slots=True)
class _Direction:
    sender: str = ""
    buf: bytearray = field(default_factory=bytearray)
    pending: dict[int, bytes] = field(default_factory=dict)
    pos: int = 0  # next record starts here
    handshake: bytearray = field(default_factory=bytearray)  # cleartext handshake bytes
    encrypted: bool = False  # after our ChangeCipherSpec (TLS 1.2) or ServerHello (1.3)
    ccs: bool = False
    after_ccs: bool = False  # a record followed our ChangeCipherSpec (the Finished)


class TlsWatch:
    """Follows one connection's TLS handshake (see the module docstring).

    ``feed`` direction ``in`` means peer to stack. :attr:`result` is None while the
    handshake goes on, then a dict (see :meth:`_finish`); :attr:`active` turns
    False once the watch needs nothing more.
    """

    def __init__(self) -> None:
        self.dirs = {"in": _Direction(), "out": _Direction()}
        self.client_dir: str | None = None
        self.records: list[Record] = []
        self.start: float | None = None
        self.client_hello: dict[str, Any] | None = None
        self.server_hello: dict[str, Any] | None = None
        self.group_12: str | None = None
        self.version: int | None = None
        self.alert: str | None = None
        self.result: dict[str, Any] | None = None
        self.active = True
        self._sh_seen = False
        self._last_flight: float | None = None  # the last flight began at this time

    # --------------------------------------------------------------- bytes

    def feed(self, direction: str, offset: int, data: bytes, now: float) -> None:
        """``data`` at ``offset`` of ``direction``'s stream (``in`` or ``out``)."""
        if not self.active or not data:
            return
        d = self.dirs[direction]
        end = len(d.buf)
        if offset > end:
            if len(d.pending) < MAX_PENDING and offset < MAX_BYTES:
                d.pending[offset] = bytes(data[:MAX_BYTES - offset])
            return
        self._append(d, offset, data)
        while d.pending:
            nxt = [o for o in d.pending if o <= len(d.buf)]
            if not nxt:
                break
            for o in nxt:
                self._append(d, o, d.pending.pop(o))
        if self.client_dir is None:
            if len(d.buf) < 3:
                return
            if not looks_like_tls(bytes(d.buf[:3])):
                self._give_up(None)
                return
            self.client_dir = direction
            self.start = now
            d.sender = "client"
            self.dirs["out" if direction == "in" else "in"].sender = "server"
        self._records(d, now)
        if self._last_flight is not None:
            # The records after the one that began the last flight, in the same
            # bytes, belong to it: the handshake is over.
            self._finish(now, "established", None)
        elif self.active and len(d.buf) >= MAX_BYTES:
            self._give_up(f"handshake not followed beyond {MAX_BYTES} bytes")

    def _append(self, d: _Direction, offset: int, data: bytes) -> None:
        have = len(d.buf)
        if offset + len(data) <= have:
            return
        d.buf += data[have - offset:MAX_BYTES - offset]

    # -------------------------------------------------------------- records

    def _records(self, d: _Direction, now: float) -> None:
        buf = d.buf
        while self.active and d.pos + 5 <= len(buf):
            content, length = buf[d.pos], (buf[d.pos + 3] << 8) | buf[d.pos + 4]
            if d.pos + 5 + length > len(buf):
                return
            body = bytes(buf[d.pos + 5:d.pos + 5 + length])
            d.pos += 5 + length
            self._record(d, content, body, now)

    def _record(self, d: _Direction, content: int, body: bytes, now: float) -> None:
        if content == CHANGE_CIPHER_SPEC:
            label = "ChangeCipherSpec"
            if self.version != TLS13:
                d.ccs = True
                d.encrypted = True
        elif content == ALERT:
            if d.encrypted or len(body) != 2:
                label = "Alert (encrypted)"
                self.alert = f"{d.sender} sent an encrypted alert"
            else:
                level = "fatal" if body[0] == 2 else "warning"
                name = ALERTS.get(body[1], str(body[1]))
                label = f"Alert {level} {name}"
                self.alert = f"{d.sender} sent alert {level} {name} ({body[1]})"
        elif content == HANDSHAKE and not d.encrypted:
            label = self._handshake(d, body)
        elif content in (HANDSHAKE, APPLICATION_DATA):
            label = "encrypted"
            if d.ccs:
                d.after_ccs = True
        else:
            label = f"record type {content}"
        self.records.append(Record(now, d.sender, content, len(body), label))
        if self.alert is not None:
            self._finish(now, "alert", self.alert)
        elif self._last_flight is None and self._complete(d):
            self._last_flight = now

    def _handshake(self, d: _Direction, body: bytes) -> str:
        d.handshake += body
        names = []
        while len(d.handshake) >= 4:
            kind = d.handshake[0]
            n = int.from_bytes(d.handshake[1:4], "big")
            if len(d.handshake) < 4 + n:
                break
            msg = bytes(d.handshake[4:4 + n])
            del d.handshake[:4 + n]
            names.append(HANDSHAKE_TYPES.get(kind, f"handshake type {kind}"))
            try:
                self._message(d, kind, msg)
            except ValueError:
                names[-1] += " (malformed)"
        if d.handshake:
            names.append(f"{HANDSHAKE_TYPES.get(d.handshake[0], 'handshake')} (part)")
        return ", ".join(names) or "handshake (part)"

    def _message(self, d: _Direction, kind: int, msg: bytes) -> None:
        if kind == 1 and d.sender == "client" and self.client_hello is None:
            self.client_hello = parse_client_hello(msg)
        elif kind == 2 and d.sender == "server":
            hello = parse_server_hello(msg)
            if hello["hello_retry_request"]:
                self.server_hello = hello
                return
            self.server_hello = hello
            self.version = hello["_version"]
            self._sh_seen = True
            if self.version == TLS13:
                d.encrypted = True  # the rest of the server's handshake is encrypted
        elif kind == 12 and d.sender == "server":
            self.group_12 = parse_server_key_exchange_group(msg)

    def _complete(self, d: _Direction) -> bool:
        """Whether the record just read starts (or is) the handshake's last flight."""
        if self.version == TLS13:
            if d.sender != "client" or not self._sh_seen:
                return False
            # The client's first record after the server's flight with the ServerHello.
            return any(r.sender == "server" and r.label.startswith("ServerHello")
                       for r in self.records)
        if self.version is not None:
            ins, outs = self.dirs["in"], self.dirs["out"]
            return ins.after_ccs and outs.after_ccs
        return False

    # -------------------------------------------------------------- results

    def _give_up(self, why: str | None) -> None:
        """Not TLS (``why`` None), or not followable: stop, keep nothing."""
        if why is not None and self.start is not None and self.result is None:
            self._finish(self.records[-1].t if self.records else self.start, "not followed",
                         why)
        self.active = False
        self.dirs = {"in": _Direction(), "out": _Direction()}

    def close(self, now: float, why: str) -> None:
        """The connection ended: a handshake still going is reported as incomplete."""
        if self.active and self.start is not None and self.result is None:
            self._finish(now, "incomplete", why)
        self.active = False

    def _finish(self, now: float, outcome: str, why: str | None) -> None:
        self.active = False
        self.dirs = {"in": _Direction(), "out": _Direction()}
        start = self.start if self.start is not None else now
        out: dict[str, Any] = {"outcome": outcome, "flights": self._flights(start)}
        if why:
            out["why"] = why
        if self.client_hello is not None:
            out["client_hello"] = self.client_hello
        if self.server_hello is not None:
            sh = {k: v for k, v in self.server_hello.items() if not k.startswith("_")}
            if self.version == TLS12 and self.group_12 is not None:
                sh["group"] = self.group_12
            out["server_hello"] = sh
        end = self.records[-1].t if self.records else now
        out["handshake_ms"] = round((end - start) * 1000, 3)
        out["client_dir"] = self.client_dir
        self.result = out

    def _flights(self, start: float) -> list[dict[str, Any]]:
        flights: list[dict[str, Any]] = []
        prev_end = start
        for rec in self.records:
            if not flights or flights[-1]["sender"] != rec.sender:
                if flights:
                    prev_end = flights[-1]["_end"]
                flights.append({"sender": rec.sender, "t": round(rec.t - start, 6),
                                "after_ms": round((rec.t - prev_end) * 1000, 3),
                                "records": [], "bytes": 0, "_end": rec.t, "_first": rec.t})
            f = flights[-1]
            f["records"].append(rec.label)
            f["bytes"] += 5 + rec.length
            f["_end"] = rec.t
        for f in flights:
            f["took_ms"] = round((f.pop("_end") - f.pop("_first")) * 1000, 3)
            f["label"] = summarize(f["records"])
        return flights


def summarize(labels: list[str]) -> str:
    """Record labels in one line: runs of encrypted records counted."""
    parts: list[str] = []
    run = 0
    for label in [*labels, ""]:
        if label == "encrypted":
            run += 1
            continue
        if run:
            parts.append(f"encrypted x{run}" if run > 1 else "encrypted")
            run = 0
        if label:
            parts.append(label)
    return ", ".join(parts)


__all__ = ["MAX_BYTES", "TlsWatch", "cipher_name", "group_name", "looks_like_tls",
           "parse_client_hello", "parse_server_hello", "summarize", "version_name"]
