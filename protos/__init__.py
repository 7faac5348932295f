"""Open Inference Protocol (KServe v2) gRPC definition and its generated stubs.

Import ``protos.inference_pb2`` / ``protos.inference_pb2_grpc`` directly. Only transports and
``edgecloud.codec`` import them; the rest of the code works on ``edgecloud.types``.
"""
