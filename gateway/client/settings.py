"""Everything a client needs before it opens a channel, validated once for both clients.

Contract: ``ClientSettings.build`` checks the constructor arguments and computes the channel
options (message sizes, keepalive, user agent, TLS name override), the credentials (None for a
plaintext channel) and the metadata sent with every call (``authorization: Bearer <api_key>``
when an API key is given). Invalid arguments raise ``ValueError``/``TypeError`` at construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

import edgecloud
from gateway.client.retry import RetryPolicy
from gateway.client.tls import TlsOptions

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "ClientSettings", "MetadataArg", "channel_options"]

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
USER_AGENT = f"edgecloud-client/{edgecloud.__version__}"

MetadataArg = Mapping[str, str] | Sequence[tuple[str, str]]


def channel_options(
    max_message_bytes: int,
    keepalive_time_s: float | None,
    keepalive_timeout_s: float,
    tls: TlsOptions | None = None,
    extra: Sequence[tuple[str, Any]] = (),
) -> list[tuple[str, Any]]:
    """gRPC channel options; entries in ``extra`` replace computed ones with the same key.

    Keepalive pings (also while idle) let the channel notice a dead or black-holed server and
    reconnect before the next call waits on it. The edgecloud servers permit pings every second;
    a stock Triton server allows one per 5 minutes by default, so set ``keepalive_time_s`` to
    ``>= 300`` (or None) for one that is not configured for it.
    """
    options: dict[str, Any] = {
        "grpc.max_send_message_length": max_message_bytes,
        "grpc.max_receive_message_length": max_message_bytes,
        "grpc.primary_user_agent": USER_AGENT,
    }
    if keepalive_time_s is not None:
        options.update({
            "grpc.keepalive_time_ms": int(keepalive_time_s * 1000),
            "grpc.keepalive_timeout_ms": int(keepalive_timeout_s * 1000),
            "grpc.keepalive_permit_without_calls": 1,
            "grpc.http2.max_pings_without_data": 0,
        })
    if tls is not None:
        options.update(tls.channel_options())
    options.update(dict(extra))
    return list(options.items())


def _metadata(api_key: str | None, metadata: MetadataArg) -> tuple[tuple[str, str], ...]:
    pairs = list(metadata.items()) if isinstance(metadata, Mapping) else list(metadata)
    out: list[tuple[str, str]] = []
    for pair in pairs:
        key, value = pair
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata entries are (str, str) pairs, got {pair!r}")
        out.append((key.lower(), value))
    if api_key is not None:
        if not api_key or any(c in api_key for c in "\r\n"):
            raise ValueError("api_key must be a non-empty single-line string")
        if any(key == "authorization" for key, _ in out):
            raise ValueError("pass either api_key or an authorization metadata entry, not both")
        out.append(("authorization", f"Bearer {api_key}"))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """The validated, computed configuration shared by ``Client`` and ``AsyncClient``."""

    address: str
    timeout_s: float | None
    retry: RetryPolicy
    max_message_bytes: int
    credentials: grpc.ChannelCredentials | None
    options: tuple[tuple[str, Any], ...]
    metadata: tuple[tuple[str, str], ...]

    @classmethod
    def build(
        cls,
        address: str,
        *,
        tls: TlsOptions | None,
        timeout_s: float | None,
        retry: RetryPolicy,
        max_message_bytes: int,
        api_key: str | None,
        metadata: MetadataArg,
        keepalive_time_s: float | None,
        keepalive_timeout_s: float,
        extra_channel_options: Sequence[tuple[str, Any]],
    ) -> ClientSettings:
        if not isinstance(address, str) or not address:
            raise ValueError("address must be a non-empty 'host:port' string")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s}")
        if not isinstance(retry, RetryPolicy):
            raise TypeError("retry must be a RetryPolicy")
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be >= 1")
        if keepalive_time_s is not None and (keepalive_time_s <= 0 or keepalive_timeout_s <= 0):
            raise ValueError("keepalive_time_s and keepalive_timeout_s must be > 0")
        return cls(
            address=address,
            timeout_s=timeout_s,
            retry=retry,
            max_message_bytes=max_message_bytes,
            credentials=None if tls is None else tls.channel_credentials(),
            options=tuple(channel_options(max_message_bytes, keepalive_time_s, keepalive_timeout_s, tls,
                                          extra_channel_options)),
            metadata=_metadata(api_key, metadata),
        )
