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
- A helper that dies, answers garbage or does not answer within ``timeout_s`` is killed and
  replaced; the body it held is decoded in place (logged), so nothing is lost.
  ``threshold_bytes=0`` decodes everything in place.
- ``close()`` ends the helpers (EOF on their stdin, then kill after a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import subprocess
import sys

from google.protobuf.message import DecodeError

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
"""Helper -> parent: status (0 decoded, 1 refused), payload length; then the payload. A decoded
request's payload is the ``ModelInferRequest`` without its tensors (u32 length, message), the
tensors' sizes (u32 count, u64 each) and the tensors' raw bytes: the server reads the header
and hands the tensors on as views of the one buffer, so a request refused from its shapes never
has its data copied again."""
_U32 = struct.Struct("<I")
_DECODED, _REFUSED = 0, 1
_STOP_GRACE_S = 2.0
EXCHANGE_TIMEOUT_S = 30.0
"""A helper that has not answered this long is killed and the body decoded in place (64 MiB of
JSON parses in about 3 s here)."""


class _Helper:
    """One helper process and its pipes; used by one body at a time. The pipes are driven by a
    worker thread with blocking reads and writes (the GIL is let go in every system call), so
    moving megabytes costs the event loop's thread nothing."""

    def __init__(self, process: subprocess.Popen):
        self.process = process

    @classmethod
    async def start(cls) -> _Helper:
        process = await asyncio.to_thread(
            subprocess.Popen, [sys.executable, "-m", "edgecloud.body_decoder"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        log.info("started a JSON body decoder process (pid %d)", process.pid)
        return cls(process)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def pid(self) -> int:
        return self.process.pid

    async def roundtrip(self, meta: bytes, body: bytes) -> tuple[int, bytearray]:
        return await asyncio.to_thread(self._roundtrip, meta, body)

    def _roundtrip(self, meta: bytes, body: bytes) -> tuple[int, bytearray]:
        stdin, stdout = self.process.stdin, self.process.stdout
        stdin.write(_FRAME.pack(len(meta), len(body)) + meta)
        view = memoryview(body)
        while view:
            view = view[stdin.write(view):]
        status, length = _ANSWER.unpack(_read_exactly(stdout, _ANSWER.size))
        return status, _read_exactly(stdout, length)

    async def stop(self) -> None:
        process = self.process
        if process.poll() is None:
            with contextlib.suppress(OSError):
                process.stdin.close()
            try:
                await asyncio.to_thread(process.wait, _STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        for pipe in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):
                pipe.close()

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.stop()


def _read_exactly(source, size: int) -> bytearray:
    """``size`` bytes from a raw pipe, or EOFError when it ends first."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = source.readinto(view[got:])
        if not n:
            raise EOFError(f"the pipe ended after {got} of {size} bytes")
        got += n
    return buffer


class BodyDecoder:
    def __init__(self, threshold_bytes: int = DEFAULT_THRESHOLD_BYTES, processes: int = 1,
                 timeout_s: float = EXCHANGE_TIMEOUT_S):
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.threshold_bytes = threshold_bytes
        self.timeout_s = timeout_s
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
        try:
            if status == _REFUSED:
                error = _error_from_json(payload)
            else:
                header, raw = _split_decoded(payload)
        except ValueError as exc:
            log.warning("a garbled answer from the JSON body decoder process (%s); decoding this body in place", exc)
            return json_codec.request_from_json(body, header_length, limits, model_name=model_name,
                                                model_version=model_version, precheck=precheck)
        if status == _REFUSED:
            raise error
        request = codec.request_from_proto(header, limits, precheck, raw)
        self.offloaded += 1
        return request

    async def _exchange(self, meta: bytes, body: bytes) -> tuple[int, bytearray] | None:
        """The helper's answer, or None when no helper could give one (decode in place)."""
        helper = await self._acquire()
        if helper is None:
            return None
        try:
            answer = await asyncio.wait_for(helper.roundtrip(meta, body), self.timeout_s)
            if answer[0] not in (_DECODED, _REFUSED):
                raise ValueError(f"status {answer[0]}")
        except (OSError, EOFError, ValueError, TimeoutError) as exc:
            reason = f"no answer within {self.timeout_s:g} s" if isinstance(exc, TimeoutError) else exc
            log.warning("JSON body decoder process %d failed (%s); decoding this body in place",
                        helper.pid, reason or type(exc).__name__)
            await self._discard(helper)
            return None
        await self._release(helper)
        return answer

    async def _acquire(self) -> _Helper | None:
        chosen: _Helper | None = None
        dead: list[_Helper] = []
        async with self._free:
            while chosen is None:
                while self._idle and chosen is None:
                    helper = self._idle.pop()
                    if helper.alive:
                        chosen = helper
                    else:
                        self._started -= 1
                        dead.append(helper)
                if chosen is not None:
                    break
                if self._started < self._processes:
                    self._started += 1
                    break
                await self._free.wait()
        for helper in dead:  # died while idle: its pipes are closed, a new one starts below
            await helper.stop()
        if chosen is not None:
            return chosen
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
        await helper.kill()
        async with self._free:
            self._started -= 1
            self._free.notify()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(helper.stop() for helper in idle))


def _split_decoded(payload: bytearray | bytes) -> tuple[pb.ModelInferRequest, list[memoryview]]:
    try:
        view = memoryview(payload)
        (header_length,) = _U32.unpack_from(view, 0)
        offset = _U32.size + header_length
        header = pb.ModelInferRequest.FromString(view[_U32.size:offset])
        (count,) = _U32.unpack_from(view, offset)
        offset += _U32.size
        sizes = struct.unpack_from(f"<{count}Q", view, offset)
        offset += 8 * count
        raw = []
        for size in sizes:
            raw.append(view[offset:offset + size])
            offset += size
    except (struct.error, DecodeError) as exc:
        raise ValueError(f"a garbled answer from the decoder process ({exc})") from None
    if offset != len(view):
        raise ValueError("a garbled answer from the decoder process (length)")
    return header, raw


def _encode_decoded(request: InferRequest) -> list[bytes]:
    """The parts of a decoded request's payload, in order (see ``_ANSWER``)."""
    header = codec.request_to_proto(request)
    raw = list(header.raw_input_contents)
    del header.raw_input_contents[:]
    text = header.SerializeToString()
    return [_U32.pack(len(text)), text, _U32.pack(len(raw)), struct.pack(f"<{len(raw)}Q", *map(len, raw)), *raw]


def _limits_dict(limits: RequestLimits) -> dict[str, int]:
    return {name: getattr(limits, name) for name in RequestLimits.__dataclass_fields__}


def _error_from_json(payload: bytes) -> InferenceError:
    try:
        doc = json.loads(payload)
        error = error_for_kind(ErrorKind(doc["kind"]), doc["message"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"an unreadable error ({exc})") from None
    error.field = doc.get("field")
    return error


# ---------------------------------------------------------------------------------------------
# the helper process


def _answer(status: int, parts: list[bytes], out) -> None:
    out.write(_ANSWER.pack(status, sum(map(len, parts))))
    for part in parts:
        out.write(part)
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
            parts = _encode_decoded(request)
            del request
        except InferenceError as exc:
            error = {"kind": exc.kind.value, "message": exc.message, "field": exc.field}
            _answer(_REFUSED, [json.dumps(error).encode()], out)
            continue
        _answer(_DECODED, parts, out)
        del parts


def main() -> None:
    from edgecloud.allocator import release_large_buffers

    release_large_buffers()
    try:
        _serve(sys.stdin.buffer, sys.stdout.buffer)
    except (BrokenPipeError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
