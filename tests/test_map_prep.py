"""csrc/map_prep.c: resize against torch's interpolate / adaptive pooling, normalize, and gradients."""
import numpy as np
import pytest
import torch

import l2s
from reference import normalize, resize_torch


SIZES = [((64, 64), (16, 16)), ((32, 32), (16, 16)), ((16, 16), (16, 16)), ((8, 8), (16, 16)),
         ((13, 7), (5, 9)), ((1, 1), (3, 3)), ((48, 24), (16, 16))]


@pytest.mark.parametrize("mode", ["bilinear", "area"])
@pytest.mark.parametrize("src,dst", SIZES)
def test_resize_matches_torch(rng, mode, src, dst):
    x = rng.random((2, 3) + src).astype(np.float32)
    got = l2s.resize_maps_forward(x, dst, mode)
    want = resize_torch(x, dst, mode).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["bilinear", "area"])
@pytest.mark.parametrize("src,dst", SIZES)
def test_resize_backward_is_the_adjoint(rng, mode, src, dst):
    """<R x, y> = <x, R^T y> and R^T matches torch autograd."""
    x = rng.standard_normal((2,) + src).astype(np.float32)
    y = rng.standard_normal((2,) + dst).astype(np.float32)
    rx = l2s.resize_maps_forward(x, dst, mode)
    rty = l2s.resize_maps_backward(y, src, mode)
    assert rty.shape == x.shape
    np.testing.assert_allclose((rx.astype(np.float64) * y).sum(), (x.astype(np.float64) * rty).sum(), rtol=1e-5, atol=1e-5)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    (resize_torch(xt, dst, mode) * torch.tensor(y, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(rty, xt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_resize_accumulate_averages_layers(rng):
    a = rng.random((1, 2, 32, 32)).astype(np.float32)
    b = rng.random((1, 2, 16, 16)).astype(np.float32)
    out = np.zeros((1, 2, 16, 16), np.float32)
    l2s.resize_maps_forward(a, 16, "area", out=out, weight=0.5, accumulate=True)
    l2s.resize_maps_forward(b, 16, "area", out=out, weight=0.5, accumulate=True)
    want = 0.5 * resize_torch(a, (16, 16), "area").numpy() + 0.5 * b
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    din = np.ones((1, 2, 32, 32), np.float32)
    l2s.resize_maps_backward(np.ones_like(out), (32, 32), "area", din=din, weight=0.5, accumulate=True)
    np.testing.assert_allclose(din, 1.0 + 0.5 / 4, rtol=1e-6)     # each input pixel feeds one output at 1/4


@pytest.mark.parametrize("mode", ["sum", "max"])
def test_normalize_forward_and_backward(rng, mode):
    x = rng.random((3, 2, 6, 6)).astype(np.float32) + 0.01
    eps = 1e-6
    y = l2s.normalize_maps_forward(x, mode, eps)
    np.testing.assert_allclose(y, normalize(x.reshape(3, 2, 36), mode, eps).numpy().reshape(x.shape), rtol=1e-6)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = l2s.normalize_maps_backward(x, dy, mode, eps)
    xt = torch.tensor(x.reshape(3, 2, 36), dtype=torch.float64, requires_grad=True)
    (normalize(xt, mode, eps) * torch.tensor(dy.reshape(3, 2, 36), dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(dx.reshape(3, 2, 36), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    # and a finite-difference directional derivative of the C op itself
    u = rng.standard_normal(x.shape)
    h = 1e-4
    f = lambda s: float((l2s.normalize_maps_forward((x + s * u).astype(np.float32), mode, eps).astype(np.float64) * dy).sum())
    fd = (f(h) - f(-h)) / (2 * h)
    assert abs(fd - float((dx * u).sum())) <= 1e-2 * max(1.0, abs(fd))


def test_normalize_map_dims(rng):
    x = rng.random((4, 10)).astype(np.float32)
    y = l2s.normalize_maps_forward(x, "sum", 0.0, map_dims=1)
    np.testing.assert_allclose(y.sum(1), 1.0, rtol=1e-6)
