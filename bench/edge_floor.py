"""The floor an edge server is measured against: a minimal grpc.aio + onnxruntime backend.

    python -m bench.edge_floor --port 9000 --model-dir models/all-MiniLM-L6-v2 [--workers N]

Serves ``ModelInfer`` (and ``ServerReady``) for the sentence-embedding model directory with the
same INT8 file, the same tokenizer and the same pooling as the edge agent, and nothing else: the
generated protobuf servicer, ``N`` worker threads (default: one per usable core) each running the
one shared session with one intra-op thread, no validation beyond what it needs, no admission,
no metrics. ``bench.edge_server`` runs it beside the edge agent in one run. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from edge_agent.model_dir import load_model_dir
from edge_agent.onnx_session import SessionSettings, create_session
from edge_agent.threads import usable_cores
from edgecloud.codec import deserialize_bytes
from edgecloud.tokenization import TextTokenizer, mean_pool_normalize
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc


class Floor(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, model_dir: str, workers: int):
        spec = load_model_dir(model_dir, None)
        self.name = spec.name
        self.session = create_session(spec.onnx_file(spec.default_variant), SessionSettings(intra_op_threads=1))
        self.inputs = [node.name for node in self.session.get_inputs()]
        self.output = self.session.get_outputs()[0].name
        self.tokenizer = TextTokenizer.from_file(spec.tokenizer, spec.max_sequence_length)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="floor")

    def _embed(self, raw: bytes, count: int) -> np.ndarray:
        texts = [item.decode() for item in deserialize_bytes(raw, count, "inputs[text]")]
        encoded = self.tokenizer.encode(texts)
        (hidden,) = self.session.run([self.output], {name: encoded[name] for name in self.inputs})
        return mean_pool_normalize(hidden, encoded["attention_mask"])

    async def ModelInfer(self, request, context):
        count = int(request.inputs[0].shape[0])
        embeddings = await asyncio.get_running_loop().run_in_executor(
            self.pool, self._embed, request.raw_input_contents[0], count)
        response = pb.ModelInferResponse(model_name=self.name)
        response.outputs.add(name="embedding", datatype="FP32", shape=list(embeddings.shape))
        response.raw_output_contents.append(embeddings.tobytes())
        return response

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)


async def serve(port: int, model_dir: str, workers: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Floor(model_dir, workers), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--workers", type=int, default=0, help="threads computing at once (0: one per core)")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.model_dir, args.workers or usable_cores()))


if __name__ == "__main__":
    main()
