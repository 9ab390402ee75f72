"""Accurate ECN (RFC 9768): the per-connection counters and the rules that need no
connection around them.

Classic ECN (RFC 3168) feeds back at most one congestion signal per round trip;
AccECN feeds back *how many* packets arrived CE-marked. The three flags AE, CWR
and ECE together form the **ACE** field (RFC 9768 3.2.2): a 3-bit counter of the
CE-marked packets the receiver got (``r.cep``), starting at 5. The optional AccECN
**option** (3.2.3, kinds 172 and 174) adds 24-bit counters of payload bytes per
IP-ECN codepoint (EE0B, ECEB, EE1B; ECT(0) and ECT(1) start at 1, CE at 0).

Negotiation (3.1) rides on the same three flags: a SYN asking for AccECN sets all
three; the SYN,ACK's flags say which codepoint the SYN arrived with
(:data:`REFLECT`), and the client's first ACK says which one the SYN,ACK
arrived with, so that both ends learn whether the path
bleaches or mangles the IP-ECN field. How the connection uses all this is in
:mod:`tcpstack.tcp.ecn`.
"""

from __future__ import annotations

from tcpstack.wire.tcp import AE, CE, CWR, ECE, ECT_0, ECT_1, NOT_ECT

#: The three flags of the ACE field (RFC 9768 3.2.2): AE the high bit, ECE the low.
ACE_FLAGS = AE | CWR | ECE
#: r.cep's initial value (3.2.2.1): a path zeroing the flags cannot look like 5.
CEP_INIT = 5
#: The option fields' initial values (3.2.3): ECT(0) and ECT(1) bytes start at 1.
E0B_INIT = 1
CEB_INIT = 0
E1B_INIT = 1
#: The option's fields before any payload arrived, as a SYN,ACK carries them.
INITIAL_FIELDS = (E0B_INIT, CEB_INIT, E1B_INIT)
#: At most this many CE marks arrive before the receiver ACKs at once (3.2.2.5.1:
#: n SHOULD be 2 and MUST lie in 2 to 6, so that ACE cannot wrap unseen).
CE_ACK_LIMIT = 2

#: RFC 9768 Tables 2 and 4: the (AE, CWR, ECE) flags of the SYN,ACK, and of the
#: client's first ACK, by the IP-ECN field the SYN, or the SYN,ACK, arrived with.
REFLECT = {NOT_ECT: CWR, ECT_1: CWR | ECE, ECT_0: AE, CE: AE | CWR}
#: And back: the IP-ECN field a reflected ACE value stands for (2, 3, 4, 6).
_REFLECTED = {2: NOT_ECT, 3: ECT_1, 4: ECT_0, 6: CE}


def ace(flags: int) -> int:
    """The ACE field of a segment's flags, 0 to 7 (AE the high bit)."""
    return (4 if flags & AE else 0) | (2 if flags & CWR else 0) | (1 if flags & ECE else 0)


def ace_flags(value: int) -> int:
    """The flags carrying ``value`` (mod 8) in the ACE field."""
    return (AE if value & 4 else 0) | (CWR if value & 2 else 0) | (ECE if value & 1 else 0)


def syn_requests_accecn(flags: int) -> bool:
    """RFC 9768 3.1.2: a SYN whose (AE, CWR, ECE) is anything but 000 or 011 (classic
    ECN) asks for AccECN, and is answered as if it were 111."""
    v = ace(flags)
    return v != 0 and v != 3


def synack_mode(flags: int) -> str:
    """RFC 9768 Table 3: what an AccECN-asking client makes of the SYN,ACK's flags:
    "off" (000: the server does no ECN; 111: a broken server reflecting the SYN),
    "classic" (001) or "accecn" (any other -- the currently unused 101 included, as
    3.1.3 requires of a value it may come to mean; Linux takes 101 as classic)."""
    v = ace(flags)
    if v == 0 or v == 7:
        return "off"
    if v == 1:
        return "classic"
    return "accecn"


def reflected_ecn(value: int) -> int | None:
    """The IP-ECN field a handshake ACE ``value`` reflects (Tables 2 and 4), None for
    the values that reflect nothing (0, 1, 5, 7)."""
    return _REFLECTED.get(value)


