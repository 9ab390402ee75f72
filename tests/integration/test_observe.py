"""Observation of a real daemon in a namespace: the capture file against the traffic a
test generated, ``tcpstack ss`` and the metrics against known connections and bytes,
``tcpstack trace`` attached to a running daemon, ladders and JSON logs on stdout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dpkt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tcpstack.apps.http import pattern_bytes
from tests.integration.capture import require_tool
from tests.integration.daemon import (
    HOST_ADDRESS,
    STACK_ADDRESS,
    DaemonFactory,
    assert_clean_exit,
    run_client,
)
from tests.netns import NetNS

DOWNLOAD = 1_000_000


@pytest.fixture
def daemon(netns: NetNS, tmp_path: Path) -> Iterator[DaemonFactory]:
    """Start daemons with ``daemon(*args)``; all are stopped (SIGTERM) afterwards."""
    factory = DaemonFactory(netns, tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


def tcpstack_cmd(netns: NetNS, *args: str,
                 timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(netns.argv([sys.executable, "-m", "tcpstack", *args]),
                          capture_output=True, text=True, timeout=timeout,
                          env=netns.python_env(), check=False)


def tcp_streams(path: Path) -> dict[tuple[str, int, str, int], dict[str, Any]]:
    """Per direction (src, sport, dst, dport): payload reassembled by sequence number
    (retransmissions counted once), flags seen, packets; checksums verified."""
    out: dict[tuple[str, int, str, int], dict[str, Any]] = {}
    with path.open("rb") as f:
        for _ts, buf in dpkt.pcapng.Reader(f):
            if buf[0] >> 4 != 4:
                continue  # the kernel's IPv6 router solicitations on the new interface
            ip = dpkt.ip.IP(buf)
            assert ip.sum == dpkt.ip.IP(bytes(ip)).sum  # the IP checksum is as dpkt computes
            if ip.p != 6:
                continue
            tcp = ip.data
            src, dst = ".".join(map(str, ip.src)), ".".join(map(str, ip.dst))
            key = (src, tcp.sport, dst, tcp.dport)
            d = out.setdefault(key, {"pieces": {}, "flags": [], "packets": 0, "bad_sum": 0,
                                     "max_len": 0})
            d["packets"] += 1
            d["flags"].append(tcp.flags)
            d["max_len"] = max(d["max_len"], len(buf))
            original = tcp.sum
            tcp.sum = 0
            ip.sum = 0
            check = dpkt.ip.IP(bytes(ip)).data.sum  # dpkt fills in the checksum
            if check != original:
                d["bad_sum"] += 1
            if tcp.flags & dpkt.tcp.TH_SYN:
                d["isn"] = tcp.seq
            if tcp.data:
                d["pieces"][tcp.seq] = bytes(tcp.data)
    for d in out.values():
        isn = d.get("isn")
        data = bytearray()
        if isn is not None:
            nxt = (isn + 1) & 0xFFFFFFFF
            pieces = d["pieces"]
            for _ in range(len(pieces) + 1):
                chunk = pieces.get(nxt)
                if chunk is None:
                    break
                data += chunk
                nxt = (nxt + len(chunk)) & 0xFFFFFFFF
        d["stream"] = bytes(data)
    return out


def test_pcap_holds_exactly_the_bytes_of_a_download_and_a_refused_connection(
        daemon: DaemonFactory, netns: NetNS, tmp_path: Path) -> None:
    """With offloads on (the default) the capture still shows MTU-sized segments with
    valid checksums, and the stack's byte stream in it equals what curl received."""
    pcap = tmp_path / "traffic.pcapng"
    d = daemon("--pcap", str(pcap), "--no-control-socket")
    body = tmp_path / "body.bin"
    result = netns.run(["curl", "-sS", "-i", "-o", str(body), "--max-time", "20",
                        f"http://{STACK_ADDRESS}/bytes/{DOWNLOAD}"], capture_output=True,
                       text=True)
    assert result.returncode == 0, result.stderr
    refused = netns.run(["curl", "-sS", "--max-time", "5", f"http://{STACK_ADDRESS}:81/"],
                        capture_output=True, text=True)
    assert refused.returncode == 7  # connection refused
    # Rotated away (as logrotate does), then SIGHUP: the daemon starts a new file.
    first = tmp_path / "first.pcapng"
    pcap.rename(first)
    os.kill(d.pid, signal.SIGHUP)
    deadline = time.monotonic() + 20.0
    while "reopened (SIGHUP)" not in d.log and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "reopened (SIGHUP)" in d.log, d.log
    assert pcap.exists()  # the new file, with its header
    netns.run(["curl", "-sS", "-o", "/dev/null", f"http://{STACK_ADDRESS}/second"],
              check=True, capture_output=True)
    exit_ = d.stop()
    assert_clean_exit(exit_)
    assert "reopened (SIGHUP)" in exit_.log
    after = tcp_streams(pcap)
    assert [v["stream"][:12] for k, v in after.items() if k[3] == 80] == [b"GET /second "]
    pcap = first
    streams = tcp_streams(pcap)
    received = body.read_bytes()
    assert received.endswith(pattern_bytes(DOWNLOAD))
    downloads = [(k, v) for k, v in streams.items()
                 if k[0] == STACK_ADDRESS and k[1] == 80 and v["stream"] == received]
    assert len(downloads) == 1, {k: len(v["stream"]) for k, v in streams.items()}
    key, down = downloads[0]
    up = streams[(key[2], key[3], key[0], key[1])]
    assert up["stream"].startswith(b"GET /bytes/1000000 HTTP/1.1\r\n")
    for d_ in (down, up):
        assert d_["bad_sum"] == 0
        assert d_["max_len"] <= 1500  # super-segments were cut into wire segments
    assert any(f & dpkt.tcp.TH_SYN for f in down["flags"])
    assert any(f & dpkt.tcp.TH_FIN for f in down["flags"])
    rst = [k for k, v in streams.items() if k[1] == 81 and k[0] == STACK_ADDRESS
           and all(f & dpkt.tcp.TH_RST for f in v["flags"])]
    syn = [k for k, v in streams.items() if k[3] == 81 and k[0] == HOST_ADDRESS]
    assert len(rst) == 1 and len(syn) == 1
    # An independent reader agrees on the packet count.
    tshark = require_tool("tshark")
    count = subprocess.run([tshark, "-r", str(pcap), "-T", "fields", "-e", "frame.number"],
                           capture_output=True, text=True, check=True, timeout=60)
    assert len(count.stdout.split()) == sum(v["packets"] for v in streams.values()) + \
        _non_tcp(pcap)


