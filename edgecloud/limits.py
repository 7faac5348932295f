"""Request size limits, checked while decoding and before anything is allocated or queued."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Upper bounds for one inference request. All are inclusive."""

    max_inputs: int = 64
    """Input tensors per request."""
    max_outputs: int = 64
    """Requested outputs per request."""
    max_parameters: int = 64
    """Parameters per request or per tensor."""
    max_rank: int = 8
    """Dimensions per tensor shape."""
    max_elements: int = 16 * 1024 * 1024
    """Elements per tensor (product of the shape)."""
    max_bytes_element: int = 1024 * 1024
    """Bytes per element of a BYTES tensor."""
    max_batch_size: int = 256
    """First dimension of any input of a model that batches."""
