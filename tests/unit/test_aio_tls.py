"""TLS over tcpstack transports (asyncio's SSL protocol on a TcpTransport), in memory.

Server and client contexts come from :mod:`tcpstack.certs` (a throwaway certificate
for ``localhost`` and 10.0.0.2). Checked: data both ways and the TLS extra info,
ALPN, SNI, certificate verification on the client side (untrusted, wrong name),
TLS 1.2 and 1.3, ``start_tls`` on streams (STARTTLS), cancellation of a handshake,
and the same on uvloop, whose own ``loop.start_tls`` refuses foreign transports.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import uvloop
from aio_helpers import B_IP, NetPair, Recorder, echo, live_tcbs, until, within

from tcpstack.aio import TcpStreamWriter, open_connection, start_server
from tcpstack.certs import Certificate, self_signed, server_context

PORT = 7443

pytest.importorskip("cryptography")


@pytest.fixture(scope="module")
def certificate() -> Certificate:
    return self_signed([B_IP], ["localhost"])


@pytest.fixture(scope="module")
def cafile(certificate: Certificate, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    path.write_bytes(certificate.cert_pem)
    return path


def client_context(cafile: Path, **changes: object) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile))
    for name, value in changes.items():
        setattr(context, name, value)
    return context


@pytest.fixture
async def nets() -> AsyncIterator[NetPair]:
    pair = NetPair()
    yield pair
    await asyncio.wait_for(pair.aclose(), 5.0)


async def test_tls_round_trip_and_extra_info(nets: NetPair, certificate: Certificate,
                                             cafile: Path) -> None:
    await start_server(echo, port=PORT, network=nets.b, ssl=server_context(certificate))
    reader, writer = await within(open_connection(
        B_IP, PORT, network=nets.a, ssl=client_context(cafile), server_hostname="localhost"))
    payload = os.urandom(1 << 20)
    writer.write(payload)
    assert await within(reader.readexactly(len(payload)), 20) == payload

    ssl_object = writer.get_extra_info("ssl_object")
    assert isinstance(ssl_object, ssl.SSLObject)
    assert isinstance(writer.get_extra_info("sslcontext"), ssl.SSLContext)
    peercert = writer.get_extra_info("peercert")
    assert ("DNS", "localhost") in peercert["subjectAltName"]
    assert ("IP Address", B_IP) in peercert["subjectAltName"]
    assert writer.get_extra_info("cipher") is not None
    assert writer.get_extra_info("peername") == (B_IP, PORT)  # from the TCP transport
    assert not writer.can_write_eof()  # TLS has no half-close
    writer.close()
    await within(writer.wait_closed())


async def test_tls_over_create_connection_with_an_ip_as_server_name(
        nets: NetPair, certificate: Certificate, cafile: Path) -> None:
    """The certificate's IP address SAN verifies a connection made by address."""
    made: list[Recorder] = []
    await nets.b.create_server(lambda: made.append(Recorder()) or made[-1], B_IP, PORT,
                               ssl=server_context(certificate))
    client = Recorder()
    transport, _ = await within(nets.a.create_connection(
        lambda: client, B_IP, PORT, ssl=client_context(cafile)))
    transport.write(b"over TLS")
    await until(lambda: made and made[0].data == b"over TLS", "decrypted data at the server")
    assert made[0].transport is not None
    assert made[0].transport.get_extra_info("ssl_object").server_side
    transport.close()
    assert await within(client.lost) is None


@pytest.mark.parametrize(("version", "name"), [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                                               (ssl.TLSVersion.TLSv1_3, "TLSv1.3")])
async def test_tls_1_2_and_1_3_are_both_served(nets: NetPair, certificate: Certificate,
                                               cafile: Path, version: ssl.TLSVersion,
                                               name: str) -> None:
    await start_server(echo, port=PORT, network=nets.b, ssl=server_context(certificate))
    context = client_context(cafile, minimum_version=version, maximum_version=version)
    reader, writer = await within(open_connection(
        B_IP, PORT, network=nets.a, ssl=context, server_hostname="localhost"))
    assert writer.get_extra_info("ssl_object").version() == name
    writer.write(b"ping")
    assert await within(reader.readexactly(4)) == b"ping"
    writer.close()


async def test_alpn_and_sni_reach_the_server(nets: NetPair, certificate: Certificate,
                                             cafile: Path) -> None:
    server_names: list[str | None] = []
    context = server_context(certificate, alpn=["h2", "http/1.1"])
    context.sni_callback = lambda _obj, name, _ctx: server_names.append(name)  # type: ignore[assignment,misc,func-returns-value]
    accepted: asyncio.Queue[TcpStreamWriter] = asyncio.Queue()

    async def record(_reader: asyncio.StreamReader, writer: TcpStreamWriter) -> None:
        await accepted.put(writer)

    await start_server(record, port=PORT, network=nets.b, ssl=context)
    client = client_context(cafile)
    client.set_alpn_protocols(["http/1.1"])
    _reader, writer = await within(open_connection(
        B_IP, PORT, network=nets.a, ssl=client, server_hostname="localhost"))
    server_writer = await within(accepted.get())
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
    assert server_writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
    assert server_names == ["localhost"]


