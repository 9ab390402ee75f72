"""Throwaway TLS certificates (``tcpstack serve --tls-self-signed``), and TLS contexts.

:func:`self_signed` makes a self-signed certificate with the ``cryptography``
package (an optional dependency: ``pip install 'tcpstack[tls]'``): an ECDSA P-256
key, valid from an hour ago for ``days`` days, with the given IP addresses and DNS
names as subject alternative names, so clients that verify (``curl --cacert``,
Python's default context) accept it for those names when told to trust it.

:func:`server_context` loads a certificate and key into a server-side
:class:`ssl.SSLContext` (TLS 1.2 and 1.3, with ALPN protocols if given); key
material given as bytes goes through a private temporary file that is removed at
once (the ssl module loads keys only from files).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class MissingDependency(RuntimeError):
    """The optional ``cryptography`` package is not installed."""


@dataclass(frozen=True)
class Certificate:
    """A certificate and its private key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER certificate, as ``AB:CD:...`` (what ``openssl x509
        -fingerprint -sha256`` and browsers show)."""
        der = ssl.PEM_cert_to_DER_cert(self.cert_pem.decode("ascii"))
        digest = hashlib.sha256(der).hexdigest().upper()
        return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def self_signed(addresses: Sequence[str] = (), dns_names: Sequence[str] = ("localhost",),
                common_name: str = "tcpstack", days: int = 30) -> Certificate:
    """A new self-signed certificate for ``addresses`` and ``dns_names``.

    Raises :class:`MissingDependency` without the ``cryptography`` package.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as e:
        raise MissingDependency(
            "a self-signed certificate needs the 'cryptography' package "
            "(pip install 'tcpstack[tls]')") from e

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return Certificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
    )


def server_context(cert: Certificate | str | Path, key: str | Path | None = None, *,
                   alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """A server-side context for TLS 1.2 and 1.3 with ``cert`` (a :class:`Certificate`,
    or a PEM file with ``key`` as the key file, or both in one file)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if isinstance(cert, Certificate):
        load_pem_chain(context, cert)
    else:
        context.load_cert_chain(cert, key)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def load_pem_chain(context: ssl.SSLContext, cert: Certificate) -> None:
    """Load an in-memory certificate and key (through a private file, removed at once)."""
    fd, path = tempfile.mkstemp(prefix="tcpstack-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp made it 0600
            f.write(cert.key_pem + cert.cert_pem)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)


@dataclass(frozen=True)
class HttpsSetup:
    """What ``tcpstack serve`` serves HTTPS with: the context, and for a generated
    certificate its fingerprint."""

    context: ssl.SSLContext
    fingerprint: str | None = None


def https_setup(*, cert_file: Path | None, key_file: Path | None, self_signed_for: str | None,
                write_cert: Path | None = None) -> HttpsSetup:
    """The daemon's HTTPS context: from ``cert_file``/``key_file``, or a throwaway
    certificate for the address ``self_signed_for`` (written to ``write_cert`` if
    given, for clients' ``--cacert``). ALPN offers ``http/1.1``.

    Raises :class:`ValueError` with a one-line message for unusable files, and
    :class:`MissingDependency` without ``cryptography`` for a generated one.
    """
    alpn = ("http/1.1",)
    if self_signed_for is not None:
        cert = self_signed([self_signed_for])
        if write_cert is not None:
            try:
                write_cert.write_bytes(cert.cert_pem)
            except OSError as e:
                raise ValueError(f"cannot write the certificate to {write_cert}: "
                                 f"{e.strerror}") from None
        return HttpsSetup(server_context(cert, alpn=alpn), cert.fingerprint)
    if cert_file is None:
        raise ValueError("TLS needs --tls-cert FILE (and --tls-key FILE) or --tls-self-signed")
    try:
        return HttpsSetup(server_context(cert_file, key_file, alpn=alpn))
    except FileNotFoundError as e:
        raise ValueError(f"TLS file not found: {e.filename}") from None
    except (ssl.SSLError, OSError) as e:
        raise ValueError(f"cannot load the TLS certificate/key: {e}") from None


__all__ = ["Certificate", "HttpsSetup", "MissingDependency", "https_setup",
           "load_pem_chain", "self_signed", "server_context"]
