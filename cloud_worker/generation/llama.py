"""A Llama-architecture decoder in plain torch, with a slot-based static KV cache.

Contract: ``LlamaModel.load(checkpoint_dir, ...)`` reads a HuggingFace-format checkpoint
(``config.json`` with ``model_type: llama``, ``model.safetensors`` or a sharded index) and
allocates K and V caches of shape ``[layers, slots, kv_heads, context_length, head_dim]`` once.
A *slot* holds one sequence: positions ``0..n-1`` of slot ``s`` are that sequence's keys and
values, and nothing reads a slot past the length its caller passes, so a slot is reused without
clearing it.

- ``prefill(slot_ids, token_lists)`` runs whole prompts (right-padded into one batch, causal
  attention) and writes each slot's K/V at positions ``0..len-1``; it returns the float32 logits
  of each prompt's last position, ``[B, vocab]``.
- ``decode(slot_ids, last_tokens, positions)`` runs one token per slot, token ``i`` at position
  ``positions[i]`` (the slot's current length); its K/V are written there and it attends to
  positions ``0..positions[i]`` of its own slot only. Returns float32 logits ``[B, vocab]``.

Both run under ``torch.inference_mode`` on the model's device and dtype and must be called from
one thread at a time. The numerics follow ``transformers``' ``LlamaForCausalLM`` (RMSNorm in
float32, RoPE tables in float32 cast to the compute dtype, SDPA attention). Only the default RoPE
is implemented: a checkpoint asking for scaled RoPE is refused, as is any other architecture.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["CheckpointError", "LlamaModel", "LlamaSpec"]


class CheckpointError(ValueError):
    """A checkpoint this runtime cannot serve (wrong architecture, missing weights)."""


@dataclass(frozen=True, slots=True)
class LlamaSpec:
    """The shape of a Llama checkpoint, read from its ``config.json``."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LlamaSpec:
        if config.get("model_type") != "llama":
            raise CheckpointError(f"model_type {config.get('model_type')!r} is not supported (only 'llama')")
        if config.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"hidden_act {config['hidden_act']!r} is not supported (only 'silu')")
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise CheckpointError(f"rope type {rope.get('rope_type', rope.get('type'))!r} is not supported")
        theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
        heads = config["num_attention_heads"]
        return cls(
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            max_position_embeddings=config.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention_bias=bool(config.get("attention_bias", False)),
            mlp_bias=bool(config.get("mlp_bias", False)),
        )


class _Layer(NamedTuple):
    attn_norm: torch.Tensor
    qkv: torch.Tensor
    """q, k and v projections stacked on the output dimension: one matmul instead of three."""
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    mlp_norm: torch.Tensor
    gate_up: torch.Tensor
    """gate and up projections stacked on the output dimension."""
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None


def _read_weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    single = checkpoint_dir / "model.safetensors"
    if single.exists():
        return load_file(single)
    index = checkpoint_dir / "model.safetensors.index.json"
    if not index.exists():
        raise CheckpointError("the checkpoint has no model.safetensors (nor a sharded index)")
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        weights.update(load_file(checkpoint_dir / shard))
    return weights


