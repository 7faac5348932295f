"""The cloud worker's configuration: one YAML file, env overrides with prefix ``EDGECLOUD_CLOUD_``.

Contract: ``CloudConfig`` has a default for every field, so no file is required; an unknown key,
a wrong type or an inconsistent value raises ``edgecloud.config.ConfigError`` naming the field path
(``batching.preferred_batch_sizes``). Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

from edgecloud.config import LimitsSettings, Section, ServerSettings, load_config
from edgecloud import image_model
from edgecloud.reference_model import MAX_SEQUENCE_LENGTH, MODEL_NAME, MODEL_VERSION

ENV_PREFIX = "EDGECLOUD_CLOUD_"
DEFAULT_PORT = 8201
DEFAULT_METRICS_PORT = 8202


class CloudServerSettings(ServerSettings):
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    """gRPC port; 0 picks a free one."""
    metrics_port: int | None = Field(DEFAULT_METRICS_PORT, ge=0, le=65535)
    """Operator port serving Prometheus ``/metrics`` on ``host``; 0 picks a free one, null disables it."""

    http_port: int | None = Field(None, ge=0, le=65535)
    """The HTTP front (Open Inference Protocol REST and the generate extension); null: gRPC only."""


class RuntimeSettings(Section):
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    """Reference model precision: ``auto`` is fp16 on CUDA and fp32 on CPU."""
    instances: int | Literal["auto"] = "auto"
    """Model instances (Triton's ``instance_group`` count): batches that run at the same time, each
    on its own thread with ``intra_op_threads`` torch threads. On a CPU, two instances of one thread
    each move more rows per second than one instance of two threads (a small model's operators do
    not split well across cores), but a lone request then runs on one core: higher throughput under
    load, slower answers when idle. ``auto`` (the default) has both on a CPU with two cores or more:
    a batch that is all the work there is runs alone on every thread, and while batches queue two
    run at once on half the threads each (one instance on a GPU). ``python -m bench.cloud
    --instances auto 1 2`` measures all three."""
    intra_op_threads: int | None = Field(None, ge=1, le=256)
    """torch threads inside one operator, per instance (``torch.set_num_threads``); null = the CPUs
    this process may use divided by ``instances`` (with ``auto``: all of them for a batch alone,
    half beside another)."""
    inter_op_threads: int = Field(1, ge=1, le=256)
    """torch threads across operators (``torch.set_num_interop_threads``)."""
    length_bucketing: bool = True
    """Split a batch into sub-batches of similar token length when that saves padding."""
    max_sequence_length: int = Field(MAX_SEQUENCE_LENGTH, ge=8, le=512)
    """Tokens per text after truncation (the reference model was trained with 256)."""
    encoder: Literal["torchscript", "eager"] = "torchscript"
    """How the reference model runs: ``torchscript`` scripts the encoder and its pooling into one
    call that releases the GIL for the whole forward (same weights and operators, so the same
    numbers), so a busy event loop cannot hold the compute thread up between operators; ``eager``
    runs the ``transformers`` model operator by operator from Python."""
    warmup: bool = True
    """Run a few batches at load so the first real request pays no kernel set-up cost."""
    openmp_wait_policy: Literal["brief", "passive", "active", "inherit"] = "brief"
    """How idle OpenMP threads wait between torch operators: ``brief`` spins for a few milliseconds
    (libgomp's default count), then sleeps: threads stay awake through a forward once woken (waking a
    sleeping thread costs far more on a virtual CPU) and sleep soon after the last batch;
    ``passive`` sleeps at once (least CPU, slowest small batches);
    ``active`` spins (lowest per-operator latency on dedicated cores, but starves a shared machine);
    ``inherit`` keeps the environment's ``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT``. Applied by
    ``run``/``serve`` before torch loads (``GOMP_SPINCOUNT`` is libgomp's, which torch's Linux
    wheels use)."""

    @field_validator("instances")
    @classmethod
    def _instance_count(cls, value: int | str) -> int | str:
        if value != "auto" and not 1 <= value <= 64:
            raise ValueError("must be auto or a count from 1 to 64")
        return value


class BatchingSettings(Section):
    enabled: bool = True
    """Merge concurrent requests into one model call; false runs each request alone (same queue)."""
    max_batch_size: int = Field(32, ge=1, le=4096)
    """Most rows (texts) one model call takes; a single larger request still runs, alone."""
    max_queue_delay_us: int = Field(2000, ge=0, le=10_000_000)
    """Longest a queued request waits for batch-mates once the model is free (microseconds)."""
    busy_queue_delay_us: int | None = Field(6000, ge=0, le=10_000_000)
    """The same wait while another batch is still running (``runtime.instances`` above 1): rows
    that would start a small batch beside it wait this long for the rest of their clients;
    null: ``max_queue_delay_us``. Measured on 2 cores, 64 clients, ``instances: auto``, back-to-back
    pairs: 6000 instead of 2000 was faster in 7 of 7 (+2 to +7%, median +5%), and batches of 1-4
    rows all but went."""
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    """Batch sizes (rows) dispatched at once when reached, without waiting out the delay."""
    max_queue_size: int = Field(1024, ge=1, le=1_000_000)
    """Requests waiting for the model; one more is answered RESOURCE_EXHAUSTED."""

    @field_validator("preferred_batch_sizes")
    @classmethod
    def _preferred_within_max(cls, value: list[int], info) -> list[int]:
        limit = info.data.get("max_batch_size")
        for size in value:
            if size < 1 or (limit is not None and size > limit):
                raise ValueError(f"{size} is outside 1..max_batch_size ({limit})")
        return sorted(set(value))


class ReferenceModelSpec(Section):
    """The packaged all-MiniLM-L6-v2 through ``transformers`` (text -> embedding)."""

    kind: Literal["reference"] = "reference"
    """``reference``: the packaged sentence-embedding model (``text`` -> ``embedding``)."""
    name: str = Field(MODEL_NAME, min_length=1)
    """Model name clients address."""
    version: str = Field(MODEL_VERSION, min_length=1)
    """Model version reported and addressable."""


class ImageModelSpec(Section):
    """The packaged EfficientNet-Lite0 image classifier in torch (``image`` -> ``probabilities``)."""

    kind: Literal["image"]
    """``image``: the packaged image classifier (encoded BYTES [N] or UINT8 [N, 224, 224, 3] in, FP32
    probabilities [N, 1000] out, ImageNet labels for the classification extension)."""
    name: str = Field(image_model.MODEL_NAME, min_length=1)
    """Model name clients address."""
    version: str = Field(image_model.MODEL_VERSION, min_length=1)
    """Model version reported and addressable."""
    decode_threads: int = Field(2, ge=1, le=64)
    """Threads that decode uploaded images, off the event loop and apart from the model's thread."""


class ProgramModelSpec(Section):
    """A TorchScript or ``torch.export`` program in a directory described by its ``model.json``."""

    kind: Literal["program"]
    """``program``: a TorchScript or torch.export program directory."""
    path: Path
    """Directory holding ``model.json`` and the program file it names."""


class GenerativeModelSpec(Section):
    """A generative model: its torch checkpoint, served with continuous batching, streamed."""

    kind: Literal["generative"]
    """``generative``: text generation (``text_input`` -> ``text_output`` chunks)."""
    path: Path
    """A model directory from ``edgecloud model build --model smollm2`` (its ``cloud`` checkpoint is
    served), or a Llama-architecture checkpoint directory (config.json, safetensors, tokenizer.json)."""
    name: str | None = Field(None, min_length=1)
    """Model name clients address; default: the model directory's name."""
    version: str = Field("1", min_length=1)
    """Model version reported and addressable."""
    max_batch_size: int = Field(16, ge=1, le=1024)
    """Generations decoded together (KV-cache slots); 1 serves one request at a time."""
    max_queue_size: int = Field(256, ge=1, le=1_000_000)
    """Generations waiting for a slot; one more is answered RESOURCE_EXHAUSTED with a retry hint."""
    context_length: int = Field(2048, ge=16, le=131_072)
    """Prompt plus completion tokens per generation (the KV cache holds max_batch_size of these)."""
    max_tokens: int = Field(512, ge=1, le=131_072)
    """The largest max_tokens a request may ask for."""
    default_max_tokens: int = Field(16, ge=1, le=131_072)
    """max_tokens of a request that names none (Triton's vLLM default)."""
    max_prefill_tokens: int = Field(2048, ge=1, le=1_000_000)
    """Prompt tokens prefilled in one step: bounds how long running generations wait for newcomers."""


ModelSpec = Annotated[Union[ReferenceModelSpec, ImageModelSpec, ProgramModelSpec, GenerativeModelSpec],
                      Field(discriminator="kind")]


class CloudConfig(Section):
    server: CloudServerSettings = Field(default_factory=CloudServerSettings)
    """Where the gRPC server and the metrics endpoint listen, and how long shutdown drains."""
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    """Request size limits, checked while decoding, before anything is queued."""
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    """Device, precision and threads of the torch runtime."""
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    """The dynamic batcher in front of each model."""
    models: list[ModelSpec] = Field(default_factory=lambda: [ReferenceModelSpec()], min_length=1)
    """Models to serve (each gets its own batcher and ``runtime.instances`` compute threads)."""

    @field_validator("models")
    @classmethod
    def _unique_names(cls, value: list) -> list:
        seen: set[tuple[str, str]] = set()
        for spec in value:
            if isinstance(spec, (ReferenceModelSpec, ImageModelSpec)):
                key = (spec.name, spec.version)
                if key in seen:
                    raise ValueError(f"model {spec.name!r} version {spec.version!r} is listed twice")
                seen.add(key)
        return value


def load_cloud_config(path: str | Path | None, environ=None) -> CloudConfig:
    """Load and validate; raises ``ConfigError`` naming the field path."""
    return load_config(CloudConfig, path, ENV_PREFIX, environ)


__all__ = [
    "ENV_PREFIX",
    "BatchingSettings",
    "CloudConfig",
    "CloudServerSettings",
    "GenerativeModelSpec",
    "ImageModelSpec",
    "ModelSpec",
    "ProgramModelSpec",
    "ReferenceModelSpec",
    "RuntimeSettings",
    "load_cloud_config",
]
