"""``tcpstack serve``'s TLS flags: validation, one-line errors, the self-signed
certificate and its fingerprint. The TUN is never opened (the guard of test_cli)."""

from __future__ import annotations

import hashlib
import re
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import (
    _GUARDED_MAIN,
    GUARD_MARKER,
    GUARD_STATUS,
    REPO_ROOT,
    _env,
    assert_usage_error,
    run_cli,
    run_module,
)

from tcpstack.certs import self_signed

BASE = ("serve", "--log-level", "info")


def run_without_cryptography(*args: str) -> subprocess.CompletedProcess[str]:
    """The guarded CLI with the ``cryptography`` package made unimportable."""
    code = "import sys\nsys.modules['cryptography'] = None\n" + _GUARDED_MAIN
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=30, env=_env(), cwd=str(REPO_ROOT), check=False)


def test_self_signed_without_cryptography_is_a_one_line_error() -> None:
    assert_usage_error(run_without_cryptography(*BASE, "--tls-self-signed"),
                       "--tls-self-signed", "cryptography", "tcpstack[tls]")


def test_self_signed_logs_the_fingerprint_of_the_certificate_it_writes(
        tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    out = tmp_path / "cert.pem"
    result = run_cli(*BASE, "--tls-self-signed", "--tls-write-cert", str(out))
    assert result.returncode == GUARD_STATUS, result.stderr
    assert GUARD_MARKER in result.stderr
    match = re.search(r"SHA-256 fingerprint ((?:[0-9A-F]{2}:){31}[0-9A-F]{2})", result.stderr)
    assert match, result.stderr
    der = ssl.PEM_cert_to_DER_cert(out.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    assert match.group(1).replace(":", "") == digest
    # A client can load it as its trust anchor.
    context = ssl.create_default_context(cafile=str(out))
    assert context.cert_store_stats()["x509"] == 1


def test_certificate_and_key_files_are_loaded_before_the_interface(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    cert = self_signed(["10.0.0.2"])
    (tmp_path / "c.pem").write_bytes(cert.cert_pem)
    (tmp_path / "k.pem").write_bytes(cert.key_pem)
    result = run_cli(*BASE, "--tls-cert", str(tmp_path / "c.pem"),
                     "--tls-key", str(tmp_path / "k.pem"), "--https-port", "8443")
    assert result.returncode == GUARD_STATUS, result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--tls-cert", "/nonexistent/cert.pem"), "not found"),
        (("--tls-key", "/tmp/k.pem"), "--tls-key needs --tls-cert"),
        (("--tls-write-cert", "/tmp/c.pem"), "--tls-write-cert needs --tls-self-signed"),
        (("--tls-self-signed", "--tls-cert", "x.pem"), "not allowed with"),
        (("--tls-self-signed", "--https-port", "80"), "share a port"),
        (("--tls-self-signed", "--https-port", "70000"), "out of range"),
    ],
    ids=["missing-file", "key-alone", "write-cert-alone", "both-sources", "port-clash",
         "bad-port"],
)
def test_bad_tls_flags_exit_2_with_one_line(args: tuple[str, ...], fragment: str) -> None:
    assert_usage_error(run_cli(*BASE, *args), fragment)


def test_a_key_file_that_does_not_match_is_reported(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    (tmp_path / "c.pem").write_bytes(self_signed(["10.0.0.2"]).cert_pem)
    (tmp_path / "k.pem").write_bytes(self_signed(["10.0.0.2"]).key_pem)
    assert_usage_error(run_cli(*BASE, "--tls-cert", str(tmp_path / "c.pem"),
                               "--tls-key", str(tmp_path / "k.pem")), "TLS certificate/key")


def test_help_lists_the_tls_group() -> None:
    result = run_module("serve", "--help")
    assert result.returncode == 0
    for flag in ("--tls-cert", "--tls-key", "--tls-self-signed", "--tls-write-cert",
                 "--https-port"):
        assert flag in result.stdout
