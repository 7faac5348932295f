"""The edge agent: INT8 ONNX Runtime inference, embeddable in-process or served over gRPC."""
