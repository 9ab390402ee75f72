"""Seeing inside the stack: handshake ladders, connection tables, captures, metrics.

Everything here watches; nothing changes what the stack does. The stack offers one
seam, :meth:`tcpstack.stack.Stack.attach_observer`; :class:`~tcpstack.observe.core.Observatory`
is the observer the daemon attaches, and the pieces hang off it:

* :mod:`~tcpstack.observe.ladder` -- each connection's opening and teardown as a
  ladder (data, JSON, text), with the reasons the engine counted;
* :mod:`~tcpstack.observe.table` -- ``ss``-like rows and per-connection detail;
* :mod:`~tcpstack.observe.history` -- bounded per-connection histories for plots;
* :mod:`~tcpstack.observe.pcap` -- pcap/pcapng writing and the capturing device;
* :mod:`~tcpstack.observe.control` -- the UNIX control socket, ``tcpstack ss`` and
  ``tcpstack trace``;
* :mod:`~tcpstack.observe.metrics` -- Prometheus metrics (needs ``prometheus-client``);
* :mod:`~tcpstack.observe.dashboard` -- the live web view;
* :mod:`~tcpstack.observe.logs` -- JSON logs and rate-limited refusal logging.
"""
