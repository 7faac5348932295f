"""TLS and mutual TLS against real grpc.aio servers (the edge's dataplane behind
``grpc.ssl_server_credentials``), with certificates generated for this test session."""

from __future__ import annotations

import pytest

from gateway.client import AsyncClient, Client, RetryPolicy, TlsOptions, Unavailable

NO_RETRY = RetryPolicy(max_attempts=1)


def test_tls_with_the_ca_as_bytes(tls_server, certs):
    port = tls_server(require_client_auth=False)
    with Client(f"localhost:{port}", tls=TlsOptions(root_certificates=certs.ca)) as client:
        assert client.server_ready()
        assert client.embed(["over tls"]).embeddings.shape == (1, 384)


async def test_tls_by_ip_with_a_server_name_override(tls_server, certs):
    port = tls_server(require_client_auth=False)
    tls = TlsOptions(root_certificates=certs.ca, server_name_override="localhost")
    async with AsyncClient(f"127.0.0.1:{port}", tls=tls) as client:
        assert (await client.embed(["over tls"])).embeddings.shape == (1, 384)


@pytest.mark.parametrize("client_kind", ["sync", "async"])
async def test_mutual_tls_with_certificate_files(tls_server, certs, client_kind):
    port = tls_server(require_client_auth=True)
    tls = TlsOptions(root_certificates=certs.directory / "ca.pem",
                     client_certificate_chain=str(certs.directory / "client_chain.pem"),
                     client_private_key=certs.directory / "client_key.pem")
    assert tls.mutual
    if client_kind == "sync":
        with Client(f"localhost:{port}", tls=tls) as client:
            assert client.model_ready("all-MiniLM-L6-v2")
    else:
        async with AsyncClient(f"localhost:{port}", tls=tls) as client:
            assert await client.model_ready("all-MiniLM-L6-v2")


def test_mutual_tls_refuses_a_client_without_a_certificate(tls_server, certs):
    port = tls_server(require_client_auth=True)
    with Client(f"localhost:{port}", tls=TlsOptions(root_certificates=certs.ca), retry=NO_RETRY,
                timeout_s=5) as client:
        with pytest.raises(Unavailable):
            client.server_live()


def test_a_server_signed_by_an_untrusted_ca_is_refused(tls_server, certs):
    port = tls_server(require_client_auth=False)
    with Client(f"localhost:{port}", tls=TlsOptions(root_certificates=certs.other_ca), retry=NO_RETRY,
                timeout_s=5) as client:
        with pytest.raises(Unavailable):
            client.server_live()


def test_a_plaintext_client_cannot_talk_to_a_tls_server(tls_server):
    port = tls_server(require_client_auth=False)
    with Client(f"localhost:{port}", retry=NO_RETRY, timeout_s=5) as client:
        with pytest.raises(Unavailable):
            client.server_live()