def _non_tcp(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _, buf in dpkt.pcapng.Reader(f)
                   if buf[0] >> 4 != 4 or dpkt.ip.IP(buf).p != 6)


ECHO_CLIENTS = """
import socket, time, sys
n, m = {n}, {m}
socks = []
for i in range(n):
    s = socket.create_connection(("{addr}", 7), timeout=10)
    data = bytes((i + j) % 256 for j in range(m))
    s.sendall(data)
    got = b""
    while len(got) < m:
        got += s.recv(65536)
    assert got == data
    socks.append(s)
emit(ports=[s.getsockname()[1] for s in socks])
sys.stdout.flush()
sys.stdin.readline()   # keep them open until told
"""


def test_ss_and_metrics_report_n_connections_and_m_bytes(
        daemon: DaemonFactory, netns: NetNS, tmp_path: Path) -> None:
    n, m = 5, 200_000
    sock = tmp_path / "ctl.sock"
    d = daemon("--control-socket", str(sock), "--metrics", "127.0.0.1:9109", "--observe")
    code = "import json\ndef emit(**f):\n    print('RESULT ' + json.dumps(f), flush=True)\n" + \
        ECHO_CLIENTS.format(n=n, m=m, addr=STACK_ADDRESS)
    client = subprocess.Popen(netns.argv([sys.executable, "-c", code]), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=netns.python_env())
    try:
        assert client.stdout is not None and client.stdin is not None
        line = client.stdout.readline()
        assert line.startswith("RESULT "), line
        ports = set(json.loads(line[7:])["ports"])
        deadline = time.monotonic() + 20.0
        while True:  # until the client's last ACKs have arrived
            ss = tcpstack_cmd(netns, "ss", "--socket", str(sock), "-ti", "--state",
                              "established", "--port", "7", "--json")
            assert ss.returncode == 0, ss.stderr
            rows = json.loads(ss.stdout)["connections"]
            if all(r["bytes_acked"] == m for r in rows) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert {int(r["remote"].rsplit(":", 1)[1]) for r in rows} == ports
        for r in rows:
            assert r["bytes_received"] == m and r["bytes_acked"] == m
            assert r["send_q"] == 0 and r["recv_q"] == 0
            # Counted (full observation); CPU contention may cause a probe or two.
            assert isinstance(r["retrans"], int) and r["sack"] and r["ts"]
            assert r["rtt_ms"] is not None and r["age_s"] > 0
        text = tcpstack_cmd(netns, "ss", "--socket", str(sock), "-tia")
        assert text.returncode == 0
        assert text.stdout.count("ESTAB") == n and "LISTEN" in text.stdout
        assert f"bytes_acked:{m}" in text.stdout
        remote = rows[0]["remote"]
        detail = tcpstack_cmd(netns, "ss", "--socket", str(sock), "--detail", remote)
        assert detail.returncode == 0 and "snd_una" in detail.stdout
        scrape = netns.run(["curl", "-sS", "http://127.0.0.1:9109/metrics"],
                           capture_output=True, text=True)
        assert scrape.returncode == 0, scrape.stderr
        metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in text_string_to_metric_families(scrape.stdout)
                   for s in fam.samples}
        assert metrics[("tcpstack_connections", (("state", "ESTABLISHED"),))] == n
        assert metrics[("tcpstack_listeners", ())] == 3
        assert metrics[("tcpstack_handshake_duration_seconds_count", ())] >= n
        assert metrics[("tcpstack_rtt_seconds_count", (("sample", "initial"),))] >= n
        assert metrics[("tcpstack_bytes_total", (("direction", "in"),))] > n * m
        assert metrics[("tcpstack_bytes_total", (("direction", "out"),))] > n * m
        assert metrics[("tcpstack_packets_total", (("direction", "in"),))] > 0
        assert metrics[("tcpstack_syncookies_total", (("result", "sent"),))] == 0
        kinds = {dict(labels)["kind"] for name, labels in metrics
                 if name == "tcpstack_retransmissions_total"}
        assert kinds == {"rto", "fast", "rack", "tlp", "syn"}
        assert ("tcpstack_events_total", (("counter", "tcp_syn_accepted"),)) in metrics
        client.stdin.write("\n")
        client.stdin.flush()
        client.wait(timeout=10)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert_clean_exit(d.stop())


