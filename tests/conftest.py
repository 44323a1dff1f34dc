"""Shared fixtures: fresh random generators and the CUDA marker policy.

Tests marked ``cuda`` are skipped when ``l2s._C`` has no usable CUDA device; with L2S_REQUIRE_CUDA=1
(set it on GPU machines) such a skip becomes a failure, so a GPU run cannot silently test nothing.
"""
import os

import numpy as np
import pytest

from l2s import _C


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_runtest_setup(item):
    """A ``cuda`` test needs a CUDA build of l2s._C with a usable device AND a CUDA build of torch
    (the tests move data with torch): say which is missing, in the CUDA runtime's words."""
    if "cuda" not in item.keywords:
        return
    if _C.cuda_available() and _torch_cuda():
        return
    why = (f"needs a CUDA device, a CUDA build of l2s._C and a CUDA build of torch (l2s._C: "
           f"cuda_compiled={_C.cuda_compiled()}, {_C.cuda_status()}; torch cuda={_torch_cuda()})")
    if os.environ.get("L2S_REQUIRE_CUDA") == "1":
        pytest.fail("L2S_REQUIRE_CUDA=1 but the test cannot run: " + why, pytrace=False)
    pytest.skip(why)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: fresh inputs per test, reproducible per run."""
    seed = abs(hash(request.node.nodeid)) % (2 ** 32) if os.environ.get("L2S_FRESH_SEEDS") else \
        sum(map(ord, request.node.nodeid))
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    """A tiny random-weight StableDiffusionPipeline (l2s.testing), one per test module."""
    from l2s.testing import tiny_sd_pipeline
    return tiny_sd_pipeline(tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="module")
def classifier():
    """Trained on synthetic blob pairs at 8x8 (the tiny UNet's maps are 16x16 and 8x8)."""
    from l2s.classifier import ClassifierConfig, RelationClassifier
    from l2s.demo import train
    model = RelationClassifier(ClassifierConfig(map_size=8, hidden1=32, hidden2=16, n_steps=10, step_dim=4), seed=0)
    train(model, 2048, 4, 64, seed=0)
    return model