def valid_transition(sent: int, received: int) -> bool:
    """Whether the path may have turned the IP-ECN field ``sent`` into ``received``
    (3.1.5): unchanged, or ECT(0)/ECT(1) turned into the other or CE. Not-ECT made
    ECN-capable, or an ECN-capable packet bleached to Not-ECT or CE unmarked, is
    mangling."""
    if sent == received:
        return True
    return sent != NOT_ECT and received != NOT_ECT and sent != CE


def option_delta(old: int, wire: int, init: int) -> int:
    """RFC 9768 3.2.3: the change in a 24-bit byte counter from the count ``old``
    (without its initial offset) to the option field ``wire``, taken as the
    nearest one either way (a negative change means reordered ACKs)."""
    d = (wire - init - old) & 0xFFFFFF
    return d - 0x1000000 if d & 0x800000 else d


def ce_delta(ace_value: int, expected: int, packets: int, mss: int,
             ce_bytes: int | None) -> int:
    """How many more CE marks an ACK feeds back (RFC 9768 3.2.2.5, Appendix A.2).

    ``expected``: the ACE value the marks counted so far stand for; ``packets``:
    the data packets this ACK newly acknowledges (cumulatively or by SACK). ACE
    counts modulo 8, so with more than 7 packets acknowledged it may have wrapped:
    then the *safe* estimate -- as many marks as the packets allow, congruent to
    the ACE change -- unless the option's CE byte count (``ce_bytes``, None
    without a usable option) shows the marks were few (as Linux's
    ``__tcp_accecn_process``)."""
    delta = (ace_value - expected) & 7
    if packets <= 7:
        return delta
    safe = packets - ((packets - delta) & 7)
    if ce_bytes is None:
        return safe
    if ce_bytes == 0:
        return delta
    if ce_bytes > delta * mss:
        return safe
    if ce_bytes < safe * mss // 2:
        return delta
    return safe


