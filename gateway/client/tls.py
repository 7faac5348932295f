"""TLS settings for a client channel: server verification, mutual TLS, name override.

Contract: each PEM source is ``bytes`` (the PEM itself) or a ``str`` / ``os.PathLike`` (a file
to read when the client is built). ``root_certificates`` None trusts gRPC's default roots. A
client certificate chain and private key are given together or not at all; with them the channel
does mutual TLS. ``server_name_override`` checks the server certificate against that name instead
of the address's host (``grpc.ssl_target_name_override``), for tests and IP-addressed servers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["PemSource", "TlsOptions"]

PemSource = bytes | str | os.PathLike[str]


def _read_pem(source: PemSource | None, name: str) -> bytes | None:
    if source is None:
        return None
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        raise ValueError(f"tls.{name}: a str is read as a file path; pass PEM data as bytes")
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise ValueError(f"tls.{name}: cannot read {os.fspath(source)!r}: {exc.strerror}") from exc


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """How a client channel does TLS (see the module contract)."""

    root_certificates: PemSource | None = None
    """CA certificates that may sign the server's certificate; None: the system/gRPC defaults."""
    client_certificate_chain: PemSource | None = None
    """The client's certificate chain, for mutual TLS."""
    client_private_key: PemSource | None = None
    """The client's private key, for mutual TLS."""
    server_name_override: str | None = None
    """Name the server certificate must match instead of the target host."""

    def __post_init__(self) -> None:
        if (self.client_certificate_chain is None) != (self.client_private_key is None):
            raise ValueError("tls: client_certificate_chain and client_private_key go together")

    @property
    def mutual(self) -> bool:
        """True when the channel presents a client certificate."""
        return self.client_certificate_chain is not None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """``grpc.ssl_channel_credentials`` from the PEM sources (files are read now)."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read_pem(self.root_certificates, "root_certificates"),
            private_key=_read_pem(self.client_private_key, "client_private_key"),
            certificate_chain=_read_pem(self.client_certificate_chain, "client_certificate_chain"),
        )

    def channel_options(self) -> list[tuple[str, str]]:
        """Channel options TLS adds (the target name override, when set)."""
        if self.server_name_override:
            return [("grpc.ssl_target_name_override", self.server_name_override)]
        return []
