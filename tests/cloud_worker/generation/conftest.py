"""Fixtures of the generation tests: a tiny random Llama checkpoint (HuggingFace format, with a
byte-level BPE ``tokenizer.json`` trained on the spot), engines over it, a fake clock, and an
engine wrapper that a test can pause between steps."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from cloud_worker.generation.llama import LlamaModel
from tests.support.virtual_clock import ManualClock

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2, as in SmolLM2
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? Paris is the capital of France.",
    "Continuous batching lets short requests finish while long ones run.",
    "Les élèves préfèrent le café crème à Noël. Über Straße, naïve façade, 東京 and emoji 🙂.",
    "user\nassistant\nHello there, how are you today?",
] * 4


def build_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.save(str(path / "tokenizer.json"))


def build_checkpoint(path: Path, *, tie: bool = True, seed: int = 0) -> Path:
    """A 2-layer GQA Llama (4 heads, 2 KV heads) saved as transformers would, with a tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    build_tokenizer(path)
    vocab = json.loads((path / "tokenizer.json").read_text())["model"]["vocab"]
    config = LlamaConfig(
        vocab_size=max(vocab.values()) + 1 + 7,  # a few ids the tokenizer never makes, like real checkpoints
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path)
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "unk_token": "<|endoftext|>"}))
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tokenizer(tiny_checkpoint):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tiny_checkpoint / "tokenizer.json"))


@pytest.fixture
def make_engine(tiny_checkpoint):
    """``make_engine(max_batch_size=4, context_length=256)`` -> a ``LlamaModel`` on the tiny checkpoint."""

    def make(max_batch_size: int = 4, context_length: int = 256) -> LlamaModel:
        return LlamaModel.load(tiny_checkpoint, max_batch_size=max_batch_size, context_length=context_length)

    return make


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


class PausableEngine:
    """Wraps an engine so that a test can act between two steps without sleeping: after
    ``pause(after=n)`` the next ``n`` engine calls go through and the one after blocks (``paused``
    is set) until ``allow(m)`` lets ``m`` more through, ``resume()`` lets everything through, or
    ``release_if()`` turns true."""

    def __init__(self, engine: LlamaModel):
        self.engine = engine
        self.max_batch_size = engine.max_batch_size
        self.context_length = engine.context_length
        self.device = engine.device
        self.paused = threading.Event()
        self.release_if = lambda: False
        self._changed = threading.Condition()
        self._allowed: int | None = None  # None: no limit
        self.calls: list[tuple[str, list[int]]] = []

    def pause(self, after: int = 0) -> None:
        with self._changed:
            self._allowed = after

    def allow(self, calls: int) -> None:
        with self._changed:
            self._allowed = calls
            self.paused.clear()
            self._changed.notify_all()

    def resume(self) -> None:
        with self._changed:
            self._allowed = None
            self.paused.clear()
            self._changed.notify_all()

    def _wait(self) -> None:
        with self._changed:
            for _ in range(3000):  # 30 s
                if self._allowed != 0 or self.release_if():
                    break
                self.paused.set()
                self._changed.wait(0.01)
            else:
                raise AssertionError("the test never resumed the engine")
            if self._allowed:
                self._allowed -= 1

    def prefill(self, slot_ids, token_lists):
        self._wait()
        self.calls.append(("prefill", list(slot_ids)))
        return self.engine.prefill(slot_ids, token_lists)

    def decode(self, slot_ids, last_tokens, positions):
        self._wait()
        self.calls.append(("decode", list(slot_ids)))
        return self.engine.decode(slot_ids, last_tokens, positions)


def stopping(batcher) -> bool:
    """True once ``batcher.stop()`` has begun."""
    return batcher._state.name == "STOPPED"
