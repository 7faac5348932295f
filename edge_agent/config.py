"""The edge agent's configuration (YAML, env prefix ``EDGECLOUD_EDGE_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from edgecloud.config import LimitsSettings, Section, ServerSettings, load_config

ENV_PREFIX = "EDGECLOUD_EDGE_"
DEFAULT_MODEL_DIR = Path("models/all-MiniLM-L6-v2")


class ModelSettings(Section):
    path: Path = DEFAULT_MODEL_DIR
    """Model directory (built by ``edgecloud model build``, or any directory with one .onnx file)."""
    variant: str | None = None
    """ONNX variant to serve (``int8`` or ``fp32`` for the reference model); default: the directory's."""
    intra_op_threads: int = Field(0, ge=0, le=256)
    """onnxruntime threads inside one operator; 0 = automatic: the usable cores divided among
    ``concurrency`` (at least 1), all of them for a generative model (``edge_agent.threads``)."""
    inter_op_threads: int = Field(1, ge=0, le=256)
    """onnxruntime threads across operators (sequential execution uses 1)."""
    concurrency: int = Field(0, ge=0, le=64)
    """Requests computed at once on the shared session (each on its own thread); for a generative
    model, generations at once (more wait their turn). 0 = automatic: one per usable core (at
    most 8), 1 for a generative model."""
    allow_spinning: bool = False
    """Let onnxruntime's operator threads spin while waiting for work: a little lower latency
    under steady load, at the cost of burning CPU between requests (and on an idle device)."""
    lone_request_threads: int = Field(0, ge=0, le=256)
    """onnxruntime threads for a request that arrives while no other request of the model runs: a
    second session of the same file whose threads spin only while it computes (so an idle device
    stays idle). 0 = automatic: one per usable core, kept only when the model's load measures it
    at least 10% faster than the shared session on this CPU (and the file is at most 64 MiB: the
    weights are held twice); 1 = off; N = N threads, not measured. Not for generative models.
    ``edge_agent.lone``."""
    chunk_size: int = Field(32, ge=1, le=1024)
    """Texts per onnxruntime call when a request carries many (each chunk pads to its own longest)."""
    max_tokens: int = Field(512, ge=1, le=1_000_000)
    """Generative models: most completion tokens one request may ask for."""


class EdgeConfig(Section):
    server: ServerSettings = Field(default_factory=lambda: ServerSettings(port=8101))
    """Where the edge agent's gRPC (and HTTP) server listens."""
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    """Request size limits."""
    models: list[ModelSettings] = Field(default_factory=lambda: [ModelSettings()], min_length=1)
    """Models to serve."""

    @model_validator(mode="after")
    def _no_metrics_port(self) -> EdgeConfig:
        if self.server.metrics_port is not None:
            raise ValueError("server.metrics_port: the edge agent exports no metrics (the gateway measures it)")
        return self


def load_edge_config(path: str | Path | None, environ=None) -> EdgeConfig:
    return load_config(EdgeConfig, path, ENV_PREFIX, environ)
