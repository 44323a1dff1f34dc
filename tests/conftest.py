"""Shared fixtures: fresh random generators and the CUDA marker policy.

Tests marked ``cuda`` are skipped when ``_l2s`` has no usable CUDA device; with L2S_REQUIRE_CUDA=1
(set it on GPU machines) such a skip becomes a failure, so a GPU run cannot silently test nothing.
"""
import os

import numpy as np
import pytest

import _l2s


def pytest_runtest_setup(item):
    if "cuda" not in item.keywords or _l2s.cuda_available():
        return
    why = (f"needs a CUDA device and a CUDA build of _l2s (cuda_compiled={_l2s.cuda_compiled()}, "
           f"devices={_l2s.cuda_device_count()})")
    if os.environ.get("L2S_REQUIRE_CUDA") == "1":
        pytest.fail("L2S_REQUIRE_CUDA=1 but the test cannot run: " + why, pytrace=False)
    pytest.skip(why)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: fresh inputs per test, reproducible per run."""
    seed = abs(hash(request.node.nodeid)) % (2 ** 32) if os.environ.get("L2S_FRESH_SEEDS") else \
        sum(map(ord, request.node.nodeid))
    return np.random.default_rng(seed)
