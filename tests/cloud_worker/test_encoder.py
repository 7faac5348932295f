"""The scripted reference encoder (``cloud_worker.encoder``) against the eager ``transformers`` model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cloud_worker.config import RuntimeSettings
from cloud_worker.encoder import script_encoder, supports
from cloud_worker.reference import ReferenceRuntime, mean_pool_normalize

TEXTS = ["hi", "The cloud worker answers requests within a few milliseconds.", "Ünïcode テキスト 混合 🙂",
         "a much longer sentence " * 12, "x", "Our gateway keeps latency low during the busy evening."]


def eager(model, ids, mask, types) -> torch.Tensor:
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        return mean_pool_normalize(hidden, mask)


def batch(tokenizer, texts):
    encoded = tokenizer.encode(texts)
    return tuple(torch.from_numpy(encoded[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))


def test_the_served_runtime_uses_the_scripted_encoder(reference_runtime):
    assert reference_runtime.scripted


@pytest.mark.parametrize("rows", [1, 2, len(TEXTS), 4 * len(TEXTS)])
def test_scripted_equals_eager_on_padded_batches(reference_runtime, rows):
    """Mixed lengths pad every row but the longest: the mask must reach attention and pooling."""
    texts = [TEXTS[i % len(TEXTS)] + " " * (i // len(TEXTS)) for i in range(rows)]
    ids, mask, types = batch(reference_runtime.tokenizer, texts)
    if rows > 1:
        assert int(mask.sum(1).min()) < ids.shape[1], "the batch should contain padding"
    expected = eager(reference_runtime._model, ids, mask, types)
    with torch.inference_mode():
        for _ in range(3):  # the profiling executor changes plans over the first calls
            got = reference_runtime._scripted(ids, mask, types)
            assert got.dtype == torch.float32 and got.shape == (rows, 384)
            cosine = (got * expected).sum(dim=1)
            assert float(cosine.min()) >= 0.9999, cosine
            np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)


def test_scripted_follows_shape_changes_after_warm_up(reference_runtime):
    """Shapes it was not warmed with (odd rows, long sequences) still give the eager answer."""
    for rows, words in ((3, 40), (17, 5), (1, 120), (5, 1)):
        texts = [" ".join(["token"] * (words - i % 3)) for i in range(rows)]
        ids, mask, types = batch(reference_runtime.tokenizer, texts)
        with torch.inference_mode():
            got = reference_runtime._scripted(ids, mask, types)
        np.testing.assert_allclose(got.numpy(), eager(reference_runtime._model, ids, mask, types).numpy(),
                                   atol=1e-5)


def test_torchscript_and_eager_runtimes_embed_alike(reference_runtime):
    runtime = ReferenceRuntime(settings=RuntimeSettings(device="cpu", encoder="eager", warmup=False), max_rows=4)
    runtime._model, runtime._tokenizer = reference_runtime._model, reference_runtime.tokenizer
    assert not runtime.scripted
    np.testing.assert_allclose(reference_runtime.embed(TEXTS), runtime.embed(TEXTS), atol=1e-5)


def test_the_scripted_encoder_shares_the_model_s_weights(reference_runtime):
    scripted = dict(reference_runtime._scripted.named_parameters())
    eager_weight = reference_runtime._model.encoder.layer[0].attention.self.query.weight
    assert scripted["layers.0.query.weight"].data_ptr() == eager_weight.data_ptr()


def test_models_it_does_not_describe_stay_eager(reference_runtime):
    model = copy.deepcopy(reference_runtime._model)
    model.config.hidden_act = "gelu_new"
    assert "hidden_act" in supports(model)
    assert script_encoder(model) is None
    model.config.hidden_act = "gelu"
    model.config.position_embedding_type = "relative_key"
    assert script_encoder(model) is None
    model.config.position_embedding_type = "absolute"
    assert supports(model) is None
    model.train()
    assert script_encoder(model) is None


def test_the_encoder_setting_is_validated():
    from cloud_worker.config import load_cloud_config
    from edgecloud.config import ConfigError

    assert load_cloud_config(None, environ={}).runtime.encoder == "torchscript"
    env = "EDGECLOUD_CLOUD_RUNTIME__ENCODER"
    assert load_cloud_config(None, environ={env: "eager"}).runtime.encoder == "eager"
    with pytest.raises(ConfigError) as info:
        load_cloud_config(None, environ={env: "compiled"})
    assert [path for path, _ in info.value.errors] == ["runtime.encoder"]
