"""``python -m tools.bench``: tcpstack against the Linux kernel (and PyTCP) on this machine.

Usage (as root)::

    python -m tools.bench [--quick] [--tiny] [--out DIR] [--only WORKLOAD,...] [--skip-pytcp]
                          [--stacks STACK,...] [--pin] [--readme FILE]
                          [--pytcp-venv DIR] [--py-spy DIR]

Runs the same workloads, in the same run, against

* **tcpstack** over TUN: ``tcpstack serve`` in a fresh network namespace; the
  clients run in that namespace too (the TUN's host side 10.0.0.1 is there);
* **kernel**: the Linux kernel's TCP, the reference: :mod:`tools.bench.kernel_server`
  (the very same :mod:`tcpstack.apps` services on :func:`asyncio.start_server`
  and uvloop) in namespace S, clients in namespace C, joined by a veth pair;
* **pytcp**: the PyTCP stack on a TAP interface (installed into its own venv,
  never the project's), driven by :mod:`tools.bench.pytcp_server`; with small
  sizes and counts, because it is slow.

Workloads: ``download``, ``upload``, ``connrate``, ``latency`` and ``idle`` on
tcpstack's own services, ``aiohttp`` and ``https`` on an aiohttp application
(:mod:`tools.bench.web_server`) run unchanged on each stack (see
:mod:`tools.bench.workloads`). Results go to ``--out`` (default
``./bench-results/``) as JSON and Markdown, and the Markdown table is printed.
Everything runs inside namespaces the tool creates and deletes again; nothing
is configured in the machine's own namespace. See ``tools/bench/README.md``.
"""
