"""The floor a gRPC relay cannot go under: the bare Python gRPC hop, bytes piped to one upstream.

    python -m bench.relay_floor --port 9000 --target 127.0.0.1:8101

A ``grpc.aio`` server with two methods, ``ModelInfer`` (unary) and ``ModelStreamInfer``, each
opening the same call upstream and copying every message without decoding anything: no routing,
no validation, no cache. ``bench.gateway_stream`` and ``bench.gateway_hop`` measure the gateway
against it (same machine, same run), so what the gateway adds over this floor is what its own
work costs. Stops on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc

from protos import inference_pb2 as pb

_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
_METHOD = f"/{_SERVICE}/ModelStreamInfer"
_UNARY_METHOD = f"/{_SERVICE}/ModelInfer"


async def serve(port: int, target: str) -> None:
    channel = grpc.aio.insecure_channel(target)
    upstream = channel.stream_stream(_METHOD)
    unary_upstream = channel.unary_unary(_UNARY_METHOD)

    async def relay_unary(request: bytes, context) -> bytes:
        return await unary_upstream(request, timeout=context.time_remaining())

    async def relay(requests, context):
        call = upstream(timeout=context.time_remaining())

        async def forward() -> None:
            async for message in requests:
                await call.write(message)
            await call.done_writing()

        sender = asyncio.ensure_future(forward())
        try:
            async for message in call:
                yield message
        finally:
            sender.cancel()
            call.cancel()

    handler = grpc.method_handlers_generic_handler(
        _SERVICE, {"ModelStreamInfer": grpc.stream_stream_rpc_method_handler(relay),
                   "ModelInfer": grpc.unary_unary_rpc_method_handler(relay_unary)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)
    await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.target))


if __name__ == "__main__":
    main()
