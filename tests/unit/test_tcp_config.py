"""TcpConfig validation: every bad value raises ValueError with a clear message."""

from __future__ import annotations

from typing import Any

import pytest

from tcpstack.tcp.config import TcpConfig


def test_defaults_are_valid() -> None:
    cfg = TcpConfig()
    assert cfg.mss == 1460  # RFC 9293 3.7.1: 1500-byte MTU minus 40
    assert cfg.msl > 0 and cfg.rto_min <= cfg.rto_initial <= cfg.rto_max


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mss": 87}, "MSS 87 out of range"),
        ({"mss": 65496}, "MSS 65496 out of range"),
        ({"rcv_buf": 1023}, "receive buffer 1023 out of range"),
        ({"rcv_buf": (1 << 30) + 1}, "receive buffer"),
        ({"snd_buf": 0}, "send buffer 0 out of range"),
        ({"msl": 0}, "MSL 0 out of range"),
        ({"msl": -1.0}, "MSL"),
        ({"msl": 3601}, "MSL 3601"),
        ({"rto_min": 0}, "rto_min"),
        ({"rto_min": 2.0, "rto_initial": 1.0}, "rto_min <= rto_initial"),
        ({"rto_initial": 200.0}, "rto_initial <= rto_max"),
        ({"max_retries": 0}, "retry limits"),
        ({"syn_retries": 0}, "retry limits"),
        ({"synack_retries": -1}, "retry limits"),
        ({"max_retries": 1000}, "retry limits"),
        ({"fin_timeout": 0}, "fin_timeout must be positive"),
        ({"initial_window": 0}, "initial window"),
        ({"congestion_control": "vegas"}, "unknown congestion control 'vegas'"),
    ],
)
def test_invalid_values_raise(kwargs: dict[str, Any], message: str) -> None:
    """Bounds follow RFC 9293 3.7.1 (MSS), RFC 7323 2.3 (buffers vs. window scale),
    RFC 9293 3.4.2 (MSL), RFC 6298 2.4/2.5 (RTO), RFC 9293 3.8.3 (retries)."""
    with pytest.raises(ValueError, match=message):
        TcpConfig(**kwargs)


@pytest.mark.parametrize(("rcv_buf", "shift"), [(1024, 0), (65535, 0), (65536, 1),
                                                (256 * 1024, 3), (1 << 30, 14)])
def test_rcv_wscale_smallest_shift_that_fits(rcv_buf: int, shift: int) -> None:
    """RFC 7323 2.2/2.3: the shift lets the buffer fit the 16-bit field; at most 14.
    With autotuning the buffer that must fit is the largest it may grow to."""
    assert TcpConfig(rcv_buf=rcv_buf, autotune=False).rcv_wscale == shift
    assert TcpConfig(rcv_buf=1024, rcv_buf_max=max(rcv_buf, 1024)).rcv_wscale == shift


def test_default_window_scale_is_chosen_for_the_largest_buffer() -> None:
    """6 MiB (Linux's tcp_rmem maximum) needs a shift of 7, as Linux uses."""
    assert TcpConfig().rcv_wscale == 7


def test_config_is_frozen() -> None:
    """The validated settings cannot be changed afterwards (validation happens once)."""
    cfg = TcpConfig()
    with pytest.raises(AttributeError):
        cfg.mss = 1000  # type: ignore[misc]