class AccEcn:
    """One connection's Accurate ECN state (RFC 9768 3.2), kept only while it is in
    AccECN mode.

    Receiver (what we feed back): ``r_cep`` CE-marked packets, ``r_e0b`` / ``r_ceb``
    / ``r_e1b`` payload bytes by codepoint (counted from 0; the wire adds the
    initial offsets), ``ce_unacked`` CE marks not yet fed back, ``prev_ecn`` the last
    arrival's IP-ECN field (a change asks for an ACK at once), ``reflect`` the
    SYN,ACK's IP-ECN field our first ACK still owes the server (client only),
    ``syn_ecn`` the IP-ECN field of the handshake segment that made it (the
    server's SYN,ACK reflects the SYN's).

    Sender (what the peer feeds back): ``s_ce`` CE marks it reported (its ACE is
    expected at ``(s_ce + 5) & 7``), ``s_e0b`` / ``s_ceb`` / ``s_e1b`` its byte
    counts from the option. ``ect``: our data goes out ECT(0) (False once the
    handshake showed the path mangles the field: 3.1.5, 3.2.2.3 -- feedback goes
    on). ``feedback``: the peer's ACE field is read (False once the client's first
    ACK showed it 0: RFC 9768 Table 4 note 1 -- a client not in AccECN mode, or a
    path zeroing the flags). ``opt_seen``: 0 no option from the peer yet, 1 seen, 2
    seen zeroed (3.2.3.2: ignored from then on). ``skip_ace``: the next ACK's ACE is
    the server's view of the handshake, not a counter (the client's first ACK).
    """

    __slots__ = (
        "ce_unacked",
        "ect",
        "feedback",
        "opt_seen",
        "prev_ecn",
        "r_ceb",
        "r_cep",
        "r_e0b",
        "r_e1b",
        "reflect",
        "s_ce",
        "s_ceb",
        "s_e0b",
        "s_e1b",
        "skip_ace",
        "syn_ecn",
    )

    def __init__(self, syn_ecn: int = NOT_ECT) -> None:
        self.syn_ecn = syn_ecn
        self.r_cep = 0
        self.r_e0b = 0
        self.r_ceb = 0
        self.r_e1b = 0
        self.ce_unacked = 0
        self.prev_ecn = syn_ecn
        self.reflect: int | None = None
        self.s_ce = 0
        self.s_e0b = 0
        self.s_ceb = 0
        self.s_e1b = 0
        self.ect = True
        self.feedback = True
        self.opt_seen = 0
        self.skip_ace = False

    def ace_to_send(self, pure: bool) -> int:
        """The flags of our next non-SYN segment's ACE field: the SYN,ACK's IP-ECN
        field on the client's first pure ACK (Table 4: only a segment without data
        carries it, 3.2.2.1), else r.cep + 5 (mod 8)."""
        reflect = self.reflect
        if reflect is not None and pure:
            self.reflect = None
            return REFLECT[reflect]
        self.ce_unacked = 0
        return ace_flags(self.r_cep + CEP_INIT)

    def option_fields(self) -> tuple[int, int, int]:
        """Our option's fields, on the wire with their initial offsets (3.2.3)."""
        return ((self.r_e0b + E0B_INIT) & 0xFFFFFF, (self.r_ceb + CEB_INIT) & 0xFFFFFF,
                (self.r_e1b + E1B_INIT) & 0xFFFFFF)

    def received(self, ecn: int, size: int) -> bool:
        """Count a packet that arrived with IP-ECN field ``ecn`` and ``size`` payload
        bytes (3.2.2.2: every packet for r.cep, payload for the byte counters).
        Returns whether it should be acknowledged at once: its field differs from the
        previous arrival's, or CE_ACK_LIMIT marks await feedback (3.2.2.5.1)."""
        if ecn == CE:
            self.r_cep += 1
            self.ce_unacked += 1
            self.r_ceb += size
        elif ecn == ECT_0:
            self.r_e0b += size
        elif ecn == ECT_1:
            self.r_e1b += size
        changed = ecn != self.prev_ecn
        self.prev_ecn = ecn
        return (changed and size > 0) or self.ce_unacked >= CE_ACK_LIMIT

    def take_option(self, fields: tuple[int | None, int | None, int | None]) -> int | None:
        """The peer's option (3.2.3.3): update its byte counts; return how many more
        CE bytes it reports, or None if the option tells nothing reliable (zeroed
        by the path, lacking the CE field, or older than the last one)."""
        e0b, ceb, e1b = fields
        if self.opt_seen == 0:
            # 3.2.3.2: a path that zeroes the option shows as EE0B or EE1B at 0.
            self.opt_seen = 2 if e0b == 0 or e1b == 0 else 1
        if self.opt_seen == 2:
            return None
        ok = True
        if e0b is not None:
            d = option_delta(self.s_e0b, e0b, E0B_INIT)
            self.s_e0b += d
            ok = d >= 0
        if e1b is not None:
            d = option_delta(self.s_e1b, e1b, E1B_INIT)
            self.s_e1b += d
            ok = ok and d >= 0
        if ceb is None:
            return None
        d = option_delta(self.s_ceb, ceb, CEB_INIT)
        self.s_ceb += d
        return d if ok and d >= 0 else None

    def info(self) -> dict[str, object]:
        """What ``tcp_info["accecn"]`` shows."""
        return {
            "ect": self.ect,
            "option": self.opt_seen == 1,
            "ce_received": self.r_cep,
            "bytes_received": {"ect0": self.r_e0b, "ect1": self.r_e1b, "ce": self.r_ceb},
            "ce_delivered": self.s_ce,
            "bytes_delivered": ({"ect0": self.s_e0b, "ect1": self.s_e1b, "ce": self.s_ceb}
                                if self.opt_seen == 1 else None),
        }


__all__ = ["ACE_FLAGS", "CEP_INIT", "CE_ACK_LIMIT", "INITIAL_FIELDS", "REFLECT",
           "AccEcn", "ace", "ace_flags", "ce_delta", "option_delta", "reflected_ecn",
           "syn_requests_accecn", "synack_mode", "valid_transition"]
