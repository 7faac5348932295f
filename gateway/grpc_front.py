"""The gateway's gRPC front: the Open Inference Protocol over ``GatewayCore``, nothing more."""

from __future__ import annotations

from edgecloud import __version__, codec
from edgecloud.grpc_server import (
    INFERENCE_SERVICE,
    GrpcServer,
    add_inference_servicer,
    request_deadline,
    translate_errors,
)
from edgecloud.types import ServerMetadata
from gateway.core import GatewayCore
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc

SERVER_METADATA = ServerMetadata("edgecloud-gateway", __version__, ("model_repository_readonly",))


class GatewayServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, core: GatewayCore):
        self.core = core

    @translate_errors
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @translate_errors
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.core.ready())

    def _tenant(self, context) -> str:
        return self.core.auth.tenant_for(dict(context.invocation_metadata() or ()))

    @translate_errors
    async def ModelReady(self, request, context):
        self._tenant(context)
        await self.core.model_metadata(request.name, request.version)
        return pb.ModelReadyResponse(ready=self.core.ready())

    @translate_errors
    async def ServerMetadata(self, request, context):
        self._tenant(context)
        return codec.server_metadata_to_proto(SERVER_METADATA)

    @translate_errors
    async def ModelMetadata(self, request, context):
        self._tenant(context)
        _, msg = await self.core.model_metadata(request.name, request.version)
        return msg

    @translate_errors
    async def ModelInfer(self, request, context):
        tenant = self._tenant(context)
        return await self.core.infer(request, request_deadline(context), tenant)


def gateway_grpc_server(core: GatewayCore, **kwargs) -> GrpcServer:
    servicer = GatewayServicer(core)
    return GrpcServer(lambda server: add_inference_servicer(servicer, server),
                      [INFERENCE_SERVICE], **kwargs)
