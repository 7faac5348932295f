"""The load generators shared by the benchmarks and the integration tests.

Contract:
- ``closed_loop(address, ...)`` runs ``concurrency`` clients, each sending its next request as
  soon as the previous one is answered, until ``duration_s`` has passed since the start.
  ``events(t0)`` runs alongside (fault injection) and is awaited before returning.
- ``rotated(addresses, msg, n)`` sends ``msg`` ``n`` times to each address, one request at a time,
  one request to each address per round in a freshly shuffled order (seeded), so drift and noise
  hit every path alike and no path always follows the same one (a fixed cycle biased a slot by
  +0.2 ms in an A/A run); returns each address's latencies in seconds.
- ``open_loop(address, rate_per_s=..., ...)`` sends requests at Poisson arrival times whatever
  the server does (offered load does not back off when the server slows, as real clients do
  not), for ``duration_s``, then waits for every answer.
Every request's outcome is recorded: start offset, latency, who served it and why, or the error
with its status code and the server's ``retry-after`` hint.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from edgecloud.codec import serialize_bytes
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc

MODEL = "all-MiniLM-L6-v2"


def text_request(texts: list[str], model: str = MODEL) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=model)
    msg.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    msg.raw_input_contents.append(serialize_bytes([t.encode() for t in texts]))
    return msg


@dataclass
class Outcome:
    started: float
    latency: float
    served_by: str | None
    reason: str | None
    error: str | None
    code: str | None = None
    """The gRPC status code's name when the request failed."""
    retry_after: str | None = None
    """The ``retry-after`` trailing metadata of a failed request, if the server sent one."""
    lag: float = 0.0
    """Open loop only: how late the request was sent after its scheduled arrival (client lag)."""


def _param(response: pb.ModelInferResponse, name: str) -> str | None:
    return response.parameters[name].string_param if name in response.parameters else None


async def _call(stub: pb_grpc.GRPCInferenceServiceStub, msg: pb.ModelInferRequest, t0: float,
                timeout_s: float) -> Outcome:
    start = time.monotonic()
    try:
        response = await stub.ModelInfer(msg, timeout=timeout_s)
    except grpc.aio.AioRpcError as exc:
        hints = [value for key, value in (exc.trailing_metadata() or ()) if key == "retry-after"]
        return Outcome(start - t0, time.monotonic() - start, None, None, f"{exc.code().name}: {exc.details()}",
                       exc.code().name, hints[0] if hints else None)
    return Outcome(start - t0, time.monotonic() - start, _param(response, "served_by"),
                   _param(response, "route_reason"), None)


def _default_request(index: int, n: int) -> pb.ModelInferRequest:
    return text_request([f"client {index} request {n}"])


async def closed_loop(address: str, *, duration_s: float | None, concurrency: int,
                      make_request: Callable[[int, int], pb.ModelInferRequest] | None = None,
                      timeout_s: float = 10.0,
                      events: Callable[[float], Awaitable[None]] | None = None) -> list[Outcome]:
    """``make_request(client_index, n)`` builds each request (default: a distinct short sentence).
    ``events(t0)`` runs beside the clients (faults on a schedule); with ``duration_s=None`` the
    load lasts until ``events`` returns, so a scenario that runs late still gets its windows."""
    if duration_s is None and events is None:
        raise ValueError("closed_loop: duration_s=None needs an events scenario to end the load")
    build = make_request or _default_request
    outcomes: list[Outcome] = []
    ended = asyncio.Event()
    t0 = time.monotonic()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def going() -> bool:
            return not ended.is_set() if duration_s is None else time.monotonic() - t0 < duration_s

        async def client(index: int) -> None:
            n = 0
            while going():
                n += 1
                outcomes.append(await _call(stub, build(index, n), t0, timeout_s))

        tasks = [asyncio.create_task(client(i)) for i in range(concurrency)]
        try:
            if events is not None:
                await events(t0)
        finally:
            ended.set()
        await asyncio.gather(*tasks)
    return outcomes


async def rotated(addresses: dict[str, str], msg: pb.ModelInferRequest, n: int, *, warmup: int = 100,
                  measuring: Callable[[], None] = lambda: None, seed: int = 0) -> dict[str, list[float]]:
    """See the module's contract; ``warmup`` requests per address first, then ``measuring()`` (a
    hook to read CPU counters) right before the measured ones."""
    channels = {name: grpc.aio.insecure_channel(address) for name, address in addresses.items()}
    try:
        stubs = {name: pb_grpc.GRPCInferenceServiceStub(channel) for name, channel in channels.items()}
        for stub in stubs.values():
            for _ in range(warmup):
                await stub.ModelInfer(msg, timeout=10)
        names = list(stubs)
        samples: dict[str, list[float]] = {name: [] for name in names}
        measuring()
        rng = random.Random(seed)
        for _ in range(n):
            rng.shuffle(names)
            for name in names:
                start = time.perf_counter()
                await stubs[name].ModelInfer(msg, timeout=10)
                samples[name].append(time.perf_counter() - start)
        return samples
    finally:
        for channel in channels.values():
            await channel.close()


async def open_loop(address: str, *, rate_per_s: float, duration_s: float,
                    make_request: Callable[[int, int], pb.ModelInferRequest] | None = None,
                    timeout_s: float = 10.0, seed: int = 0) -> list[Outcome]:
    """``make_request(0, n)`` builds the n-th request (default: a distinct short sentence)."""
    build = make_request or _default_request
    rng = random.Random(seed)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await channel.channel_ready()
        tasks: list[asyncio.Task] = []
        t0 = time.monotonic()
        due = 0.0
        n = 0
        while True:
            due += rng.expovariate(rate_per_s)
            if due >= duration_s:
                break
            wait = due - (time.monotonic() - t0)
            if wait > 0:
                await asyncio.sleep(wait)
            n += 1

            async def one(msg: pb.ModelInferRequest, scheduled: float) -> Outcome:
                outcome = await _call(stub, msg, t0, timeout_s)
                outcome.lag = max(0.0, outcome.started - scheduled)
                return outcome

            tasks.append(asyncio.create_task(one(build(0, n), due)))
        return list(await asyncio.gather(*tasks))
