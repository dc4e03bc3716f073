"""The probes' HTTP client: body framings, TLS, broken answers, and connections kept between sweeps."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cluster.probes import ProbeOutcome, ProbeTarget, probe_client, probe_service
from cluster.sweeps import sweep_status

T = 1.0
MODELS = b'{"object":"list","data":[{"id":"sim/tiny-model"}]}'

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _request_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def probe_raw(answer: Answer, *, kind: str = "vllm", tls_server=None, tls_client=None) -> ProbeOutcome:  # type: ignore[no-untyped-def]
    """Serve one hand-written answer per connection on loopback and probe it (status probe of `kind`)."""

    async def go() -> ProbeOutcome:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await _request_head(reader)
                await answer(reader, writer)
                await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls_server)
        port = server.sockets[0].getsockname()[1]
        scheme = "https" if tls_server is not None else "http"
        target = ProbeTarget(key="x", kind=kind, base_url=f"{scheme}://127.0.0.1:{port}", health_path="/v1/models")
        try:
            async with probe_client(size=1, timeout=T, tls=tls_client) as client:
                return await probe_service(client, target, timeout=T)
        finally:
            server.close()

    return asyncio.run(go())


def _writes(data: bytes) -> Answer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)

    return answer


def test_a_chunked_answer_is_read():
    chunks = MODELS[:10], MODELS[10:]
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    outcome = probe_raw(_writes(head + body))
    assert (outcome.status, outcome.detail) == ("up", "serves sim/tiny-model")


def test_an_answer_without_length_is_read_to_the_close():
    outcome = probe_raw(_writes(b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n" + MODELS))
    assert (outcome.status, outcome.detail) == ("up", "serves sim/tiny-model")


def test_an_answer_that_is_not_json_lists_no_model():
    outcome = probe_raw(_writes(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nnot json!"))
    assert (outcome.status, outcome.detail) == ("degraded", "GET /v1/models: no model listed")


def test_an_answer_cut_short_is_a_broken_connection():
    outcome = probe_raw(_writes(b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n" + MODELS))
    assert outcome.status == "down"
    assert outcome.detail.startswith("GET /v1/models: connection broke")


def test_garbage_instead_of_http_is_a_broken_connection():
    outcome = probe_raw(_writes(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))
    assert outcome.status == "down"
    assert outcome.detail == "GET /v1/models: connection broke: not an HTTP/1.x answer"


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[ssl.SSLContext, ssl.SSLContext]:  # type: ignore[no-untyped-def]
    """A server context with a certificate for 127.0.0.1 signed by a test CA, and a client context trusting it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probe test CA")])
    valid = {"not_valid_before": now - datetime.timedelta(hours=1), "not_valid_after": now + datetime.timedelta(1)}
    ca = (
        x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name, public_key=ca_key.public_key(), **valid)
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder(
            subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
            issuer_name=ca_name,
            public_key=key.public_key(),
            **valid,
        )
        .serial_number(x509.random_serial_number())
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )
    folder: Path = tmp_path_factory.mktemp("tls")
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "leaf.pem", folder / "key.pem")
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


def test_https_with_a_trusted_certificate_is_up(tls):
    server, client = tls
    answer = _writes(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(MODELS), MODELS))
    outcome = probe_raw(answer, tls_server=server, tls_client=client)
    assert (outcome.status, outcome.detail) == ("up", "serves sim/tiny-model")


def test_https_with_an_untrusted_certificate_is_down_and_says_why(tls):
    server, _ = tls
    answer = _writes(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(MODELS), MODELS))
    outcome = probe_raw(answer, tls_server=server)  # the default context: the public CA bundle
    assert outcome.status == "down"
    assert outcome.detail.startswith("GET /v1/models: TLS: "), outcome.detail
    assert "127.0.0.1" not in outcome.detail


@pytest.mark.django_db
def test_sweeps_keep_their_connections_and_survive_the_server_dropping_them(farm, service_for):
    fake = farm.add("http")
    service_for(fake, key="web")
    for _ in range(3):
        assert sweep_status(timeout=T).counts() == {"up": 1}
    assert (fake.requests, fake.connections) == (3, 1)
    # The server drops its connections (and for a moment refuses new ones): the next sweep is not fooled by the
    # dead kept connection, and it does not call a healthy service down.
    fake.set_mode("refuse")
    assert sweep_status(timeout=T).counts() == {"down": 1}
    fake.set_mode("ok")
    assert sweep_status(timeout=T).counts() == {"up": 1}
    assert (fake.requests, fake.connections) == (4, 2)
