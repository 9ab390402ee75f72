"""``tcpstack ss`` and ``tcpstack trace``: clients of a running daemon's control socket."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tcpstack.observe import table
from tcpstack.observe.control import ControlError, default_socket_path, request, trace


def _port(value: str) -> int:
    try:
        n = int(value, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {value!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port {n} out of range 0..65535")
    return n


def _state(value: str) -> str:
    try:
        table.states_for(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def _where(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interface", "-I", default="tcpstack0", metavar="NAME",
                   help="the daemon's interface, which names its socket (default: "
                        "%(default)s)")
    p.add_argument("--socket", type=Path, default=None, metavar="PATH",
                   help="the daemon's control socket (default: "
                        "/run/tcpstack/NAME[@netns-INODE].sock as root)")


def add_subcommands(sub: Any) -> None:
    """Register ``ss`` and ``trace`` on the top-level subparsers."""
    ss = sub.add_parser("ss", help="connections of a running daemon, like ss -tin",
                        description="Show the connections of a running tcpstack daemon "
                                    "(through its control socket), like ss -tin.")
    _where(ss)
    ss.add_argument("-t", "--tcp", action="store_true", help="TCP (the only kind; accepted)")
    ss.add_argument("-n", "--numeric", action="store_true", help="numeric (always; accepted)")
    ss.add_argument("-i", "--info", action="store_true",
                    help="internals: RTT, RTO, cwnd, ssthresh, bytes, retransmissions ...")
    ss.add_argument("-l", "--listening", action="store_true", help="listening ports only")
    ss.add_argument("-a", "--all", action="store_true", help="listening ports too")
    ss.add_argument("--state", "-o", type=_state, default=None, metavar="STATE",
                    help="only this state: established, syn-received, time-wait, ... or "
                         "connected, synchronized, all")
    ss.add_argument("--port", type=_port, default=None, metavar="PORT",
                    help="only connections with this local or remote port")
    ss.add_argument("--sport", type=_port, default=None, metavar="PORT",
                    help="only this local port")
    ss.add_argument("--dport", type=_port, default=None, metavar="PORT",
                    help="only this remote port")
    ss.add_argument("--detail", default=None, metavar="ADDR:PORT",
                    help="everything about the connection(s) with this end "
                         "(IPv6 as [ADDR]:PORT)")
    ss.add_argument("--json", action="store_true", help="JSON instead of a table")

    tr = sub.add_parser("trace", help="handshake ladders from a running daemon, live",
                        description="Attach to a running tcpstack daemon and print each "
                                    "connection's opening and teardown as it happens.")
    _where(tr)
    tr.add_argument("--json", action="store_true", help="one JSON object per ladder")
    tr.add_argument("--count", type=int, default=0, metavar="N",
                    help="stop after N ladders (default: until interrupted)")
    tr.add_argument("--duration", type=float, default=0.0, metavar="SECONDS",
                    help="stop after this long (default: until interrupted)")


def _path(args: argparse.Namespace) -> Path:
    path: Path = args.socket or default_socket_path(args.interface)
    return path


def _fail(message: str) -> int:
    print(f"tcpstack: error: {message}", file=sys.stderr)
    return 1


def cmd_ss(args: argparse.Namespace) -> int:
    path = _path(args)
    try:
        if args.detail is not None:
            answer = request(path, {"cmd": "detail", "address": args.detail})
            if args.json:
                print(json.dumps(answer["rows"], indent=1))
            else:
                print(table.render_detail(answer["rows"]))
            return 0 if answer["rows"] else 1
        req: dict[str, Any] = {"cmd": "ss", "listening": args.listening or args.all}
        for name in ("state", "port", "sport", "dport"):
            if getattr(args, name) is not None:
                req[name] = getattr(args, name)
        answer = request(path, req)
    except ControlError as e:
        return _fail(str(e))
    rows = [] if args.listening else answer["rows"]
    listening = answer.get("listeners", []) if args.listening or args.all else []
    if args.json:
        print(json.dumps({"connections": rows, "listeners": listening,
                          "observing": answer.get("observing")}, indent=1))
        return 0
    print(table.render_rows(listening + rows, info=args.info))
    if args.info and answer.get("observing") == "light" and rows:
        print("(retrans: - means the daemon watches no packets; start it with --observe, "
              "or run tcpstack trace meanwhile)", file=sys.stderr)
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    try:
        trace(_path(args), sys.stdout, as_json=args.json, count=args.count,
              duration=args.duration)
    except ControlError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        pass
    return 0


__all__ = ["add_subcommands", "cmd_ss", "cmd_trace"]
