"""The gateway's configuration (YAML, env prefix ``EDGECLOUD_GATEWAY_``), validated at load.

Every field is documented here; ``edgecloud config check FILE`` explains errors by
field path. Durations are milliseconds (``_ms``) so operators write plain numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edgecloud.config import ClientTlsSettings, LimitsSettings, Section, ServerSettings, load_config
from edge_agent.config import ModelSettings
from gateway.auth import AuthSettings
from gateway.cache.settings import CacheSettings

ENV_PREFIX = "EDGECLOUD_GATEWAY_"


class RetryBudgetSettings(Section):
    ratio: float = Field(0.2, ge=0, le=1)
    """Extra attempts allowed per original request over the long run (0.2 = at most 20% more)."""
    burst: float = Field(100, ge=0, le=10000)
    """Retries that may be spent at once after a quiet period (the token bucket's size). Size it to
    the requests one worker can hold in flight: when a worker dies, each of those needs one failover."""


class StreamRoutingSettings(Section):
    """How token streams (generative models) are routed: by time to first token (TTFT) against the
    same ``threshold_ms``, with the same hysteresis and probes as other requests."""

    hedge_after_ms: float | None = Field(None, gt=0, le=600_000)
    """Start the same stream on the cloud too when the edge has produced no token after this long
    (the first side to produce a token wins, the other is cancelled); default: ``threshold_ms``.
    Hedging is on when ``routing.hedging`` is."""
    first_token_timeout_ms: float = Field(10_000, gt=0, le=600_000)
    """A backend that has produced no token after this long has failed (the other side serves)."""
    stall_ms: float = Field(1000, gt=0, le=600_000)
    """A stream that produces no token for this long mid-answer has failed: it is continued on the
    other side from the text already sent (see ``midstream_failover``)."""
    midstream_failover: bool = True
    """Continue a stream that breaks or stalls mid-answer on the other side (the prompt plus the
    text already sent, nothing repeated); off: the stream ends with the error."""
    inter_token_threshold_ms: float | None = Field(None, gt=0, le=600_000)
    """Also move streams to the cloud when the edge's inter-token latency statistic exceeds this;
    default: no limit (only TTFT counts)."""


class EscalationSettings(Section):
    """When a classifier's edge answer is not sure enough to return: the cloud is asked instead."""

    output: str = Field("probabilities", min_length=1)
    """The output holding the class probabilities (raw, or as the classification extension's strings)."""
    min_confidence: float = Field(0.0, ge=0, le=1)
    """Escalate when the top-1 probability is under this (``edgecloud tune --kind confidence``
    recommends one from a set of images)."""
    min_margin: float = Field(0.0, ge=0, le=1)
    """Escalate when the top-1 minus the top-2 probability is under this."""
    reserve_ms: float = Field(10, ge=0, le=60_000)
    """Time kept before the request's deadline to return the edge's answer if the cloud has not
    answered by then."""


class RoutingSettings(Section):
    threshold_ms: float = Field(200, gt=0, le=600_000)
    """Edge RTT statistic above which traffic moves to the cloud."""
    statistic: Literal["p50", "p90", "p95", "p99", "max", "ewma"] = "p95"
    """Which edge RTT statistic is compared with the threshold."""
    window_ms: float = Field(2000, gt=0, le=600_000)
    """Sliding window the quantile statistics are computed over."""
    min_samples: int = Field(3, ge=1, le=10_000)
    """Samples the window needs before the statistic can move traffic."""
    min_slow_samples: int = Field(2, ge=1, le=10_000)
    """Samples over ``threshold_ms`` the window needs before traffic moves: one slow sample in a
    small window never moves all traffic, whatever the statistic says."""
    warmup_samples: int = Field(2, ge=0, le=10_000)
    """Samples of a backend discarded after it first answers (and after it comes back from down):
    connection set-up and cold caches are not what routing should judge."""
    ewma_alpha: float = Field(0.3, gt=0, le=1)
    """Weight of the newest sample in the EWMA."""
    recover_ratio: float = Field(0.7, gt=0, le=1)
    """Back to the edge only when probes stay under ``threshold_ms * recover_ratio`` ..."""
    recover_probes: int = Field(5, ge=1, le=1000)
    """... for this many consecutive probes (hysteresis against flapping)."""
    hedging: bool = True
    """Send a request that the edge has not answered in ``hedge_after_ms`` to the cloud too."""
    hedge_after_ms: float | None = Field(None, gt=0, le=600_000)
    """When to hedge; default: ``threshold_ms``."""
    probe_interval_ms: float = Field(200, gt=0, le=600_000)
    """How often each backend is probed with a small real inference."""
    probe_timeout_ms: float = Field(2000, gt=0, le=600_000)
    """A probe slower than this counts as a failure."""
    probe_only_when_idle: bool = True
    """Skip a backend's probe while real requests keep answering from it (one answered within the
    last ``probe_interval_ms``): their round trips already measure it, and a probe would add a
    real inference to its load. The edge is probed regardless while the gateway routes to the
    cloud (its probes decide when it recovers), as is any backend that is down or not answering."""
    probe_model: str = "all-MiniLM-L6-v2"
    """Model the probes call (input ``probe_input`` BYTES [1])."""
    probe_input: str = "text"
    """Name of the probe model's BYTES input."""
    probe_text: str = "edgecloud latency probe"
    """The probe's input text."""
    failures_to_down: int = Field(2, ge=1, le=1000)
    """Consecutive connection failures (requests or probes) that mark a backend down until a probe succeeds."""
    default_timeout_ms: float = Field(30_000, gt=0, le=3_600_000)
    """Deadline for requests whose client set none."""
    retry_budget: RetryBudgetSettings = Field(default_factory=RetryBudgetSettings)
    """Retries (never of INVALID_ARGUMENT and the like) are paid from this budget."""
    streams: StreamRoutingSettings = Field(default_factory=StreamRoutingSettings)
    """Token streams: TTFT routing, first-token hedging, mid-stream failover."""
    escalation: dict[str, EscalationSettings] = Field(
        default_factory=lambda: {"efficientnet-lite0": EscalationSettings(min_confidence=0.5)})
    """Confidence escalation by model name: a classifier whose edge answer is unsure is answered by
    the cloud (``route_reason: low_confidence``). Any model whose output is a probability vector."""

    @property
    def stream_hedge_after_s(self) -> float:
        hedge = self.streams.hedge_after_ms
        return (hedge if hedge is not None else self.threshold_ms) / 1000.0

    @property
    def hedge_after_s(self) -> float:
        return (self.hedge_after_ms if self.hedge_after_ms is not None else self.threshold_ms) / 1000.0


class OutlierDetectionSettings(Section):
    """Envoy's outlier detection, with Envoy's names."""

    consecutive_5xx: int = Field(3, ge=1, le=1000)
    """Consecutive server-side failures (UNAVAILABLE, INTERNAL, timeouts) that eject a worker."""
    base_ejection_time_ms: float = Field(2000, gt=0, le=3_600_000)
    """Ejection time, multiplied by how many times the worker has been ejected."""
    max_ejection_time_ms: float = Field(30_000, gt=0, le=3_600_000)
    """Cap on one ejection's duration."""
    max_ejection_percent: float = Field(50, ge=0, le=100)
    """At most this share of the workers is ejected at once."""
    interval_ms: float = Field(10_000, gt=0, le=3_600_000)
    """A worker healthy for this long has its ejection multiplier reduced by one."""


class EmbeddedEdgeSettings(Section):
    models: list[ModelSettings] = Field(min_length=1)
    """Model entries exactly as in the edge agent's ``models`` config (path, variant, threads...)."""


class EdgeBackendSettings(Section):
    address: str | None = "127.0.0.1:8101"
    """host:port of the edge agent's gRPC server; null for a cloud-only gateway (or an embedded edge)."""
    embedded: EmbeddedEdgeSettings | None = None
    """Run the edge agent inside the gateway's process (a device): no network hop; ``address`` is ignored.
    The agent validates requests with this file's ``limits``."""
    attempt_timeout_ms: float | None = Field(None, gt=0)
    """Give up on one edge attempt after this long (then the cloud serves); default: none beyond hedging."""
    tls: ClientTlsSettings | None = None
    """TLS (mutual with a client certificate) to the edge agent; unset for plaintext."""
    multiplex: bool = True
    """Send single-answer requests as messages on one ``ModelStreamInfer`` stream per connection
    instead of one unary call each (a fraction of a call's cost on both sides). Used only with a
    server that confirms it (edgecloud's edge agent and cloud worker do); any other (Triton,
    MLServer) gets unary calls whatever this says."""


class CloudWorkerSettings(Section):
    address: str = Field(min_length=1)
    """host:port of the worker."""
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    """What metrics and logs call it (``backend`` label), instead of its address."""


class DiscoverySettings(Section):
    """Cloud workers found through DNS: a name (a Kubernetes headless Service) resolved every
    ``refresh_ms`` through the system resolver; each address it answers is one worker, added when
    it appears and drained when it is gone (see ``gateway.discovery``)."""

    dns: str = Field(min_length=3, max_length=300, pattern=r"^[^\s]+:\d{1,5}$")
    """``name:port`` to resolve, e.g. ``edgecloud-cloud.edgecloud.svc.cluster.local:8201``: every
    address of ``name`` is a worker on ``port``. Workers are dialled by IP: with ``cloud.tls``,
    set ``tls.server_name`` to the name their certificate carries."""
    refresh_ms: float = Field(5000, ge=100, le=3_600_000)
    """How often the name is resolved again."""
    timeout_ms: float = Field(2000, gt=0, le=60_000)
    """A resolution slower than this has failed (the last known workers stay)."""
    empty_grace_ms: float | None = Field(30_000, ge=0, le=86_400_000)
    """An answer with no address (the name does not exist, or has no ready pod) empties the pool
    only once every answer for this long was empty: a DNS glitch never drops every worker, a
    Service scaled to zero does after this long. Null: never (the last workers stay until the name
    answers again). A failed resolution (timeout, server failure) never changes the pool."""
    family: Literal["any", "ipv4", "ipv6"] = "any"
    """Which addresses of the name count: ``ipv4`` or ``ipv6`` only, or ``any``."""
    name_prefix: str = Field("cloud", min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
    """A discovered worker is called ``<name_prefix>-<ip>:<port>`` in metrics and logs (stable
    per address, so its outlier and latency state follow the address)."""

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.dns.rpartition(":")
        return host.strip("[]"), int(port)

    @model_validator(mode="after")
    def _port_in_range(self) -> DiscoverySettings:
        if not 0 < self.host_port[1] < 65536:
            raise ValueError("the port of dns must be 1..65535")
        return self


class CloudPoolSettings(Section):
    workers: list[str | CloudWorkerSettings] = Field(default_factory=lambda: ["127.0.0.1:8201"])
    """Each cloud worker (any Open Inference Protocol server, Triton included): ``host:port``
    (named ``cloud-N`` by its place in this list) or ``{name, address}``. Default: one worker on
    ``127.0.0.1:8201``, or none when ``discovery`` is set."""
    discovery: DiscoverySettings | None = None
    """Also take the workers a DNS name resolves to (a headless Service), re-resolved periodically;
    the pool is the union of ``workers`` and the discovered addresses (a listed address is not
    added twice)."""
    lb_policy: Literal["least_request", "p2c_latency"] = "least_request"
    """least_request: fewest outstanding requests; p2c_latency: the lower-EWMA of two random workers."""
    attempt_timeout_ms: float = Field(2000, gt=0, le=600_000)
    """One cloud attempt slower than this fails over to another worker (a frozen worker is bypassed)."""
    keepalive_time_ms: int = Field(2000, ge=100)
    """HTTP/2 keepalive ping interval on each worker's connection."""
    keepalive_timeout_ms: int = Field(1000, ge=100)
    """A ping unanswered this long closes the connection (a frozen worker is noticed)."""
    outlier_detection: OutlierDetectionSettings = Field(default_factory=OutlierDetectionSettings)
    """When a worker is taken out of rotation."""
    tls: ClientTlsSettings | None = None
    """TLS (mutual with a client certificate) to every cloud worker; unset for plaintext."""
    multiplex: bool = True
    """Send single-answer requests as messages on one ``ModelStreamInfer`` stream per connection
    instead of one unary call each (a fraction of a call's cost on both sides). Used only with a
    server that confirms it (edgecloud's edge agent and cloud worker do); any other (Triton,
    MLServer) gets unary calls whatever this says."""
    drain_timeout_ms: float = Field(30_000, ge=0, le=3_600_000)
    """A worker removed from the pool (by discovery or a config reload) takes no new requests and
    is closed once its calls in flight finish, or after this long (calls still running then fail
    over to the other workers)."""

    @model_validator(mode="before")
    @classmethod
    def _no_default_worker_with_discovery(cls, data):
        if isinstance(data, dict) and data.get("discovery") is not None and "workers" not in data:
            data = {**data, "workers": []}
        return data

    def named_workers(self) -> list[CloudWorkerSettings]:
        return [w if isinstance(w, CloudWorkerSettings) else CloudWorkerSettings(address=w, name=f"cloud-{i}")
                for i, w in enumerate(self.workers)]

    @model_validator(mode="after")
    def _unique_workers(self) -> CloudPoolSettings:
        workers = self.named_workers()
        for what in ("name", "address"):
            values = [getattr(w, what) for w in workers]
            if len(set(values)) != len(values):
                raise ValueError(f"two cloud workers have the same {what}")
        if any(w.name == "edge" for w in workers):
            raise ValueError("'edge' names the edge backend; call the cloud worker something else")
        return self


class OpenAISettings(Section):
    """The OpenAI-compatible API on the HTTP front (``/v1/chat/completions``, ``/v1/completions``,
    ``/v1/models``) for generative models."""

    enabled: bool = True
    """Serve the ``/v1`` routes (on ``server.http_port``)."""
    models: list[str] = Field(default_factory=lambda: ["smollm2-135m-instruct"])
    """What ``GET /v1/models`` lists (those the backends serve as generative models); any
    generative model the backends serve can be asked for by name."""
    default_max_tokens: int = Field(256, ge=1, le=1_000_000)
    """Completion tokens when a request sets no ``max_tokens`` (bounded by each backend's limit)."""


class GatewayServerSettings(ServerSettings):
    port: int = Field(8001, ge=0, le=65535)
    """gRPC port; 0 picks a free one."""
    metrics_port: int | None = Field(8002, ge=0, le=65535)
    """Operator port serving Prometheus ``/metrics`` (never the public fronts' ports); 0 picks a
    free one, null serves none."""


class GatewayConfig(Section):
    server: GatewayServerSettings = Field(default_factory=lambda: GatewayServerSettings(http_port=8000))
    """The gateway's own gRPC (``port``) and HTTP (``http_port``) fronts and its operator port for
    Prometheus (``metrics_port``)."""
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    """Request size limits, checked before routing or caching."""
    edge: EdgeBackendSettings = Field(default_factory=EdgeBackendSettings)
    """The edge agent."""
    cloud: CloudPoolSettings = Field(default_factory=CloudPoolSettings)
    """The cloud worker pool."""
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    """Latency-aware routing between edge and cloud."""
    cache: CacheSettings = Field(default_factory=CacheSettings)
    """The result cache (Redis, Redis Cluster or in-process LRU); off unless ``cache.enabled``."""
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    """The OpenAI-compatible API for generative models."""
    auth: AuthSettings = Field(default_factory=AuthSettings)
    """API keys for both fronts; each key maps to a tenant (cache entries never cross tenants)."""
    reload_poll_ms: float = Field(1000, gt=0)
    """How often the config file is checked for changes (hot reload; SIGHUP reloads at once)."""

    @model_validator(mode="after")
    def _some_backend(self) -> GatewayConfig:
        if self.edge.address is None and self.edge.embedded is None and not self.cloud.workers \
                and self.cloud.discovery is None:
            raise ValueError("configure an edge address, a cloud worker or cloud worker discovery")
        return self


def load_gateway_config(path: str | Path | None, environ=None) -> GatewayConfig:
    return load_config(GatewayConfig, path, ENV_PREFIX, environ)
