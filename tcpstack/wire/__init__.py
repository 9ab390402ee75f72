"""Packet views and builders. No state, no I/O.

Untrusted input is checked once, at parse time: the ``parse_*`` functions raise
:class:`~tcpstack.wire.errors.Malformed` with a named reason, and everything they
return is safe to use without further checks.
"""
