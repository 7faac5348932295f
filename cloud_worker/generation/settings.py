"""How one generative model serves: its cache slots, queue, context and token limits.

Contract: ``GenerationSettings`` is frozen and checked when built (``ValueError`` naming the
field); ``limits`` is the ``GenerationLimits`` the protocol side validates requests against.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecloud.generation import GenerationLimits

__all__ = ["GenerationSettings"]


@dataclass(frozen=True, slots=True)
class GenerationSettings:
    max_batch_size: int = 16
    """Cache slots: the most generations decoded together (1: one request at a time)."""
    max_queue_size: int = 256
    """Generations that may wait for a slot; one more is refused with ``Overloaded``."""
    context_length: int = 2048
    """Tokens of prompt plus completion one slot holds."""
    max_tokens: int = 512
    """The largest ``max_tokens`` a request may ask for."""
    default_max_tokens: int = 16
    """``max_tokens`` of a request that does not say."""
    overload_retry_after_s: float = 0.5
    """The retry hint an ``Overloaded`` refusal carries."""
    max_prefill_tokens: int = 2048
    """Padded prompt tokens prefilled in one step (one prompt always goes): bounds how long the
    running generations wait for newcomers' prefill."""

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue_size", "max_tokens", "default_max_tokens", "max_prefill_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.context_length < 2:
            raise ValueError(f"context_length must be >= 2, got {self.context_length}")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens ({self.max_tokens})")
        if self.overload_retry_after_s < 0:
            raise ValueError(f"overload_retry_after_s must be >= 0, got {self.overload_retry_after_s}")

    @property
    def limits(self) -> GenerationLimits:
        return GenerationLimits(context_length=self.context_length, max_tokens=self.max_tokens,
                                default_max_tokens=self.default_max_tokens)
