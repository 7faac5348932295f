"""Edge model build tooling: export to ONNX, fuse, sensitivity-guided INT8 quantization, report.

``build_model_dir`` is the entry point; ``add_arguments``/``run`` expose it to a CLI.
Needs the ``build`` extra (torch, transformers, onnx, onnxruntime); the model directory it
writes needs only onnxruntime and tokenizers.
"""

from edge_agent.build.pipeline import DEFAULT_OUT, BuildError, add_arguments, build_model_dir, run

__all__ = ["DEFAULT_OUT", "BuildError", "add_arguments", "build_model_dir", "run"]
