"""The model contract every runtime implements, and the repository that resolves names.

Contract: a ``Model`` advertises ``metadata``; ``infer`` receives a request already decoded and
validated against that metadata (``edgecloud.validation``) and returns all of its outputs.
Blocking compute must run off the event loop (``run_blocking``).
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import functools
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from edgecloud.errors import NotFound
from edgecloud.types import InferRequest, InferResponse, ModelMetadata

T = TypeVar("T")


class Model(abc.ABC):
    """One servable model version."""

    metadata: ModelMetadata

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> str:
        return self.metadata.versions[0] if self.metadata.versions else ""

    async def load(self) -> None:
        """Prepare for serving (sessions, warm-up). Called once before ``infer``."""

    async def unload(self) -> None:
        """Release resources. Called once, after the last ``infer``."""

    def ready(self) -> bool:
        return True

    @abc.abstractmethod
    async def infer(self, request: InferRequest) -> InferResponse:
        """Run a validated request."""

    async def stream(self, request: InferRequest) -> AsyncIterator[InferResponse]:
        """Responses to a validated request over a stream (``ModelStreamInfer``); the last one
        carries ``triton_final_response: true``. A model that is not decoupled answers once."""
        response = await self.infer(request)
        response.parameters["triton_final_response"] = True
        response.wire = None
        yield response


class BlockingRunner:
    """A dedicated thread pool for one model's blocking calls (onnxruntime, torch)."""

    def __init__(self, workers: int = 1, name: str = "model"):
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class ModelRepository:
    """Models by name and version; an empty version means the newest one."""

    def __init__(self, models: list[Model] | None = None):
        self._models: dict[str, dict[str, Model]] = {}
        self._newest: dict[str, Model] = {}
        """Each name's newest version, kept as models are added (every request without a version
        asks for it)."""
        for model in models or []:
            self.add(model)

    def add(self, model: Model) -> None:
        versions = self._models.setdefault(model.name, {})
        versions[model.version] = model
        self._newest[model.name] = versions[max(versions, key=_version_key)]

    def get(self, name: str, version: str = "") -> Model:
        if not version:
            newest = self._newest.get(name)
            if newest is None:
                raise NotFound(f"unknown model {name!r}", field="model_name")
            return newest
        versions = self._models.get(name)
        if not versions:
            raise NotFound(f"unknown model {name!r}", field="model_name")
        model = versions.get(version)
        if model is None:
            raise NotFound(f"model {name!r} has no version {version!r}; versions: {sorted(versions)}",
                           field="model_version")
        return model

    def all(self) -> list[Model]:
        return [model for versions in self._models.values() for model in versions.values()]


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)
