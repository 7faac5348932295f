"""Fixtures every test package shares: the built reference model, free ports, the outside
``tritonclient`` (run from its own virtual environment), and the GPU marker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

# No per-example time limit: property tests check results, and a busy CI machine may stop the
# process for longer than Hypothesis' 200 ms default deadline at any moment.
hypothesis_settings.register_profile("edgecloud", deadline=None)
hypothesis_settings.load_profile("edgecloud")

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = Path(os.environ.get("EDGECLOUD_TEST_MODEL_DIR", REPO_ROOT / "models" / "all-MiniLM-L6-v2"))
GENERATIVE_MODEL_DIR = Path(os.environ.get("EDGECLOUD_TEST_GENERATIVE_MODEL_DIR",
                                         REPO_ROOT / "models" / "smollm2-135m-instruct"))
IMAGE_MODEL_DIR = Path(os.environ.get("EDGECLOUD_TEST_IMAGE_MODEL_DIR", REPO_ROOT / "models" / "efficientnet-lite0"))
TRITON_PYTHON = REPO_ROOT / ".venv-triton" / "bin" / "python"
TRITON_CHECK = REPO_ROOT / "tests" / "outside_clients" / "triton_check.py"
TRITON_IMAGE_CHECK = REPO_ROOT / "tests" / "outside_clients" / "triton_image_check.py"
TRITON_STREAM_CHECK = REPO_ROOT / "tests" / "outside_clients" / "triton_stream_check.py"


def uncollected_test_files(config, items) -> list[str]:
    """Test files under tests/ that a run of the whole suite did not collect (a folder pytest skips
    by default, such as one named ``build``, hid a whole package of tests once). Empty when the run
    names only part of the suite, or deselects by keyword or marker."""
    tests_root = REPO_ROOT / "tests"
    partial = config.option.keyword or config.option.markexpr or config.getoption("deselect", None)
    if [Path(arg).resolve() for arg in config.args] != [tests_root] or partial:
        return []
    collected = {Path(str(item.path)).resolve() for item in items}
    on_disk = {path.resolve() for path in tests_root.rglob("test_*.py")}
    return sorted(str(path.relative_to(REPO_ROOT)) for path in on_disk - collected)


def pytest_collection_modifyitems(config, items):
    missing = uncollected_test_files(config, items)
    if missing:
        raise pytest.UsageError(f"test files the whole-suite run did not collect: {missing}")
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return  # importing torch costs seconds; only pay it when GPU tests were collected
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The built reference model directory (built once if missing)."""
    if not (MODEL_DIR / "model.json").exists():
        from edge_agent.build.pipeline import build_model_dir

        build_model_dir(MODEL_DIR)
    return MODEL_DIR


@pytest.fixture(scope="session")
def generative_model_dir() -> Path:
    """The built generative model directory (edge INT4 + cloud checkpoint; built once if missing)."""
    if not (GENERATIVE_MODEL_DIR / "model.json").exists():
        from edge_agent.build.generative import build_generative_dir

        build_generative_dir(GENERATIVE_MODEL_DIR)
    return GENERATIVE_MODEL_DIR


@pytest.fixture(scope="session")
def image_model_dir() -> Path:
    """The built image classifier directory (edge INT8 + FP32; built once if missing)."""
    if not (IMAGE_MODEL_DIR / "model.json").exists():
        from edge_agent.build.image import build_image_dir

        build_image_dir(IMAGE_MODEL_DIR)
    return IMAGE_MODEL_DIR


@pytest.fixture(scope="session")
def sample_photos() -> dict[str, bytes]:
    """scikit-image's bundled photographs as PNG bytes, by name (cat, coffee, astronaut, ...)."""
    from edge_agent.build.image_corpus import encoded, source_photos

    import numpy as np

    names = ("cat", "coffee", "astronaut", "rocket", "motorcycle", "motorcycle_right")
    return {name: encoded(np.asarray(photo)) for name, photo in zip(names, source_photos())}


@pytest.fixture
def tritonclient_image_check(tmp_path):
    """Classify one encoded image (and its prepared pixels) with the unmodified tritonclient;
    returns what it saw as a dict."""
    if not TRITON_PYTHON.exists():
        pytest.fail("the tritonclient environment is missing: run `make setup` (creates .venv-triton)")

    def run(protocol: str, url: str, model: str, image: bytes, *, class_count: int = 3,
            timeout: float = 60.0) -> dict:
        import numpy as np

        from edgecloud.images import decode_image

        image_file, pixels_file = tmp_path / "image.bin", tmp_path / "pixels.npy"
        image_file.write_bytes(image)
        np.save(pixels_file, decode_image(image, "image")[None])
        proc = subprocess.run(
            [str(TRITON_PYTHON), str(TRITON_IMAGE_CHECK), protocol, "--url", url, "--model", model,
             "--image", str(image_file), "--pixels", str(pixels_file), "--class-count", str(class_count)],
            capture_output=True, text=True, timeout=timeout, cwd="/",
        )
        if proc.returncode != 0:
            raise AssertionError(f"tritonclient failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout)

    return run


@pytest.fixture
def tritonclient_stream_check():
    """Run the unmodified tritonclient's streaming API against a generative model; returns what it
    saw as a dict."""
    if not TRITON_PYTHON.exists():
        pytest.fail("the tritonclient environment is missing: run `make setup` (creates .venv-triton)")

    def run(url: str, model: str, prompt: str, *extra: str, timeout: float = 120.0) -> dict:
        proc = subprocess.run(
            [str(TRITON_PYTHON), str(TRITON_STREAM_CHECK), "--url", url, "--model", model, "--prompt", prompt,
             *extra],
            capture_output=True, text=True, timeout=timeout, cwd="/",
        )
        if proc.returncode != 0:
            raise AssertionError(f"tritonclient failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout)

    return run


@pytest.fixture(scope="session")
def edge_agent_session(model_dir):
    """One loaded INT8 ``EdgeAgent`` shared by tests that only read from it."""
    from edge_agent.agent import EdgeAgent

    with EdgeAgent.from_model_dir(model_dir, threads=2) as agent:
        yield agent


@pytest.fixture
def tritonclient_check():
    """Run the unmodified tritonclient against a server; returns what it saw as a dict."""
    if not TRITON_PYTHON.exists():
        pytest.fail("the tritonclient environment is missing: run `make setup` (creates .venv-triton)")

    def run(protocol: str, url: str, model: str, *extra: str, timeout: float = 60.0) -> dict:
        proc = subprocess.run(
            [str(TRITON_PYTHON), str(TRITON_CHECK), protocol, "--url", url, "--model", model, *extra],
            capture_output=True, text=True, timeout=timeout, cwd="/",
        )
        if proc.returncode != 0:
            raise AssertionError(f"tritonclient failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout)

    return run


@pytest.fixture
def python_exe() -> str:
    return sys.executable
