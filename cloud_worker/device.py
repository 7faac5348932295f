"""Where and how torch computes: device, precision, threads.

Contract: ``resolve_device("auto")`` is CUDA when available, else CPU; asking for CUDA where there
is none, or for bf16 on a GPU without it, raises ``ConfigError`` naming ``runtime.device`` /
``runtime.dtype``. ``resolve_dtype`` returns the torch dtype and the variant name responses report
(``fp32``, ``fp16``, ``bf16``). ``configure_threads`` sets torch's thread pools from a
``cloud_worker.threads.ThreadPlan``: the intra-op count is per model instance, and torch's other
threads take it up at their first operator.
"""

from __future__ import annotations

import logging

import torch

from cloud_worker.threads import ThreadPlan, use_threads
from edgecloud.config import ConfigError

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_SOURCE = "runtime environment"


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(_SOURCE, [("runtime.device", f"{setting!r} asked for, but CUDA is not available")])
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(_SOURCE, [("runtime.device", f"{setting!r} asked for, but there are only "
                                                           f"{torch.cuda.device_count()} CUDA devices")])
    return device


def resolve_dtype(setting: str, device: torch.device) -> tuple[torch.dtype, str]:
    """(torch dtype, variant name) for the reference model on ``device``."""
    name = setting
    if setting == "auto":
        name = "fp16" if device.type == "cuda" else "fp32"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(_SOURCE, [("runtime.dtype", "bf16 asked for, but this GPU does not support it")])
    return _DTYPES[name], name


def configure_threads(plan: ThreadPlan, inter_op: int) -> None:
    """Set the calling thread's torch intra-op count (the plan's ``wide`` count: a batch alone)
    and the inter-op pool, which can be sized only before torch first uses it."""
    use_threads(plan.wide)
    if torch.get_num_interop_threads() != inter_op:
        try:
            torch.set_num_interop_threads(inter_op)
        except RuntimeError:
            log.debug("torch inter-op threads already fixed at %d", torch.get_num_interop_threads())


__all__ = ["configure_threads", "resolve_device", "resolve_dtype"]
