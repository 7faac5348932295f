"""Typed configuration shared by every process: YAML file + environment overrides, validated at
load with errors that name the field path.

Contract: ``load_config(Model, path, env_prefix)`` reads one YAML file (or none), applies
environment overrides ``{env_prefix}SECTION__FIELD=value`` (values parsed as YAML scalars), and
validates with pydantic; any problem raises ``ConfigError`` whose lines read ``field.path: why``.
Nothing is read from the environment at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgecloud.limits import RequestLimits

S = TypeVar("S", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration that cannot be used; ``errors`` lists ``(field_path, message)``."""

    def __init__(self, source: str, errors: list[tuple[str, str]]):
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {path or '(root)'}: {message}" for path, message in errors)
        super().__init__(f"invalid configuration in {source}:\n{lines}")


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True, use_attribute_docstrings=True)


class ServerTlsSettings(Section):
    """TLS for a server's listeners; mutual TLS when ``client_ca_file`` is set."""

    cert_file: Path
    """PEM certificate chain the server presents."""
    key_file: Path
    """PEM private key of that certificate."""
    client_ca_file: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)."""

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        ca = self.client_ca_file.read_bytes() if self.client_ca_file else None
        return self.cert_file.read_bytes(), self.key_file.read_bytes(), ca

    def grpc_credentials(self):
        import grpc

        cert, key, ca = self.read()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)

    def ssl_context(self):
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        if self.client_ca_file is not None:
            context.load_verify_locations(str(self.client_ca_file))
            context.verify_mode = ssl.CERT_REQUIRED
        return context


class ClientTlsSettings(Section):
    """TLS for a connection to an upstream server; mutual TLS when a client certificate is set."""

    ca_file: Path | None = None
    """PEM CA bundle that signed the server's certificate (default: the system's roots)."""
    cert_file: Path | None = None
    """PEM client certificate chain, for mutual TLS."""
    key_file: Path | None = None
    """PEM private key of the client certificate."""
    server_name: str | None = None
    """Name to verify the server's certificate against, when it differs from the address's host."""

    def grpc_credentials(self):
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes() if self.ca_file else None,
            private_key=self.key_file.read_bytes() if self.key_file else None,
            certificate_chain=self.cert_file.read_bytes() if self.cert_file else None,
        )


class ServerSettings(Section):
    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 for all interfaces)."""
    port: int = Field(8001, ge=0, le=65535)
    """gRPC port; 0 picks a free one."""
    http_port: int | None = Field(None, ge=0, le=65535)
    """HTTP (REST) port; unset for no HTTP front."""
    grace_s: float = Field(5.0, ge=0, le=600)
    """Seconds in-flight requests get to finish on shutdown. Health turns NOT_SERVING at once; gRPC
    keeps serving until no call is in flight and none answered for 0.1 s (or until at most 1 s of
    the grace is left), then stops accepting."""
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=2**31 - 1)
    """Largest gRPC message (and HTTP body) accepted or sent; bigger ones get RESOURCE_EXHAUSTED / 413."""
    max_concurrent_requests: int = Field(512, ge=1, le=1_000_000)
    """Inference requests in flight at once; the excess is shed at once with RESOURCE_EXHAUSTED / 503."""
    overload_retry_after_ms: float = Field(100, ge=0, le=600_000)
    """Retry hint sent with shed requests (gRPC trailer ``retry-after``, HTTP ``Retry-After``)."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Operator port serving Prometheus ``/metrics`` on ``host``, apart from the public fronts
    (metrics name backends and internals); 0 picks a free one, null serves none."""
    body_read_timeout_ms: float = Field(5000, gt=0, le=600_000)
    """An HTTP body not fully arrived this long after its headers is answered 408 and its
    connection closed (slow or stalled clients do not hold a request forever)."""
    max_http_connections: int = Field(1024, ge=1, le=1_000_000)
    """HTTP connections open at once; more are closed as soon as they are accepted."""
    json_decode_process_bytes: int = Field(256 * 1024, ge=0, le=2**31 - 1)
    """REST infer bodies whose JSON is at least this large are parsed in a helper process
    (``edgecloud.body_decoder``), so the event loop and the requests it serves never wait on a big
    parse; 0 parses every body in the server's own process."""
    json_decode_processes: int = Field(1, ge=1, le=64)
    """Helper processes for large JSON bodies (started on first need, each parses one at a time)."""
    tls: ServerTlsSettings | None = None
    """TLS (or mutual TLS) for this server's gRPC and HTTP listeners; unset for plaintext."""
    reuse_port: bool = False
    """Let several processes listen on the same gRPC and HTTP ports (``SO_REUSEPORT``; the kernel
    spreads new connections over them): how N gateway processes that share nothing but Redis use N
    cores. Off, a port already in use fails the start. Give each process its own ``metrics_port``."""


class LimitsSettings(Section):
    max_inputs: int = Field(64, ge=1)
    """Input tensors per request."""
    max_outputs: int = Field(64, ge=1)
    """Requested outputs per request."""
    max_rank: int = Field(8, ge=1, le=32)
    """Dimensions per tensor."""
    max_elements: int = Field(16 * 1024 * 1024, ge=1)
    """Elements per tensor."""
    max_bytes_element: int = Field(1024 * 1024, ge=1)
    """Bytes per BYTES element."""
    max_batch_size: int = Field(256, ge=1)
    """Largest batch (first dimension) a request may carry."""

    def to_limits(self) -> RequestLimits:
        return RequestLimits(
            max_inputs=self.max_inputs,
            max_outputs=self.max_outputs,
            max_rank=self.max_rank,
            max_elements=self.max_elements,
            max_bytes_element=self.max_bytes_element,
            max_batch_size=self.max_batch_size,
        )


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def env_overrides(prefix: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """``{prefix}A__B=v`` -> ``{"a": {"b": yaml(v)}}``."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(prefix) or len(name) == len(prefix):
            continue
        path = [part.lower() for part in name[len(prefix) :].split("__")]
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_path(tree, path, value)
    return tree


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_config(model: type[S], data: Any, source: str) -> S:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [("", "the top level must be a mapping")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [(".".join(str(part) for part in err["loc"]), err["msg"]) for err in exc.errors()]
        raise ConfigError(source, errors) from None


def load_config(model: type[S], path: str | Path | None, env_prefix: str,
                environ: Mapping[str, str] | None = None) -> S:
    data: Any = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(source, [("", f"cannot read: {exc.strerror}")]) from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(source, [("", f"not valid YAML: {exc}")]) from None
    if not isinstance(data, dict):
        raise ConfigError(source, [("", "the top level must be a mapping")])
    overrides = env_overrides(env_prefix, os.environ if environ is None else environ)
    return parse_config(model, _merge(data, overrides), source)
