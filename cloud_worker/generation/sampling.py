"""Picking the next token of each row from its logits, each row by its own ``SamplingParams``.

Contract: ``sample(logits, params, generators)`` returns one token id per row of ``logits``
(``[B, vocab]``, float). A greedy row (``temperature`` 0 or ``top_k`` 1) takes the arg-max. Any other
row divides its logits by ``temperature``, keeps its ``top_k`` most likely tokens (0: all), then
the smallest set of most likely tokens whose probability reaches ``top_p`` (the most likely token
always stays), and draws from what is left with the row's own ``torch.Generator``. A row's draw
depends only on its logits and its generator, so a request seeded with ``seed`` gets the same
tokens whatever else shares its batch. ``request_generator`` makes that generator: seeded from
``seed``, or from the OS when there is none.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import torch

from edgecloud.generation import SamplingParams

__all__ = ["request_generator", "sample"]


def request_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    """The generator one request samples with for its whole life (``None`` when it is greedy)."""
    if params.greedy:
        return None
    seed = params.seed if params.seed is not None else secrets.randbits(63)
    return torch.Generator(device=device).manual_seed(seed)


def sample(logits: torch.Tensor, params: Sequence[SamplingParams],
           generators: Sequence[torch.Generator | None]) -> list[int]:
    if logits.dim() != 2 or logits.shape[0] != len(params) or len(params) != len(generators):
        raise ValueError("sample needs logits [B, vocab] and one params and one generator per row")
    chosen = logits.argmax(dim=-1).tolist()
    drawn = [row for row, p in enumerate(params) if not p.greedy]
    if not drawn:
        return chosen
    index = torch.as_tensor(drawn, device=logits.device)
    rows = [params[row] for row in drawn]
    probs = _filtered_probs(logits.index_select(0, index).float(), rows)
    for i, row in enumerate(drawn):
        generator = generators[row]
        if generator is None:
            raise ValueError(f"row {row} samples but has no generator")
        chosen[row] = int(torch.multinomial(probs[i], 1, generator=generator))
    return chosen


def _filtered_probs(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """Probabilities after temperature, top-k and top-p, row by row (``[R, vocab]``)."""
    device = logits.device
    vocab = logits.shape[-1]
    temperature = torch.as_tensor([p.temperature for p in params], dtype=logits.dtype, device=device)
    logits = logits / temperature[:, None]
    if all((p.top_k == 0 or p.top_k >= vocab) and p.top_p >= 1.0 for p in params):
        return torch.softmax(logits, dim=-1)
    ordered, order = logits.sort(dim=-1, descending=True)
    rank = torch.arange(vocab, device=device)[None, :]
    top_k = torch.as_tensor([p.top_k if 0 < p.top_k < vocab else vocab for p in params], device=device)
    drop = rank >= top_k[:, None]
    ordered = ordered.masked_fill(drop, float("-inf"))
    sorted_probs = torch.softmax(ordered, dim=-1)
    top_p = torch.as_tensor([p.top_p for p in params], dtype=sorted_probs.dtype, device=device)
    # Drop a token when the tokens ranked above it already reach top_p; rank 0 always stays.
    before = sorted_probs.cumsum(dim=-1) - sorted_probs
    drop |= (before >= top_p[:, None]) & (rank > 0)
    ordered = ordered.masked_fill(drop, float("-inf"))
    filtered = torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)
    return torch.softmax(filtered, dim=-1)
