"""Open Inference Protocol (KServe v2) gRPC definition and its generated stubs.

Import ``protos.inference_pb2`` / ``protos.inference_pb2_grpc`` directly. Only transports and
``edgecloud.codec`` import them; the rest of the code works on ``edgecloud.types``.
"""

__all__ = ["inference_pb2", "inference_pb2_grpc"]

from protos import inference_pb2, inference_pb2_grpc  # noqa: E402
