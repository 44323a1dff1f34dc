"""csrc/latent.c: normalised and plain updates, per-sample NaN/inf guard, half dtypes."""
import numpy as np
import pytest
import torch

import l2s


def test_normalized_update_matches_reference(rng):
    z = rng.standard_normal((3, 4, 8, 8)).astype(np.float32)
    g = rng.standard_normal(z.shape).astype(np.float32)
    want = z.astype(np.float64) - 0.5 * g / np.linalg.norm(g.reshape(3, -1).astype(np.float64), axis=1)[:, None, None, None]
    norms = l2s.latent_update(z, g, 0.5)
    np.testing.assert_allclose(z, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norms, np.linalg.norm(g.reshape(3, -1), axis=1), rtol=1e-5)


def test_plain_update(rng):
    z = rng.standard_normal((2, 5)).astype(np.float32)
    g = rng.standard_normal((2, 5)).astype(np.float32)
    want = z - 7.5 * g
    l2s.latent_update(z, g, 7.5, normalize=False)
    np.testing.assert_allclose(z, want, rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_gradient_leaves_that_sample_untouched(rng, bad):
    z = rng.standard_normal((3, 10)).astype(np.float32)
    g = rng.standard_normal((3, 10)).astype(np.float32)
    g[1, 4] = bad
    z0 = z.copy()
    norms = l2s.latent_update(z, g, 0.1)
    np.testing.assert_array_equal(z[1], z0[1])
    assert np.isnan(norms[1]) and np.isfinite(norms[[0, 2]]).all()
    assert not np.array_equal(z[0], z0[0]) and not np.array_equal(z[2], z0[2])


def test_zero_gradient_is_a_no_op():
    z = np.ones((1, 4), np.float32)
    norms = l2s.latent_update(z, np.zeros_like(z), 1.0)
    assert norms[0] == 0 and (z == 1).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_latents(rng, dtype):
    z = torch.from_numpy(rng.standard_normal((2, 64)).astype(np.float32)).to(dtype)
    g = torch.from_numpy(rng.standard_normal((2, 64)).astype(np.float32)).to(dtype)
    want = (z.double() - 0.3 * g.double() / g.double().norm(dim=1, keepdim=True)).to(dtype)
    l2s.latent_update(z, g, 0.3)
    assert z.dtype == dtype
    np.testing.assert_allclose(z.double().numpy(), want.double().numpy(), rtol=1e-2, atol=1e-2)
    assert (z.double() - want.double()).abs().max() <= 2 * (want.double().abs().max() * 2 ** -7)


def test_refuses_a_latent_that_requires_grad():
    z = torch.zeros(1, 3, requires_grad=True)
    with pytest.raises(ValueError, match="z:"):
        l2s.latent_update(z, torch.ones(1, 3), 1.0)
