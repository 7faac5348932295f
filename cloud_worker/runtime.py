"""What a cloud runtime provides to the batched model in front of it.

Contract: a ``Runtime`` advertises ``metadata`` and the ``variant`` responses report, says whether
requests may be merged (``batchable``), and splits work between the event loop and its thread:

- ``prepare(request)`` runs on the event loop for one request already validated against
  ``metadata``; it is cheap, per request, and raises ``InvalidArgument`` for content the metadata
  cannot express (invalid UTF-8, say), so one bad request is refused before it can join a batch.
  It returns the item to queue and its row count.
- ``load()``, ``run(items)`` and ``close()`` block and run on the model's own threads. ``run``
  returns each item's output tensors, one list per item, in order.
- Optionally ``instances`` (default 1): how many ``run`` calls may go at once, each on its own
  thread (``run`` must then be safe to call concurrently).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from edgecloud.types import InferRequest, ModelMetadata, Tensor


@runtime_checkable
class Runtime(Protocol):
    metadata: ModelMetadata
    variant: str
    batchable: bool

    def prepare(self, request: InferRequest) -> tuple[Any, int]: ...

    def load(self) -> None: ...

    def run(self, items: list[Any]) -> list[list[Tensor]]: ...

    def close(self) -> None: ...


__all__ = ["Runtime"]