class LlamaModel:
    """The decoder's weights, its RoPE tables and its KV cache (see the module docstring)."""

    def __init__(self, spec: LlamaSpec, weights: dict[str, torch.Tensor], *, max_batch_size: int,
                 context_length: int, device: torch.device, dtype: torch.dtype):
        if max_batch_size < 1 or context_length < 2:
            raise ValueError("max_batch_size must be >= 1 and context_length >= 2")
        if context_length > spec.max_position_embeddings:
            raise CheckpointError(f"context_length {context_length} is beyond the checkpoint's "
                                  f"max_position_embeddings {spec.max_position_embeddings}")
        self.spec = spec
        self.max_batch_size = max_batch_size
        self.context_length = context_length
        self.device = device
        self.dtype = dtype

        def take(name: str, optional: bool = False) -> torch.Tensor | None:
            tensor = weights.get(name)
            if tensor is None:
                if optional:
                    return None
                raise CheckpointError(f"the checkpoint lacks weight {name!r}")
            return tensor.to(device=device, dtype=dtype)

        def cat(*names: str, optional: bool = False) -> torch.Tensor | None:
            parts = [take(name, optional) for name in names]
            if any(part is None for part in parts):
                return None
            return torch.cat(parts, dim=0).contiguous()

        self.embed = take("model.embed_tokens.weight")
        lm_head = take("lm_head.weight", optional=spec.tie_word_embeddings)
        self.lm_head = self.embed if lm_head is None else lm_head
        self.norm = take("model.norm.weight")
        self.layers: list[_Layer] = []
        for i in range(spec.num_layers):
            p = f"model.layers.{i}."
            attn = [f"{p}self_attn.{x}_proj" for x in "qkv"]
            mlp = [f"{p}mlp.gate_proj", f"{p}mlp.up_proj"]
            self.layers.append(_Layer(
                attn_norm=take(f"{p}input_layernorm.weight"),
                qkv=cat(*(f"{name}.weight" for name in attn)),
                qkv_bias=cat(*(f"{name}.bias" for name in attn), optional=True),
                o=take(f"{p}self_attn.o_proj.weight"),
                o_bias=take(f"{p}self_attn.o_proj.bias", optional=True),
                mlp_norm=take(f"{p}post_attention_layernorm.weight"),
                gate_up=cat(*(f"{name}.weight" for name in mlp)),
                gate_up_bias=cat(*(f"{name}.bias" for name in mlp), optional=True),
                down=take(f"{p}mlp.down_proj.weight"),
                down_bias=take(f"{p}mlp.down_proj.bias", optional=True),
            ))

        # RoPE tables for every position the cache can hold, as transformers computes them.
        dim = spec.head_dim
        inv_freq = 1.0 / (spec.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        freqs = torch.arange(context_length, dtype=torch.float32)[:, None] * inv_freq[None, :]
        table = torch.cat((freqs, freqs), dim=-1)
        self._cos = table.cos().to(device=device, dtype=dtype)
        self._sin = table.sin().to(device=device, dtype=dtype)

        shape = (spec.num_layers, max_batch_size, spec.num_kv_heads, context_length, spec.head_dim)
        self.k_cache = torch.zeros(shape, device=device, dtype=dtype)
        self.v_cache = torch.zeros(shape, device=device, dtype=dtype)
        self._positions = torch.arange(context_length, device=device)

    @classmethod
    def load(cls, checkpoint_dir: Path, *, max_batch_size: int, context_length: int,
             device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32) -> LlamaModel:
        checkpoint_dir = Path(checkpoint_dir)
        spec = LlamaSpec.from_config(json.loads((checkpoint_dir / "config.json").read_text()))
        return cls(spec, _read_weights(checkpoint_dir), max_batch_size=max_batch_size,
                   context_length=context_length, device=device, dtype=dtype)

    @property
    def cache_bytes(self) -> int:
        return 2 * self.k_cache.numel() * self.k_cache.element_size()

    # -- entry points -----------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, slot_ids: Sequence[int], token_lists: Sequence[Sequence[int]]) -> torch.Tensor:
        batch = len(slot_ids)
        if batch == 0 or batch != len(token_lists):
            raise ValueError("prefill needs one token list per slot, and at least one")
        lengths = [len(tokens) for tokens in token_lists]
        if min(lengths) < 1 or max(lengths) > self.context_length:
            raise ValueError(f"prompt lengths must be 1..{self.context_length}, got {lengths}")
        self._check_slots(slot_ids)
        width = max(lengths)
        ids = torch.zeros((batch, width), dtype=torch.long)
        for row, tokens in enumerate(token_lists):
            ids[row, : len(tokens)] = torch.as_tensor(tokens, dtype=torch.long)
        ids = ids.to(self.device)
        cos, sin = self._cos[:width], self._sin[:width]  # broadcast over [B, heads, T, D]
        spec = self.spec

        x = F.embedding(ids, self.embed)
        for index, layer in enumerate(self.layers):
            q, k, v = self._qkv(x, layer, cos, sin)
            for row, slot in enumerate(slot_ids):  # a copy per row: far cheaper than an index_put
                self.k_cache[index, slot, :, : lengths[row]].copy_(k[row, :, : lengths[row]])
                self.v_cache[index, slot, :, : lengths[row]].copy_(v[row, :, : lengths[row]])
            # Causal attention alone is enough: a real query never sees a later (padding) key.
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                  enable_gqa=spec.num_kv_heads != spec.num_heads)
            x = self._finish_layer(x, attn, layer)
        last = torch.as_tensor([n - 1 for n in lengths], device=self.device)
        return self._logits(x[torch.arange(batch, device=self.device), last])

    @torch.inference_mode()
    def decode(self, slot_ids: Sequence[int], last_tokens: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
        batch = len(slot_ids)
        if batch == 0 or not batch == len(last_tokens) == len(positions):
            raise ValueError("decode needs one token and one position per slot, and at least one")
        if min(positions) < 0 or max(positions) >= self.context_length:
            raise ValueError(f"positions must be 0..{self.context_length - 1}, got {list(positions)}")
        self._check_slots(slot_ids)
        spec = self.spec
        length = max(positions) + 1
        slots = torch.as_tensor(list(slot_ids), device=self.device)
        pos = torch.as_tensor(list(positions), device=self.device)
        tokens = torch.as_tensor(list(last_tokens), dtype=torch.long, device=self.device)
        cos = self._cos[pos][:, None, None, :]
        sin = self._sin[pos][:, None, None, :]
        # Where each row's new K/V go in one layer's cache seen as [slots * kv_heads * len, D].
        heads = torch.arange(spec.num_kv_heads, device=self.device)
        cells = ((slots[:, None] * spec.num_kv_heads + heads[None, :]) * self.context_length + pos[:, None]).reshape(-1)

        # Attention reads the cache through a view of the slot range [first, first + span): no
        # copy of K/V. Rows of that range that are not decoding (a free slot between two busy
        # ones) get a zero query that sees position 0 only; their output is dropped.
        first = min(slot_ids)
        span = max(slot_ids) - first + 1
        packed = span == batch and list(slot_ids) == list(range(first, first + span))
        mask: torch.Tensor | None = (self._positions[:length][None, :] <= pos[:, None])[:, None, None, :]
        rows = slots - first
        if not packed:
            full = torch.zeros((span, 1, 1, length), dtype=torch.bool, device=self.device)
            full[..., 0] = True
            full[rows] = mask
            mask = full
        elif min(positions) == length - 1:
            mask = None  # every row sees the whole range

        x = F.embedding(tokens, self.embed)[:, None, :]
        gqa = spec.num_kv_heads != spec.num_heads
        for index, layer in enumerate(self.layers):
            q, k, v = self._qkv(x, layer, cos, sin)
            self.k_cache[index].view(-1, spec.head_dim).index_copy_(0, cells, k.reshape(-1, spec.head_dim))
            self.v_cache[index].view(-1, spec.head_dim).index_copy_(0, cells, v.reshape(-1, spec.head_dim))
            keys = self.k_cache[index, first:first + span, :, :length]
            values = self.v_cache[index, first:first + span, :, :length]
            if packed:
                attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=gqa)
            else:
                query = q.new_zeros((span, *q.shape[1:]))
                query[rows] = q
                attn = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, enable_gqa=gqa)[rows]
            x = self._finish_layer(x, attn, layer)
        return self._logits(x[:, 0])

    # -- pieces -----------------------------------------------------------------------------

    def _check_slots(self, slot_ids: Sequence[int]) -> None:
        if len(set(slot_ids)) != len(slot_ids) or min(slot_ids) < 0 or max(slot_ids) >= self.max_batch_size:
            raise ValueError(f"slot ids must be distinct, 0..{self.max_batch_size - 1}; got {list(slot_ids)}")

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        hidden = x.to(torch.float32)
        hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.spec.rms_norm_eps)
        return weight * hidden.to(x.dtype)

    def _qkv(self, x: torch.Tensor, layer: _Layer, cos: torch.Tensor, sin: torch.Tensor):
        """q ``[B, heads, T, D]``, k and v ``[B, kv_heads, T, D]``, RoPE applied."""
        spec = self.spec
        batch, width, _ = x.shape
        qkv = F.linear(self._rms_norm(x, layer.attn_norm), layer.qkv, layer.qkv_bias)
        q, k, v = qkv.split([spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim,
                             spec.num_kv_heads * spec.head_dim], dim=-1)
        q = q.view(batch, width, spec.num_heads, spec.head_dim).transpose(1, 2)
        k = k.view(batch, width, spec.num_kv_heads, spec.head_dim).transpose(1, 2)
        v = v.view(batch, width, spec.num_kv_heads, spec.head_dim).transpose(1, 2)
        return _rope(q, cos, sin), _rope(k, cos, sin), v

    def _finish_layer(self, x: torch.Tensor, attn: torch.Tensor, layer: _Layer) -> torch.Tensor:
        """Output projection and residual, then the SiLU MLP and residual."""
        batch, width, _ = x.shape
        attn = attn.transpose(1, 2).reshape(batch, width, self.spec.num_heads * self.spec.head_dim)
        x = x + F.linear(attn, layer.o, layer.o_bias)
        gate, up = F.linear(self._rms_norm(x, layer.mlp_norm), layer.gate_up, layer.gate_up_bias).chunk(2, dim=-1)
        return x + F.linear(F.silu(gate) * up, layer.down, layer.down_bias)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self._rms_norm(hidden, self.norm), self.lm_head).float()


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin

