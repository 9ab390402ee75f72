"""What the stack's counter names mean, in words, for ladders, logs and metrics.

The engine counts every decision it makes about a segment by a named reason
(``tcpstack/tcp/inbound.py``, ``tcpstack/tcp/passive.py``, ``tcpstack/stack.py``).
A ladder shows the names that one segment caused, with the sentence below.
"""

from __future__ import annotations

from typing import Final

DESCRIPTIONS: Final[dict[str, str]] = {
    # the stack's demultiplexer
    "tcp_closed_port": "no listener on this port: answered with RST (RFC 9293 3.10.7.1)",
    "tcp_rst_sent": "RST sent for a segment that has no connection",
    "tcp_rst_rate_limited": "RST suppressed: over the --rst-rate-limit",
    "tcp_port_zero": "port 0: dropped",
    "tcp_syn_fin": "SYN and FIN together: dropped",
    "tcp_syn_rst": "SYN and RST together: dropped",
    "tcp_time_wait_reused": "a new SYN reopened a connection in TIME-WAIT (RFC 6191)",
    "tcp_syn_batch_limit": "SYN dropped: this batch already started --syn-batch-limit connections",
    "tcp_max_connections": "SYN dropped: --max-connections reached",
    "tcp_memory_pressure_refused": "SYN dropped: the stack's buffers are over --max-buffered",
    # TCP-MD5 (RFC 2385), checked before anything else sees a segment
    "tcp_md5_missing": "no TCP-MD5 signature from a peer with a key (--md5-key): dropped",
    "tcp_md5_failure": "TCP-MD5 signature does not match (wrong key or altered): dropped",
    "tcp_md5_unexpected": "TCP-MD5 signature from a peer without a key: dropped",
    # TCP-AO (RFC 5925 7.3), checked before anything else sees a segment
    "tcp_ao_missing": "no TCP-AO option from a peer with master keys (--ao-key): dropped",
    "tcp_ao_failure": "TCP-AO MAC does not match (wrong key, altered, or replayed): dropped",
    "tcp_ao_key_not_found": "TCP-AO KeyID names none of our RecvIDs for this peer: dropped",
    "tcp_ao_unexpected": "TCP-AO option from a peer without master keys: dropped",
    "tcp_ao_with_md5": "both TCP-AO and TCP-MD5 options (RFC 5925 forbids it): dropped",
    "tcp_ao_duplicate": "two TCP-AO options in one segment: dropped",
    "tcp_ao_rst_not_sent": "no RST to a TCP-AO peer without a connection (RFC 5925 7.7)",
    # ECN (RFC 3168)
    "tcp_ecn_ce_received": "arrived marked CE (congestion): ECE echoed until CWR (RFC 3168)",
    "tcp_ecn_cwr_received": "CWR: the peer reduced its window for our ECE; echo stops",
    "tcp_ecn_ece_reduced": "ECE or AccECN marks: window reduced as for a loss, once per "
                           "window (RFC 3168, RFC 9768)",
    # Accurate ECN (RFC 9768)
    "tcp_accecn_negotiated": "a connection agreed Accurate ECN (RFC 9768)",
    "tcp_accecn_ce_delivered": "CE marks on our data the peer fed back in the ACE field",
    "tcp_accecn_mangled": "the handshake showed the path zeroes or changes the IP-ECN "
                          "field: our data goes Not-ECT (RFC 9768 3.1.5)",
    # TCP Fast Open (RFC 7413): at a listener, and on our own active opens
    "tcp_tfo_cookie_requested": "a SYN asked for a Fast Open cookie: the SYN,ACK gives one",
    "tcp_tfo_passive": "a valid Fast Open cookie: the SYN's data taken, the connection "
                       "handed to the application at once",
    "tcp_tfo_passive_alt_key": "a Fast Open cookie of the backup key: valid, a fresh one given",
    "tcp_tfo_passive_fail": "a Fast Open cookie not ours: its data waits for the handshake, "
                            "a fresh cookie given",
    "tcp_tfo_listen_overflow": "the listener's Fast Open queue is full: ordinary handshake",
    "tcp_tfo_cookie_request_sent": "our SYN asked the server for a Fast Open cookie",
    "tcp_tfo_syn_data_sent": "our SYN carried data with the server's Fast Open cookie",
    "tcp_tfo_syn_cookie_sent": "our SYN carried the server's cookie, without data to send",
    "tcp_tfo_cookie_received": "the server's SYN,ACK gave us a Fast Open cookie",
    "tcp_tfo_active": "the server acknowledged the data of our SYN (Fast Open worked)",
    "tcp_tfo_active_fail": "the data of our SYN was not acknowledged (or the SYN timed "
                           "out): sent again after the handshake",
    "tcp_tfo_active_disabled": "no Fast Open to this server for now: SYNs with data to it "
                               "were lost (RFC 7413 4.1.3.1)",
    # the listener (RFC 9293 3.10.7.2, RFC 4987)
    "tcp_listen_rst_ignored": "RST at a listener: ignored (RFC 9293 3.10.7.2)",
    "tcp_listen_ack_reset": "ACK for no connection at a listener: answered with RST",
    "tcp_listen_no_syn": "neither SYN, ACK nor RST at a listener: dropped",
    "tcp_listen_accept_queue_full": "SYN dropped: the listener's accept queue (--backlog) is full",
    "tcp_listen_overflow": "SYN dropped: the SYN queue is full and SYN cookies are off",
    "tcp_syn_accepted": "SYN queued: a new connection in SYN-RECEIVED",
    "tcp_syncookie_sent": "SYN answered with a SYN cookie, no state kept (RFC 4987)",
    "tcp_syncookie_accepted": "the ACK carried a valid SYN cookie: connection rebuilt from it",
    "tcp_syncookie_invalid": "the ACK carried no valid SYN cookie: answered with RST",
    "tcp_syncookie_deferred": "valid SYN cookie, but no room for the connection now: dropped",
    # a connection's receive path (RFC 9293 3.10.7.3, 3.10.7.4, RFC 5961, RFC 7323)
    "tcp_closed_connection": "segment for a connection that is already gone",
    "tcp_syn_sent_bad_ack": "SYN-SENT: ACK outside (ISS, SND.NXT]: answered with RST",
    "tcp_syn_sent_rst_ignored": "SYN-SENT: RST without an acceptable ACK: ignored",
    "tcp_syn_sent_no_syn": "SYN-SENT: neither SYN nor RST: dropped",
    "tcp_paws_rejected": "timestamp older than TS.Recent (PAWS, RFC 7323 5): dropped, ACK sent",
    "tcp_seq_unacceptable": "outside the receive window: dropped, ACK sent",
    "tcp_rst_out_of_window": "RST outside the receive window: ignored",
    "tcp_rst_challenged": "RST in the window but not at RCV.NXT: challenge ACK (RFC 5961 3)",
    "tcp_syn_challenged": "SYN on a synchronized connection: challenge ACK (RFC 5961 4)",
    "tcp_no_ack": "no ACK bit: dropped",
    "tcp_syn_received_bad_ack": "SYN-RECEIVED: ACK not of our SYN: answered with RST",
    "tcp_ack_unsent": "ACK of data never sent: challenge ACK (RFC 5961 5)",
    "tcp_ack_too_old": "ACK far below SND.UNA: challenge ACK (RFC 5961 5)",
    "tcp_data_after_fin": "data or a second FIN after the peer's FIN: dropped",
    "tcp_data_after_close": "data after the application closed: answered with RST (RFC 2525)",
    "tcp_ooo_queue_full": "out-of-order data beyond the reassembly cap: dropped",
    "tcp_ooo_memory_pressure": "out-of-order data while memory is short: dropped",
    "tcp_time_wait_rst": "RST in TIME-WAIT: ignored (RFC 1337)",
    "tcp_time_wait_segment": "segment in TIME-WAIT: re-ACKed or dropped",
    "tcp_challenge_ack_limited": "challenge ACK suppressed by the rate limit (RFC 5961 7)",
    "tcp_oow_ack_limited": "ACK to an out-of-window segment suppressed by the rate limit",
    "tcp_syn_repeat_limited": "repeated SYN: SYN,ACK suppressed (one per 0.5 s)",
    "tcp_illegal_transition": "the state table refused this trigger (engine guard)",
    "tcp_user_timeout": "no progress for --user-timeout: connection ended",
    # retransmissions (counted where they happen)
    "tcp_retrans_syn": "SYN or SYN,ACK retransmitted after a timeout",
    "tcp_retrans_rto": "segment retransmitted after a retransmission timeout",
    "tcp_retrans_fast": "segment retransmitted by NewReno fast retransmit / partial ACK",
    "tcp_retrans_rack": "segment retransmitted after RACK judged it lost (SACK)",
    "tcp_retrans_tlp": "tail loss probe retransmitted the last segment (RFC 8985 7)",
    "tcp_rto_timeouts": "retransmission timeout with data outstanding",
}

#: Counters that are not drops or refusals: what happened normally.
NOT_DROPS: Final = frozenset({
    "ip_received", "ip_sent", "tcp_received", "tcp_syn_accepted", "tcp_syncookie_sent",
    "tcp_syncookie_accepted", "tcp_rst_sent", "tcp_time_wait_reused", "icmp_echo_replied",
    "udp_port_unreachable", "device_write_retried", "tcp_retrans_syn", "tcp_retrans_rto",
    "tcp_retrans_fast", "tcp_retrans_rack", "tcp_retrans_tlp", "tcp_rto_timeouts",
    "tcp_time_wait_recycled",
})

#: Counters that say a connection (or an attempt at one) was refused or dropped
#: without a per-connection trace: logged as a periodic summary.
REFUSALS: Final = frozenset({
    "tcp_syn_batch_limit", "tcp_max_connections", "tcp_memory_pressure_refused",
    "tcp_listen_accept_queue_full", "tcp_listen_overflow", "tcp_syncookie_invalid",
    "tcp_syncookie_deferred", "tcp_rst_rate_limited", "tcp_syn_fin", "tcp_syn_rst",
    "tcp_port_zero",
})

#: Counters that count nothing a reader of one segment's ladder needs.
UNINTERESTING: Final = frozenset({"ip_received", "tcp_received", "ip_sent"})

#: Retransmission counters, by the kind a metric labels them with.
RETRANS_KINDS: Final[dict[str, str]] = {
    "tcp_retrans_rto": "rto", "tcp_retrans_fast": "fast", "tcp_retrans_rack": "rack",
    "tcp_retrans_tlp": "tlp", "tcp_retrans_syn": "syn",
}

#: What a Terminated event's error means.
TERMINATION: Final[dict[str | None, str]] = {
    None: "closed",
    "reset": "reset by the peer (RST received)",
    "refused": "refused by the peer (RST in answer to our SYN)",
    "timeout": "timed out (retransmissions or the user timeout exhausted)",
    "aborted": "aborted locally (RST sent, or dropped at shutdown or by a limit)",
}


def describe(reason: str) -> str:
    """The sentence for a counter name (the name itself when there is none)."""
    return DESCRIPTIONS.get(reason, reason.replace("_", " "))


def is_drop(name: str) -> bool:
    """Whether a counter counts packets dropped or refused (for the drops metric)."""
    return name not in NOT_DROPS and not name.startswith(("tcp_retrans_", "icmp_type_"))
