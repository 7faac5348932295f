"""The evaluation corpus: size, variety, determinism, and the fixed latency inputs."""

from __future__ import annotations

import pytest

from edge_agent.build.corpus import (
    BENCH_SENTENCE,
    bench_batch,
    calibration_corpus,
    calibration_indices,
    evaluation_corpus,
)


def test_at_least_200_unique_sentences_and_deterministic():
    corpus = evaluation_corpus()
    assert len(corpus) >= 200
    assert len(set(corpus)) == len(corpus)
    assert corpus == evaluation_corpus()


def test_contains_very_short_inputs_and_punctuation():
    corpus = set(evaluation_corpus())
    assert {"ok", "?", "hi", "!"} <= corpus
    assert any(s.strip() and not any(c.isalnum() for c in s) for s in corpus)
    assert any(any(c.isdigit() for c in s) for s in corpus)


def test_contains_non_latin_scripts():
    text = "".join(evaluation_corpus())
    for sample in ("東京", "我", "Привет", "مرحبا", "नमस्ते", "서울"):
        assert sample in text


@pytest.fixture(scope="module")
def token_counts():
    from edge_agent.build.runners import default_tokenizer

    return default_tokenizer().token_counts(evaluation_corpus())


def test_lengths_span_short_to_over_128_tokens(token_counts):
    assert min(token_counts) <= 3
    assert sum(100 <= n <= 128 for n in token_counts) + sum(n > 128 for n in token_counts) >= 10
    assert max(token_counts) >= 256  # one passage is truncated at max_sequence_length


def test_calibration_subset_is_spread_and_covers_short_and_long(token_counts):
    indices = calibration_indices(48)
    assert len(indices) == len(set(indices)) == 48
    assert indices == sorted(indices)
    counts = [token_counts[i] for i in indices]
    assert min(counts) <= 4 and max(counts) > 64
    assert calibration_corpus(48) == [evaluation_corpus()[i] for i in indices]


def test_bench_inputs():
    from edge_agent.build.runners import default_tokenizer

    tokenizer = default_tokenizer()
    assert tokenizer.token_counts([BENCH_SENTENCE]) == [13]
    batch = bench_batch(32)
    assert len(batch) == 32
    assert all(6 <= n <= 24 for n in tokenizer.token_counts(batch))
