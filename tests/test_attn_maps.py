"""csrc/attn_maps.c against float64 references, finite differences, dtypes and strides."""
import numpy as np
import pytest
import torch

import l2s
from reference import attn_maps, attn_maps_torch


def _inputs(rng, B=2, H=3, N=20, L=9, D=8, dtype=np.float32):
    q = rng.standard_normal((B, H, N, D)).astype(dtype)
    k = rng.standard_normal((B, H, L, D)).astype(dtype)
    return q, k


@pytest.mark.parametrize("shape", [(1, 1, 1, 2, 1), (2, 3, 20, 9, 8), (1, 8, 64, 77, 40), (3, 2, 17, 5, 130)])
def test_forward_matches_float64(rng, shape):
    B, H, N, L, D = shape
    q, k = _inputs(rng, B, H, N, L, D)
    tokens = [[0], [L - 1, 0]] if L > 1 else [[0]]
    scale = D ** -0.5
    got = l2s.attn_maps_forward(q, k, tokens, scale)
    want = attn_maps(q.astype(np.float64), k.astype(np.float64), l2s.token_table(tokens), scale)
    assert got.dtype == np.float32 and got.shape == (B, len(tokens), N)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_all_tokens_sum_to_one(rng):
    q, k = _inputs(rng, L=6)
    maps = l2s.attn_maps_forward(q, k, [list(range(6))])
    np.testing.assert_allclose(maps, 1.0, rtol=1e-5)


