"""The README's library and HTTPS examples, run as they are written.

Each example is taken from README.md by its ``<!-- test: NAME -->`` marker, so the
README cannot drift from what works: the asyncio streams server and the aiohttp
application run as programs inside a private namespace (on the real TUN, set up by
``tcpstack.TunStack``) and are reached by kernel clients and curl; the HTTPS lines
run the daemon, curl and openssl s_client exactly as printed (the certificate path
moved into the test's temporary directory).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon import STACK_ADDRESS, Daemon, assert_clean_exit, run_client
from tests.netns import REPO_ROOT, NetNS

README = REPO_ROOT / "README.md"


def readme_block(name: str) -> str:
    """The fenced code block right after ``<!-- test: NAME -->`` in the README."""
    text = README.read_text()
    match = re.search(rf"<!-- test: {re.escape(name)} -->\s*```\w*\n(.*?)```", text, re.S)
    assert match, f"README has no block marked {name!r}"
    return match.group(1)


def wait_for_port(netns: NetNS, port: int, timeout: float = 15.0) -> None:
    run_client(netns, f"""
        import socket, time
        deadline = time.monotonic() + {timeout}
        while True:
            try:
                socket.create_connection(("{STACK_ADDRESS}", {port}), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        emit(ok=True)
        """, timeout=timeout + 10)


@pytest.fixture
def program(netns: NetNS, tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    """Starts a README program in the namespace; stops it (by PID) afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(code: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"program-{len(procs)}.log").open("wb")
        proc = netns.popen_python(code, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_readme_streams_example_echoes_for_a_kernel_client(
        netns: NetNS, program: callable, tmp_path: Path) -> None:  # type: ignore[valid-type]
    proc = program(readme_block("readme-streams"))
    wait_for_port(netns, 7000)
    fields = run_client(netns, f"""
        import socket
        s = socket.create_connection(("{STACK_ADDRESS}", 7000), timeout=10)
        s.sendall(b"hello\\nworld\\n" * 1000)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        emit(ok=got == b"hello\\nworld\\n" * 1000, n=len(got))
        """)
    assert fields["ok"], fields
    assert proc.poll() is None, (tmp_path / "program-0.log").read_text()


def test_readme_aiohttp_example_answers_curl(netns: NetNS, program: callable,  # type: ignore[valid-type]
                                             tmp_path: Path) -> None:
    proc = program(readme_block("readme-aiohttp"))
    wait_for_port(netns, 8080)
    result = netns.run(["curl", "-sS", "--max-time", "10", f"http://{STACK_ADDRESS}:8080/"],
                       capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"hello": "10.0.0.1"}
    assert proc.poll() is None, (tmp_path / "program-0.log").read_text()


def test_readme_https_example_with_curl_and_openssl(netns: NetNS, tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    lines = [ln for ln in readme_block("readme-https").splitlines() if ln.strip()]
    cert = tmp_path / "cert.pem"

    def words(line: str) -> list[str]:
        return shlex.split(line.replace("/tmp/tcpstack-cert.pem", str(cert)))

    serve, curl, openssl = (words(ln) for ln in lines)
    assert serve[:2] == ["tcpstack", "serve"]
    daemon = Daemon(netns, tmp_path / "daemon.log", serve[2:]).start()
    try:
        got = netns.run([*curl, "-sS", "--max-time", "10"], capture_output=True, text=True,
                        timeout=20, check=False)
        assert got.returncode == 0, got.stderr
        assert "tcpstack" in got.stdout

        # openssl s_client, as printed (its "</dev/null" is the shell's), and with
        # each TLS version pinned.
        assert openssl[-1] == "</dev/null"
        for extra, version in (([], None), (["-tls1_2"], "TLSv1.2"), (["-tls1_3"], "TLSv1.3")):
            out = netns.run([*openssl[:-1], *extra], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=20, check=False)
            assert out.returncode == 0, out.stdout + out.stderr
            assert "Verify return code: 0 (ok)" in out.stdout, out.stdout
            assert "ALPN protocol: http/1.1" in out.stdout, out.stdout
            if version is not None:
                assert re.search(rf"Protocol\s*:\s*{version}|New, {version}", out.stdout), \
                    out.stdout

        # The fingerprint logged is the certificate's.
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        digest = hashlib.sha256(der).hexdigest().upper()
        fingerprint = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
        assert fingerprint in daemon.log, daemon.log
    finally:
        result = daemon.stop()
    assert_clean_exit(result)
