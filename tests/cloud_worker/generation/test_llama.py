"""The plain-torch Llama forward against transformers' ``LlamaForCausalLM`` (the reference), with
two slots of different lengths prefilled and decoded together."""

from __future__ import annotations

import pytest
import torch

from cloud_worker.generation.llama import CheckpointError, LlamaModel, LlamaSpec
from tests.cloud_worker.generation.conftest import build_checkpoint

ATOL = 1e-4


@pytest.fixture(scope="module")
def untied_checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("tiny-llama-untied"), tie=False, seed=1)


def reference(checkpoint):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()


def reference_greedy(model, prompt: list[int], steps: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy tokens and each step's logits from full forwards (no cache): the plainest reference."""
    tokens, logits = list(prompt), []
    with torch.no_grad():
        for _ in range(steps):
            last = model(torch.tensor([tokens])).logits[0, -1]
            logits.append(last)
            tokens.append(int(last.argmax()))
    return tokens[len(prompt):], logits


@pytest.mark.parametrize("which", ["tiny_checkpoint", "untied_checkpoint"])
def test_prefill_and_decode_match_transformers_for_two_slots_of_different_lengths(request, which):
    checkpoint = request.getfixturevalue(which)
    ref = reference(checkpoint)
    engine = LlamaModel.load(checkpoint, max_batch_size=4, context_length=64)
    prompts = {3: [5, 17, 42, 99, 7, 150, 33, 64, 12], 1: [200, 8, 71]}  # slots 3 and 1: not packed
    steps = 6
    expected = {slot: reference_greedy(ref, prompt, steps) for slot, prompt in prompts.items()}

    slots = list(prompts)
    logits = engine.prefill(slots, [prompts[s] for s in slots])
    assert logits.shape == (2, ref.config.vocab_size) and logits.dtype == torch.float32
    generated = {slot: [] for slot in slots}
    positions = {slot: len(prompts[slot]) for slot in slots}
    for step in range(steps):
        for row, slot in enumerate(slots):
            torch.testing.assert_close(logits[row], expected[slot][1][step], atol=ATOL, rtol=1e-4)
            generated[slot].append(int(logits[row].argmax()))
        if step == steps - 1:
            break
        logits = engine.decode(slots, [generated[s][-1] for s in slots], [positions[s] for s in slots])
        for slot in slots:
            positions[slot] += 1
    assert generated == {slot: expected[slot][0] for slot in slots}


def test_packed_slots_and_a_reused_slot_match_transformers(tiny_checkpoint):
    """Slots 0 and 1 decode through the packed path; then slot 0 is reused for a shorter prompt:
    what its earlier, longer occupant left in the cache must not leak."""
    ref = reference(tiny_checkpoint)
    engine = LlamaModel.load(tiny_checkpoint, max_batch_size=2, context_length=64)
    long_prompt, other, short = list(range(10, 40)), [9, 8, 7, 6], [77, 78]
    for slots, prompts in (([0, 1], [long_prompt, other]), ([0], [short])):
        tokens = [reference_greedy(ref, p, 4)[0] for p in prompts]
        logits = engine.prefill(slots, prompts)
        got = [[int(t)] for t in logits.argmax(-1)]
        for step in range(3):
            logits = engine.decode(slots, [g[-1] for g in got], [len(p) + step for p, _ in zip(prompts, got)])
            for row, expected in enumerate(prompts):
                ref_logits = reference_greedy(ref, expected + got[row], 1)[1][0]
                torch.testing.assert_close(logits[row], ref_logits, atol=ATOL, rtol=1e-4)
                got[row].append(int(logits[row].argmax()))
        assert got == tokens


def test_the_cache_is_allocated_once_for_every_slot(tiny_checkpoint):
    engine = LlamaModel.load(tiny_checkpoint, max_batch_size=3, context_length=32)
    assert engine.k_cache.shape == (2, 3, 2, 32, 16) == engine.v_cache.shape
    assert engine.cache_bytes == 2 * 2 * 3 * 2 * 32 * 16 * 4


def test_bad_calls_are_refused(tiny_checkpoint):
    engine = LlamaModel.load(tiny_checkpoint, max_batch_size=2, context_length=8)
    with pytest.raises(ValueError, match="slot ids"):
        engine.prefill([0, 0], [[1], [2]])
    with pytest.raises(ValueError, match="slot ids"):
        engine.decode([2], [1], [0])
    with pytest.raises(ValueError, match="positions"):
        engine.decode([0], [1], [8])
    with pytest.raises(ValueError, match="prompt lengths"):
        engine.prefill([0], [list(range(9))])


def test_spec_reads_either_rope_spelling_and_refuses_what_it_cannot_run():
    base = {"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2}
    assert LlamaSpec.from_config({**base, "rope_theta": 5e5}).rope_theta == 5e5
    assert LlamaSpec.from_config({**base, "rope_parameters": {"rope_type": "default", "rope_theta": 1e5}}).rope_theta == 1e5
    spec = LlamaSpec.from_config(base)
    assert (spec.num_kv_heads, spec.head_dim, spec.rope_theta) == (2, 4, 10000.0)
    with pytest.raises(CheckpointError, match="rope type 'llama3'"):
        LlamaSpec.from_config({**base, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    with pytest.raises(CheckpointError, match="model_type 'qwen2'"):
        LlamaSpec.from_config({**base, "model_type": "qwen2"})


def test_a_context_beyond_the_checkpoint_is_refused(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="max_position_embeddings"):
        LlamaModel.load(tiny_checkpoint, max_batch_size=1, context_length=4096)