def test_trace_attaches_to_a_running_daemon_and_shows_opening_and_refusal(
        daemon: DaemonFactory, netns: NetNS, tmp_path: Path) -> None:
    sock = tmp_path / "ctl.sock"
    d = daemon("--control-socket", str(sock))
    tracer = subprocess.Popen(
        netns.argv([sys.executable, "-m", "tcpstack", "trace", "--socket", str(sock),
                    "--json", "--count", "3", "--duration", "20"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=netns.python_env())
    try:
        deadline = time.monotonic() + 20.0
        while "trace client attached" not in d.log and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "trace client attached" in d.log, d.log
        run_client(netns, f"""
import socket
s = socket.create_connection(("{STACK_ADDRESS}", 9), timeout=5)
s.sendall(b"x" * 1000)
s.close()
try:
    socket.create_connection(("{STACK_ADDRESS}", 81), timeout=5)
except ConnectionRefusedError:
    emit(refused=True)
""")
        out, err = tracer.communicate(timeout=25)
    finally:
        if tracer.poll() is None:
            tracer.kill()
            tracer.communicate()
    docs = [json.loads(line) for line in out.splitlines()]
    opening = [x for x in docs if x["phase"] == "opening" and x["local"].endswith(":9")]
    assert len(opening) == 1, out + err
    assert [e["flags"] for e in opening[0]["events"]] == ["SYN", "SYN,ACK", "ACK"]
    assert opening[0]["negotiated"]["sack"] is True
    refused = [x for x in docs if x["phase"] == "refused"]
    assert refused and refused[0]["local"].endswith(":81")
    assert "no listener" in refused[0]["why"]
    exit_ = d.stop()
    assert_clean_exit(exit_)
    assert "refused 10.0.0.1:" in exit_.log  # the refusal log line


def test_trace_handshakes_prints_ladders_tls_included_and_json_logs_are_json(
        daemon: DaemonFactory, netns: NetNS) -> None:
    pytest.importorskip("cryptography", reason="--tls-self-signed needs cryptography")
    d = daemon("--trace-handshakes", "--trace-format", "json", "--log-format", "json",
               "--no-control-socket", "--tls-self-signed", "--https-port", "443")
    netns.run(["curl", "-sS", "-o", "/dev/null", f"http://{STACK_ADDRESS}/"], check=True,
              capture_output=True)
    https = netns.run(["curl", "-sS", "-k", "-o", "/dev/null", "--resolve",
                       f"example.test:443:{STACK_ADDRESS}", "https://example.test/"],
                      capture_output=True, text=True)
    assert https.returncode == 0, https.stderr
    deadline = time.monotonic() + 20.0
    while d.log.count('"phase": "tls"') + d.log.count('"phase":"tls"') == 0 \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    exit_ = d.stop()
    assert exit_.returncode == 0, exit_.log
    objs = [json.loads(line) for line in exit_.log.splitlines() if line.startswith("{")]
    assert len(objs) == len([ln for ln in exit_.log.splitlines() if ln.strip()]), exit_.log
    ladders = [o for o in objs if o.get("type") == "ladder"]
    logs = [o for o in objs if "level" in o]
    assert {"opening", "closing", "tls"} <= {x["phase"] for x in ladders}
    (tls,) = [x for x in ladders if x["phase"] == "tls"]
    assert tls["local"].endswith(":443") and tls["outcome"] == "established"
    assert tls["client_hello"]["sni"] == "example.test"
    assert "http/1.1" in tls["client_hello"]["alpn"]
    assert tls["server_hello"]["version"] in ("TLS 1.3", "TLS 1.2")
    assert [e["sender"] for e in tls["events"]][:3] == ["client", "server", "client"]
    opening_443 = [x for x in ladders if x["phase"] == "opening" and x["id"] == tls["id"]]
    assert len(opening_443) == 1  # the same connection's TCP opening
    assert any("stopped; counters" in o["message"] for o in logs)
    assert all({"time", "level", "logger", "message"} <= set(o) for o in logs)


IPV6_ECHO_CLIENT = """
import socket, sys
s = socket.create_connection(("fd00::2", 7), timeout=10)
s.sendall(b"x" * 1000)
got = b""
while len(got) < 1000:
    got += s.recv(65536)
emit(port=s.getsockname()[1])
sys.stdin.readline()   # keep it open until told
"""


def test_ipv6_dashboard_ss_detail_and_capture(
        daemon: DaemonFactory, netns: NetNS, tmp_path: Path) -> None:
    """Over IPv6 end to end: the dashboard served through the stack on
    ``[fd00::2]:8080`` lists its own connection as ``[fd00::1]:PORT``; ``tcpstack ss
    --detail [FD00:0::1]:PORT`` finds an IPv6 echo connection; the listeners show by
    family; the capture of an IPv6 download has wire-sized segments with valid
    checksums (GSO_TCPV6 super-segments cut, IPv6 pseudo-header sums completed)."""
    sock = tmp_path / "ctl.sock"
    pcap = tmp_path / "six.pcapng"
    d = daemon("--control-socket", str(sock), "--dashboard", "[fd00::2]:8080",
               "--pcap", str(pcap))
    api = netns.run(["curl", "-6", "-sS", "--max-time", "10",
                     "http://[fd00::2]:8080/api/connections"], capture_output=True, text=True)
    assert api.returncode == 0, api.stderr
    snap = json.loads(api.stdout)
    own = [r for r in snap["rows"] if r["local"] == "[fd00::2]:8080"]
    assert len(own) == 1 and own[0]["remote"].startswith("[fd00::1]:"), snap["rows"]
    assert {"[fd00::2]:8080", "*:80"} <= {li["local"] for li in snap["listeners"]}

    code = "import json\ndef emit(**f):\n    print('RESULT ' + json.dumps(f), flush=True)\n" + \
        IPV6_ECHO_CLIENT
    client = subprocess.Popen(netns.argv([sys.executable, "-c", code]), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=netns.python_env())
    try:
        assert client.stdout is not None and client.stdin is not None
        line = client.stdout.readline()
        assert line.startswith("RESULT "), line
        port = json.loads(line[7:])["port"]
        ss = tcpstack_cmd(netns, "ss", "--socket", str(sock), "--detail",
                          f"[FD00:0::1]:{port}", "--json")
        assert ss.returncode == 0, ss.stderr
        (row,) = json.loads(ss.stdout)
        assert row["remote"] == f"[fd00::1]:{port}" and row["local"] == "[fd00::2]:7"
        assert row["bytes_received"] == 1000
        text = tcpstack_cmd(netns, "ss", "--socket", str(sock), "-a")
        assert f"[fd00::1]:{port}" in text.stdout and "[fd00::2]:8080" in text.stdout
        client.stdin.write("\n")
        client.stdin.flush()
        client.wait(timeout=10)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    body = tmp_path / "body.bin"
    got = netns.run(["curl", "-6", "-sS", "-o", str(body), "--max-time", "20",
                     f"http://[fd00::2]/bytes/{DOWNLOAD}"], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    assert_clean_exit(d.stop())
    sizes, bad, payload = [], 0, 0
    with pcap.open("rb") as f:
        for _ts, buf in dpkt.pcapng.Reader(f):
            if buf[0] >> 4 != 6:
                continue
            ip6 = dpkt.ip6.IP6(buf)
            if ip6.nxt != 6:
                continue
            tcp = ip6.data
            sizes.append(len(buf))
            original = tcp.sum
            tcp.sum = 0
            if dpkt.ip6.IP6(bytes(ip6)).data.sum != original:  # dpkt computes it
                bad += 1
            if tcp.sport == 80:
                payload += len(tcp.data)
    assert bad == 0 and max(sizes) <= 1500
    assert payload >= DOWNLOAD
