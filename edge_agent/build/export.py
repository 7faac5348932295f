"""Torch FP32 encoder -> ONNX FP32 graph with the edge model's I/O contract.

Contract: ``export_fp32(path)`` writes one self-contained ONNX file (opset ``OPSET``, no external
data) whose inputs are ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64,
[batch, sequence], both axes dynamic) and whose single output is ``last_hidden_state`` (float32,
[batch, sequence, 384]). Pooling and normalisation stay outside the graph.

The graph is traced with eager (explicit MatMul/Softmax) attention through the TorchScript
exporter: that is the pattern onnxruntime's BERT fusion (``fusion.py``) turns into Attention
nodes; it does not recognise the dynamo exporter's attention. Both compute the same function.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_agent.build.toolchain import quiet
from edgecloud.reference_model import ONNX_INPUTS, ONNX_OUTPUT, load_torch_encoder

OPSET = 17


def _wrapper(encoder):
    import torch

    class LastHiddenState(torch.nn.Module):
        """Positional (input_ids, attention_mask, token_type_ids) -> last_hidden_state."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    return LastHiddenState(encoder).eval()


def export_fp32(path: Path, encoder=None) -> Path:
    """Export ``encoder`` (default: the packaged reference model) to ``path``; returns ``path``.

    The encoder's attention implementation is switched to eager for the trace and restored.
    """
    import torch

    encoder = encoder if encoder is not None else load_torch_encoder()
    original = encoder.config._attn_implementation
    example = torch.randint(1000, 2000, (2, 16), dtype=torch.int64)
    args = (example, torch.ones_like(example), torch.zeros_like(example))
    axes = {name: {0: "batch", 1: "sequence"} for name in (*ONNX_INPUTS, ONNX_OUTPUT)}
    encoder.set_attn_implementation("eager")
    try:
        with quiet(), torch.inference_mode():
            torch.onnx.export(
                _wrapper(encoder), args, str(path),
                input_names=list(ONNX_INPUTS), output_names=[ONNX_OUTPUT],
                dynamic_axes=axes, opset_version=OPSET, dynamo=False,
            )
    finally:
        encoder.set_attn_implementation(original)
    return path


def max_abs_difference(onnx_path: Path, encoder, batch: dict[str, np.ndarray]) -> float:
    """Largest |onnx - torch| over ``last_hidden_state`` on ``batch`` (an export parity check)."""
    import torch

    from edge_agent.build.runners import ort_session

    session = ort_session(onnx_path)
    got = session.run([ONNX_OUTPUT], {k: batch[k] for k in ONNX_INPUTS})[0]
    with torch.inference_mode():
        want = encoder(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state
    return float(np.abs(got - want.numpy()).max())
