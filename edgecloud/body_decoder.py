"""Large REST infer bodies parsed in helper processes, so the event loop never stalls on them.

Contract:
- ``BodyDecoder(threshold_bytes, processes)``; ``await decode(body, header_length, limits,
  model_name=, model_version=, precheck=)`` answers what ``json_codec.request_from_json`` answers
  for the same arguments (the same ``InferRequest``, or the same typed error naming the field).
- A body whose JSON part (the ``Inference-Header-Content-Length`` bytes, or the whole body) is
  under ``threshold_bytes`` is decoded in place: small bodies pay nothing. A larger one is parsed
  by a helper process (``python -m edgecloud.body_decoder``) that answers the decoded request as a
  serialized ``ModelInferRequest`` (tensors as raw contents) or the error as JSON; the server then
  reads that with ``codec.request_from_proto`` and ``precheck``. Why a process: ``json.loads``
  holds the GIL from start to end (a million-element list takes ~350 ms, and ~300 ms of that is a
  stall of the loop even from a thread), and a body's Python objects (tens of MB for a million
  strings) live and die in the helper, not in the server's heap.
- Helpers start on first need (one log line each) and serve one body at a time; at most
  ``processes`` run, and further large bodies wait for a free one without blocking the loop. The
  pipes carry only length-prefixed bytes (no pickle). A request cancelled while its body is in a
  helper lets the helper finish (its answer is read and dropped) so the pipe stays in step.
- A helper that dies or answers garbage is replaced; the body it held is decoded in place
  (logged), so nothing is lost. ``threshold_bytes=0`` decodes everything in place.
- ``close()`` ends the helpers (EOF on their stdin, then kill after a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import sys

from edgecloud import codec, json_codec
from edgecloud.codec import Precheck
from edgecloud.errors import ErrorKind, InferenceError, error_for_kind
from edgecloud.limits import RequestLimits
from edgecloud.types import InferRequest
from protos import inference_pb2 as pb

__all__ = ["BodyDecoder", "DEFAULT_THRESHOLD_BYTES"]

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD_BYTES = 256 * 1024
"""JSON this large takes ~10 ms or more to parse (about 30 ms for a MiB of numbers)."""

_FRAME = struct.Struct("<IQ")
"""Parent -> helper: meta length, body length; then the meta JSON and the body."""
_ANSWER = struct.Struct("<BQ")
"""Helper -> parent: status (0 decoded, 1 refused), payload length; then the payload."""
_DECODED, _REFUSED = 0, 1
_STOP_GRACE_S = 2.0


class _Helper:
    """One helper process and its pipes; used by one body at a time."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process

    @classmethod
    async def start(cls) -> _Helper:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edgecloud.body_decoder",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        log.info("started a JSON body decoder process (pid %d)", process.pid)
        return cls(process)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def roundtrip(self, meta: bytes, body: bytes) -> tuple[int, bytes]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(_FRAME.pack(len(meta), len(body)))
        stdin.write(meta)
        stdin.write(body)
        await stdin.drain()
        status, length = _ANSWER.unpack(await stdout.readexactly(_ANSWER.size))
        return status, await stdout.readexactly(length)

    async def stop(self) -> None:
        process = self.process
        if process.returncode is None:
            with contextlib.suppress(Exception):
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), _STOP_GRACE_S)
            except TimeoutError:
                process.kill()
                await process.wait()


