"""CUDA: FP16 / BF16 variants of the reference model (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.cloud_fakes import embedding_of, text_request

TEXTS = ["The cloud worker runs on a GPU.", "hi", "A longer sentence to pad the batch a little more than the others."]


@pytest.fixture(scope="module")
def fp32_reference():
    from cloud_worker.config import RuntimeSettings
    from cloud_worker.reference import ReferenceRuntime

    runtime = ReferenceRuntime(settings=RuntimeSettings(device="cpu", warmup=False))
    runtime.load()
    yield runtime.embed(TEXTS)
    runtime.close()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp16", "bf16", "auto"])
async def test_half_precision_on_cuda_is_close_to_fp32_and_says_so(start_worker, connect, fp32_reference, dtype):
    import torch

    if dtype == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    worker = await start_worker(runtime={"device": "cuda", "dtype": dtype})
    response = await connect(worker).ModelInfer(text_request(TEXTS))
    assert response.parameters["variant"].string_param == ("fp16" if dtype == "auto" else dtype)
    vectors = embedding_of(response)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    cosine = np.sum(vectors * fp32_reference, axis=1)
    assert np.all(cosine > (0.995 if dtype == "bf16" else 0.999)), cosine


@pytest.mark.gpu
def test_auto_device_picks_cuda():
    from cloud_worker.device import resolve_device, resolve_dtype

    device = resolve_device("auto")
    assert device.type == "cuda"
    assert resolve_dtype("auto", device)[1] == "fp16"


def test_asking_for_cuda_without_it_names_the_field():
    import torch

    from cloud_worker.device import resolve_device
    from edgecloud.config import ConfigError

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError) as info:
        resolve_device("cuda")
    assert [path for path, _ in info.value.errors] == ["runtime.device"]
