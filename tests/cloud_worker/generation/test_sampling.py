"""Per-row sampling: greedy rows, temperature, top-k, top-p, and seeds independent of batch-mates."""

from __future__ import annotations

import pytest
import torch

from cloud_worker.generation.sampling import request_generator, sample
from edgecloud.generation import SamplingParams

CPU = torch.device("cpu")
GREEDY = SamplingParams(temperature=0.0)


def draw(logits_row: torch.Tensor, params: SamplingParams, n: int, seed: int = 0) -> list[int]:
    generator = request_generator(SamplingParams(**{**_fields(params), "seed": seed}), CPU)
    return [sample(logits_row[None], [params], [generator])[0] for _ in range(n)]


def _fields(params: SamplingParams) -> dict:
    return {name: getattr(params, name) for name in SamplingParams.__slots__}


def test_greedy_rows_take_the_argmax_and_need_no_generator():
    logits = torch.tensor([[0.1, 3.0, 0.2], [5.0, 0.0, 4.9]])
    assert sample(logits, [GREEDY, SamplingParams(top_k=1, temperature=1.5)], [None, None]) == [1, 0]
    assert request_generator(GREEDY, CPU) is None
    assert request_generator(SamplingParams(top_k=1), CPU) is None


def test_top_k_keeps_only_the_k_most_likely():
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0, 2.5])
    seen = set(draw(logits, SamplingParams(temperature=1.0, top_k=2), 200))
    assert seen == {3, 4}


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    assert set(draw(logits, SamplingParams(temperature=1.0, top_p=0.75), 300)) == {0, 1}
    assert set(draw(logits, SamplingParams(temperature=1.0, top_p=0.81), 400)) == {0, 1, 2}
    assert set(draw(logits, SamplingParams(temperature=1.0, top_p=0.01), 50)) == {0}  # the top token always stays


def test_temperature_sharpens_and_flattens():
    logits = torch.tensor([0.0, 1.0])
    cold = draw(logits, SamplingParams(temperature=0.1), 200)
    hot = draw(logits, SamplingParams(temperature=2.0), 2000)
    assert cold.count(1) >= 199  # p(1) = 1 - 4.5e-5
    assert 0.55 < hot.count(1) / len(hot) < 0.70  # p(1) = sigmoid(0.5) = 0.62


def test_a_seeded_row_draws_the_same_whatever_shares_its_batch():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    seeded = SamplingParams(temperature=1.0, top_p=0.9, top_k=20, seed=7)
    alone = draw(logits[2], seeded, 20, seed=7)
    mates = [SamplingParams(temperature=0.7, seed=1), GREEDY, seeded, SamplingParams(temperature=1.3, top_k=5)]
    generators = [request_generator(p, CPU) for p in mates]
    together = [sample(logits, mates, generators)[2] for _ in range(20)]
    assert together == alone
    assert draw(logits[2], seeded, 20, seed=8) != alone


def test_unseeded_requests_get_their_own_random_generators():
    params = SamplingParams(temperature=1.0)
    a, b = request_generator(params, CPU), request_generator(params, CPU)
    assert a is not None and b is not None and a.initial_seed() != b.initial_seed()


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError):
        sample(torch.zeros(2, 3), [GREEDY], [None])
    with pytest.raises(ValueError, match="no generator"):
        sample(torch.zeros(1, 3), [SamplingParams(temperature=1.0)], [None])