class BodyDecoder:
    def __init__(self, threshold_bytes: int = DEFAULT_THRESHOLD_BYTES, processes: int = 1):
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.threshold_bytes = threshold_bytes
        self._idle: list[_Helper] = []
        self._started = 0
        self._processes = processes
        self._free = asyncio.Condition()
        self._closed = False
        self.offloaded = 0
        """Bodies parsed by a helper (for tests and metrics)."""

    async def decode(self, body: bytes, header_length: int | None, limits: RequestLimits, *,
                     model_name: str = "", model_version: str = "",
                     precheck: Precheck | None = None) -> InferRequest:
        json_part = len(body) if header_length is None else header_length
        if self._closed or not self.threshold_bytes or json_part < self.threshold_bytes \
                or not 0 <= json_part <= len(body):
            return json_codec.request_from_json(body, header_length, limits, model_name=model_name,
                                                model_version=model_version, precheck=precheck)
        meta = json.dumps({"header_length": header_length, "model_name": model_name,
                           "model_version": model_version, "limits": _limits_dict(limits)}).encode()
        # The exchange runs to its end even if this request is cancelled: the pipe stays in step.
        answer = await asyncio.shield(asyncio.ensure_future(self._exchange(meta, body)))
        if answer is None:
            return json_codec.request_from_json(body, header_length, limits, model_name=model_name,
                                                model_version=model_version, precheck=precheck)
        status, payload = answer
        if status == _REFUSED:
            raise _error_from_json(payload)
        request = codec.request_from_proto(pb.ModelInferRequest.FromString(payload), limits, precheck)
        self.offloaded += 1
        return request

    async def _exchange(self, meta: bytes, body: bytes) -> tuple[int, bytes] | None:
        """The helper's answer, or None when no helper could give one (decode in place)."""
        helper = await self._acquire()
        if helper is None:
            return None
        try:
            answer = await helper.roundtrip(meta, body)
            if answer[0] not in (_DECODED, _REFUSED):
                raise ValueError(f"status {answer[0]}")
        except (OSError, EOFError, asyncio.IncompleteReadError, ValueError) as exc:
            log.warning("JSON body decoder process %d failed (%s); decoding this body in place",
                        helper.process.pid, exc or type(exc).__name__)
            await self._discard(helper)
            return None
        await self._release(helper)
        return answer

    async def _acquire(self) -> _Helper | None:
        async with self._free:
            while True:
                while self._idle:
                    helper = self._idle.pop()
                    if helper.alive:
                        return helper
                    self._started -= 1
                if self._started < self._processes:
                    self._started += 1
                    break
                await self._free.wait()
        try:
            return await _Helper.start()
        except OSError as exc:
            log.warning("could not start a JSON body decoder process (%s); decoding in place", exc)
            async with self._free:
                self._started -= 1
                self._free.notify()
            return None

    async def _release(self, helper: _Helper) -> None:
        if self._closed:
            await helper.stop()
            return
        async with self._free:
            self._idle.append(helper)
            self._free.notify()

    async def _discard(self, helper: _Helper) -> None:
        with contextlib.suppress(ProcessLookupError):
            helper.process.kill()
        await helper.process.wait()
        async with self._free:
            self._started -= 1
            self._free.notify()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(helper.stop() for helper in idle))


def _limits_dict(limits: RequestLimits) -> dict[str, int]:
    return {name: getattr(limits, name) for name in RequestLimits.__dataclass_fields__}


def _error_from_json(payload: bytes) -> InferenceError:
    doc = json.loads(payload)
    error = error_for_kind(ErrorKind(doc["kind"]), doc["message"])
    error.field = doc.get("field")
    return error


# ---------------------------------------------------------------------------------------------
# the helper process


def _answer(status: int, payload: bytes, out) -> None:
    out.write(_ANSWER.pack(status, len(payload)))
    out.write(payload)
    out.flush()


def _serve(source, out) -> None:
    """Decode bodies from ``source`` until EOF; every answer is a decoded request or an error."""
    while True:
        head = source.read(_FRAME.size)
        if len(head) < _FRAME.size:
            return
        meta_length, body_length = _FRAME.unpack(head)
        meta = json.loads(source.read(meta_length))
        body = source.read(body_length)
        if len(body) < body_length:
            return
        try:
            limits = RequestLimits(**meta["limits"])
            request = json_codec.request_from_json(body, meta["header_length"], limits,
                                                   model_name=meta["model_name"],
                                                   model_version=meta["model_version"])
            del body
            payload = codec.request_to_proto(request).SerializeToString()
            del request
        except InferenceError as exc:
            error = {"kind": exc.kind.value, "message": exc.message, "field": exc.field}
            _answer(_REFUSED, json.dumps(error).encode(), out)
            continue
        _answer(_DECODED, payload, out)
        del payload


def main() -> None:
    from edgecloud.allocator import release_large_buffers

    release_large_buffers()
    try:
        _serve(sys.stdin.buffer, sys.stdout.buffer)
    except (BrokenPipeError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