def test_wide_logits_underflow_cleanly(rng):
    """Logits spanning hundreds: most exponents clamp/underflow in the vectorised exp."""
    q, k = _inputs(rng, B=1, H=2, N=13, L=21, D=16)
    tokens = [[0], [5, 20]]
    got = l2s.attn_maps_forward(q, k, tokens, 8.0)
    want = attn_maps(q.astype(np.float64), k.astype(np.float64), l2s.token_table(tokens), 8.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# N, L, D off the 4-row blocks and 8-wide tiles of the C kernels, and on them; N = 70 crosses two
# 32-row dK groups and ends in a partial block
@pytest.mark.parametrize("N,L,D", [(12, 7, 5), (7, 16, 8), (5, 9, 19), (1, 1, 3), (70, 13, 12)])
def test_backward_matches_torch_autograd(rng, N, L, D):
    q, k = _inputs(rng, B=2, H=3, N=N, L=L, D=D)
    tokens = [[1 % L], [3 % L, 4 % L]]
    scale = 0.7
    dmaps = rng.standard_normal((2, 2, N)).astype(np.float32)
    dq, dk = l2s.attn_maps_backward(q, k, tokens, dmaps, scale)
    qt = torch.tensor(q, dtype=torch.float64, requires_grad=True)
    kt = torch.tensor(k, dtype=torch.float64, requires_grad=True)
    (attn_maps_torch(qt, kt, tokens, scale) * torch.tensor(dmaps, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(dq, qt.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dk, kt.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_backward_matches_finite_differences(rng):
    """Directional derivative of <dmaps, maps(q + h u, k + h w)> vs <dq, u> + <dk, w>."""
    q, k = _inputs(rng, B=1, H=2, N=6, L=5, D=4)
    tokens = [[0, 2], [4]]
    dmaps = rng.standard_normal((1, 2, 6)).astype(np.float32)
    dq, dk = l2s.attn_maps_backward(q, k, tokens, dmaps, 0.5)
    for _ in range(3):
        u = rng.standard_normal(q.shape)
        w = rng.standard_normal(k.shape)
        h = 1e-3
        f = lambda s: float((l2s.attn_maps_forward((q + s * u).astype(np.float32), (k + s * w).astype(np.float32),
                                                tokens, 0.5).astype(np.float64) * dmaps).sum())
        fd = (f(h) - f(-h)) / (2 * h)
        analytic = float((dq * u).sum() + (dk * w).sum())
        assert abs(fd - analytic) <= 2e-3 * max(1.0, abs(analytic)), (fd, analytic)


def test_strided_q_like_diffusers_layout(rng):
    """diffusers hands [B, N, H, D] memory viewed as [B, H, N, D]: no copy needed, same result."""
    B, N, H, D, L = 2, 16, 4, 8, 6
    q_bnhd = rng.standard_normal((B, N, H, D)).astype(np.float32)
    k_blhd = rng.standard_normal((B, L, H, D)).astype(np.float32)
    q, k = q_bnhd.transpose(0, 2, 1, 3), k_blhd.transpose(0, 2, 1, 3)
    assert not q.flags.c_contiguous
    got = l2s.attn_maps_forward(q, k, [[1], [2]])
    want = l2s.attn_maps_forward(np.ascontiguousarray(q), np.ascontiguousarray(k), [[1], [2]])
    np.testing.assert_array_equal(got, want)
    # and through torch, with a transposed tensor
    got_t = l2s.attn_maps_forward(torch.from_numpy(q_bnhd).transpose(1, 2), torch.from_numpy(k_blhd).transpose(1, 2), [[1], [2]])
    np.testing.assert_array_equal(got_t.numpy(), want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(rng, dtype):
    q, k = _inputs(rng, B=1, H=2, N=10, L=6, D=16)
    qh, kh = torch.from_numpy(q).to(dtype), torch.from_numpy(k).to(dtype)
    got = l2s.attn_maps_forward(qh, kh, [[0], [5]])
    assert got.dtype == torch.float32
    want = attn_maps(qh.double().numpy(), kh.double().numpy(), l2s.token_table([[0], [5]]), 0.25)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)   # exact up to fp32 arithmetic
    dmaps = torch.ones_like(got)
    dq, dk = l2s.attn_maps_backward(qh, kh, [[0], [5]], dmaps)
    assert dq.dtype == dtype and dk.dtype == dtype
    qt = qh.double().requires_grad_(); kt = kh.double().requires_grad_()
    attn_maps_torch(qt, kt, [[0], [5]], 0.25).sum().backward()
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    np.testing.assert_allclose(dq.double().numpy(), qt.grad.numpy(), rtol=tol, atol=tol * 0.1)
    np.testing.assert_allclose(dk.double().numpy(), kt.grad.numpy(), rtol=tol, atol=tol * 0.1)


def test_requires_grad_tensors_are_accepted(rng):
    q, k = _inputs(rng)
    qt = torch.from_numpy(q).requires_grad_()
    maps = l2s.attn_maps_forward(qt, torch.from_numpy(k), [[0]])
    assert isinstance(maps, torch.Tensor)
    np.testing.assert_array_equal(maps.numpy(), l2s.attn_maps_forward(q, k, [[0]]))


def test_out_is_written_in_place(rng):
    q, k = _inputs(rng)
    out = np.full((2, 1, 20), np.nan, np.float32)
    res = l2s.attn_maps_forward(q, k, [[3]], out=out)
    assert res is out and np.isfinite(out).all()


@pytest.mark.parametrize("threads", ["1", "3"])
def test_thread_count_does_not_change_results(rng, monkeypatch, threads):
    """Work is split so that each worker owns its outputs: any thread count gives identical bits."""
    q, k = _inputs(rng, B=2, H=3, N=200, L=9, D=8)
    dmaps = rng.standard_normal((2, 2, 200)).astype(np.float32)
    monkeypatch.setenv("L2S_NUM_THREADS", "2")
    ref = (l2s.attn_maps_forward(q, k, [[1], [2, 3]]), *l2s.attn_maps_backward(q, k, [[1], [2, 3]], dmaps))
    monkeypatch.setenv("L2S_NUM_THREADS", threads)
    got = (l2s.attn_maps_forward(q, k, [[1], [2, 3]]), *l2s.attn_maps_backward(q, k, [[1], [2, 3]], dmaps))
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("simd", ["sse2", "auto"])
def test_both_simd_paths_match_float64(rng, monkeypatch, simd):
    """L2S_SIMD=sse2 forces the portable SSE2 tiles; "auto" takes AVX2+FMA where the CPU has them."""
    monkeypatch.setenv("L2S_SIMD", simd)
    q, k = _inputs(rng, B=2, H=3, N=37, L=21, D=24)               # 3 column tiles: a pair and an odd one
    tokens = [[2], [7, 20]]
    dmaps = rng.standard_normal((2, 2, 37)).astype(np.float32)
    got = l2s.attn_maps_forward(q, k, tokens, 0.3)
    want = attn_maps(q.astype(np.float64), k.astype(np.float64), l2s.token_table(tokens), 0.3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    dq, dk = l2s.attn_maps_backward(q, k, tokens, dmaps, 0.3)
    qt = torch.tensor(q, dtype=torch.float64, requires_grad=True)
    kt = torch.tensor(k, dtype=torch.float64, requires_grad=True)
    (attn_maps_torch(qt, kt, tokens, 0.3) * torch.tensor(dmaps, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(dq, qt.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dk, kt.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("per_head, token_mean", [(True, False), (True, True), (False, True)])
def test_per_head_and_token_mean_match_float64(rng, per_head, token_mean):
    """The stacks the authors' classifiers read: one map per head, an object's tokens averaged."""
    B, H, N, L, D = 2, 5, 37, 11, 24
    q, k = _inputs(rng, B, H, N, L, D)
    qv = np.ascontiguousarray(q.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)          # strided, as diffusers'
    tokens = [[1, 2, 3], [7]]
    got = l2s.attn_maps_forward(qv, k, tokens, 0.3, per_head=per_head, token_mean=token_mean)
    want = attn_maps(q.astype(np.float64), k.astype(np.float64), l2s.token_table(tokens), 0.3, per_head, token_mean)
    assert got.shape == ((B, 2, H, N) if per_head else (B, 2, N))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # backward against torch autograd of the same float64 maths
    qt = torch.tensor(q, dtype=torch.float64, requires_grad=True)
    kt = torch.tensor(k, dtype=torch.float64, requires_grad=True)
    dmaps = rng.standard_normal(got.shape).astype(np.float32)
    (attn_maps_torch(qt, kt, tokens, 0.3, per_head, token_mean) * torch.tensor(dmaps, dtype=torch.float64)).sum().backward()
    dq, dk = l2s.attn_maps_backward(q, k, tokens, dmaps, 0.3, per_head=per_head, token_mean=token_mean)
    np.testing.assert_allclose(dq, qt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dk, kt.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_per_head_maps_have_the_per_head_shape_or_are_refused(rng):
    q, k = _inputs(rng, 1, 3, 8, 5, 4)
    with pytest.raises(ValueError, match="maps"):
        l2s.attn_maps_forward(q, k, [[1]], out=np.zeros((1, 1, 8), np.float32), per_head=True)
