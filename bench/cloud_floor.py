"""The floor a cloud worker is measured against: a minimal grpc.aio server batching one runtime.

Run by ``bench.cloud`` in a child process beside the workers (``serve_floor``). It serves
``ModelInfer`` for one-sentence requests of the reference model with the worker's own runtime
(``cloud_worker.reference.ReferenceRuntime``: same encoder, threads, instances and OpenMP policy)
and nothing else: bytes in, bytes out, no validation, no metrics, no admission, no deadlines. Each
of ``instances`` batch loops takes every request waiting (at least one, at most 32: greedy, no
queue delay) and embeds them on its own thread. What a server on this machine attains with the
least Python around the model: the worker's throughput beside it says how much of the gap to the
in-process ceiling is the worker's own, and how much any gRPC server pays here.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

MAX_BATCH = 32
MODEL = "all-MiniLM-L6-v2"


def serve_floor(threads: int, instances: int, omp: str, encoder: str, ready) -> None:
    """Serve until terminated; puts the bound port on ``ready`` (a multiprocessing queue)."""
    from cloud_worker.main import apply_openmp_wait_policy, keep_tokenizers_serial

    apply_openmp_wait_policy(omp)  # before torch loads, as the worker does
    keep_tokenizers_serial()
    from cloud_worker.config import RuntimeSettings
    from cloud_worker.reference import ReferenceRuntime

    settings = RuntimeSettings(device="cpu", intra_op_threads=max(1, threads // instances), instances=instances,
                               encoder=encoder)
    runtime = ReferenceRuntime(settings=settings, max_rows=MAX_BATCH)
    pool = ThreadPoolExecutor(instances, thread_name_prefix="floor")
    pool.submit(runtime.load).result()  # on an instance thread (OpenMP keeps a team per calling thread)
    asyncio.run(_serve(runtime, pool, instances, ready))


async def _serve(runtime, pool: ThreadPoolExecutor, instances: int, ready) -> None:
    import grpc

    from edgecloud.codec import deserialize_bytes
    from edgecloud.limits import RequestLimits
    from protos import inference_pb2 as pb

    loop = asyncio.get_running_loop()
    waiting: asyncio.Queue[tuple[str, asyncio.Future]] = asyncio.Queue()
    limits = RequestLimits()

    async def model_infer(request: bytes, context) -> bytes:
        message = pb.ModelInferRequest.FromString(request)
        (text,) = deserialize_bytes(message.raw_input_contents[0], 1, "inputs[text]", limits)
        answer = loop.create_future()
        waiting.put_nowait((text.decode(), answer))
        return await answer

    async def batches() -> None:
        while True:
            items = [await waiting.get()]
            while len(items) < MAX_BATCH and not waiting.empty():
                items.append(waiting.get_nowait())
            embeddings = await loop.run_in_executor(pool, runtime.embed, [text for text, _ in items])
            for (_, answer), row in zip(items, embeddings):
                response = pb.ModelInferResponse(model_name=MODEL)
                response.outputs.add(name="embedding", datatype="FP32", shape=[1, row.shape[0]])
                response.raw_output_contents.append(row.tobytes())
                if not answer.done():
                    answer.set_result(response.SerializeToString())

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    loops = [asyncio.create_task(batches()) for _ in range(instances)]
    ready.put(port)
    try:
        await server.wait_for_termination()
    finally:
        for task in loops:
            task.cancel()