async def test_client_rejects_an_untrusted_certificate_and_leaves_nothing(
        nets: NetPair, certificate: Certificate) -> None:
    await start_server(echo, port=PORT, network=nets.b, ssl=server_context(certificate))
    with pytest.raises(ssl.SSLCertVerificationError):
        # The default context trusts the system's CAs only.
        await within(open_connection(B_IP, PORT, network=nets.a, ssl=True,
                                     server_hostname="localhost"))
    await until(lambda: not live_tcbs(nets.a) and not live_tcbs(nets.b), "no connection left")
    assert not nets.a.connections


async def test_client_rejects_a_certificate_for_another_name(
        nets: NetPair, certificate: Certificate, cafile: Path) -> None:
    await start_server(echo, port=PORT, network=nets.b, ssl=server_context(certificate))
    with pytest.raises(ssl.SSLCertVerificationError, match=r"[Hh]ostname"):
        await within(open_connection(B_IP, PORT, network=nets.a, ssl=client_context(cafile),
                                     server_hostname="example.org"))


async def test_start_tls_upgrades_a_plain_stream_on_both_sides(
        nets: NetPair, certificate: Certificate, cafile: Path) -> None:
    """A STARTTLS-style exchange: plain text first, then TLS on the same connection."""
    server_ctx = server_context(certificate)

    async def starttls_echo(reader: asyncio.StreamReader, writer: TcpStreamWriter) -> None:
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"GO AHEAD\n")
        await writer.drain()
        await writer.start_tls(server_ctx)
        await echo(reader, writer)

    await start_server(starttls_echo, port=PORT, network=nets.b)
    reader, writer = await within(open_connection(B_IP, PORT, network=nets.a))
    writer.write(b"STARTTLS\n")
    assert await within(reader.readline()) == b"GO AHEAD\n"
    assert writer.get_extra_info("ssl_object") is None
    await within(writer.start_tls(client_context(cafile), server_hostname="localhost"))
    assert writer.get_extra_info("ssl_object") is not None
    payload = os.urandom(300_000)
    writer.write(payload)
    await within(writer.drain())
    assert await within(reader.readexactly(len(payload)), 20) == payload
    writer.close()
    await within(writer.wait_closed())


async def test_cancelling_a_tls_handshake_resets_the_connection(
        nets: NetPair, cafile: Path) -> None:
    """A server that never speaks TLS: the client's handshake waits; cancelling it
    leaves no connection on either side."""
    silent: list[TcpStreamWriter] = []

    async def never_answers(_reader: asyncio.StreamReader, writer: TcpStreamWriter) -> None:
        silent.append(writer)

    await start_server(never_answers, port=PORT, network=nets.b)
    attempt = asyncio.ensure_future(open_connection(
        B_IP, PORT, network=nets.a, ssl=client_context(cafile), server_hostname="localhost"))
    await until(lambda: silent, "the TCP connection")
    await asyncio.sleep(0.05)
    assert not attempt.done()
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    await until(lambda: not live_tcbs(nets.a) and not live_tcbs(nets.b), "no connection left")
    assert not nets.a.connections


def run_on_uvloop(main: Callable[[], object]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())  # type: ignore[arg-type]


def test_tls_and_start_tls_work_on_uvloop(certificate: Certificate, cafile: Path) -> None:
    async def main() -> None:
        nets = NetPair()
        try:
            await start_server(echo, port=PORT, network=nets.b,
                               ssl=server_context(certificate))
            reader, writer = await within(open_connection(
                B_IP, PORT, network=nets.a, ssl=client_context(cafile),
                server_hostname="localhost"))
            writer.write(b"uvloop")
            assert await within(reader.readexactly(6)) == b"uvloop"
            writer.close()

            server_ctx = server_context(certificate)

            async def upgrade(r: asyncio.StreamReader, w: TcpStreamWriter) -> None:
                await w.start_tls(server_ctx)
                await echo(r, w)

            await start_server(upgrade, port=PORT + 1, network=nets.b)
            r2, w2 = await within(open_connection(B_IP, PORT + 1, network=nets.a))
            await within(w2.start_tls(client_context(cafile), server_hostname="localhost"))
            w2.write(b"upgraded")
            assert await within(r2.readexactly(8)) == b"upgraded"
            w2.close()
        finally:
            await within(nets.aclose())

    run_on_uvloop(main)
