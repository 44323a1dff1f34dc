"""kernels/*.cu against the C CPU path (the oracle, itself checked against float64 references).

Skipped without a CUDA device and a CUDA build; L2S_REQUIRE_CUDA=1 turns the skips into failures.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from l2s import _C
import l2s
from l2s.classifier import ClassifierConfig, RelationClassifier

pytestmark = pytest.mark.cuda
DEV = "cuda"


def _cuda(a):
    return torch.from_numpy(np.ascontiguousarray(a)).to(DEV)


def _host(t):
    return t.detach().float().cpu().numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 3, 2, 1), (2, 8, 256, 77, 40), (1, 24, 64, 512, 128), (2, 3, 33, 5, 130)])
@pytest.mark.parametrize("per_head, token_mean", [(False, False), (True, True)])
@pytest.mark.parametrize("kernel", ["simple", "tiled"])       # L2S_ATTN_KERNEL: both against the C oracle
def test_attention_maps(rng, dtype, shape, per_head, token_mean, kernel, monkeypatch):
    monkeypatch.setenv("L2S_ATTN_KERNEL", kernel)
    B, H, N, L, D = shape
    q = torch.from_numpy(rng.standard_normal((B, N, H, D)).astype(np.float32)).to(dtype)
    k = torch.from_numpy(rng.standard_normal((B, L, H, D)).astype(np.float32)).to(dtype)
    qv, kv = q.transpose(1, 2), k.transpose(1, 2)                 # the diffusers layout, strided
    tokens = [[0], [L - 1, 0]] if L > 1 else [[0]]
    opt = dict(per_head=per_head, token_mean=token_mean)
    want = l2s.attn_maps_forward(qv, kv, tokens, **opt)
    got = l2s.attn_maps_forward(qv.to(DEV), kv.to(DEV), tokens, **opt)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)
    dmaps = torch.from_numpy(rng.standard_normal(tuple(want.shape)).astype(np.float32))
    dq_c, dk_c = l2s.attn_maps_backward(qv, kv, tokens, dmaps, **opt)
    dq_g, dk_g = l2s.attn_maps_backward(qv.to(DEV), kv.to(DEV), tokens, dmaps.to(DEV), **opt)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(dq_g.cpu().float(), dq_c.float(), rtol=tol, atol=tol * 1e-2)
    torch.testing.assert_close(dk_g.cpu().float(), dk_c.float(), rtol=tol, atol=tol * 1e-2)


@pytest.mark.parametrize("mode", ["bilinear", "area"])
@pytest.mark.parametrize("src,dst", [((64, 64), (16, 16)), ((8, 8), (16, 16)), ((13, 7), (5, 9))])
def test_resize(rng, mode, src, dst):
    x = rng.random((2, 3) + src).astype(np.float32)
    torch.testing.assert_close(_host(l2s.resize_maps_forward(_cuda(x), dst, mode)), l2s.resize_maps_forward(x, dst, mode), rtol=1e-5, atol=1e-6)
    y = rng.standard_normal((2, 3) + dst).astype(np.float32)
    torch.testing.assert_close(_host(l2s.resize_maps_backward(_cuda(y), src, mode)), l2s.resize_maps_backward(y, src, mode),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["sum", "max"])
def test_normalize(rng, mode):
    x = rng.random((5, 2, 16, 16)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    torch.testing.assert_close(_host(l2s.normalize_maps_forward(_cuda(x), mode)), l2s.normalize_maps_forward(x, mode), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(_host(l2s.normalize_maps_backward(_cuda(x), _cuda(dy), mode)),
                               l2s.normalize_maps_backward(x, dy, mode), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("B", [1, 7, 64])
def test_classifier_forward_backward(rng, B):
    cfg = ClassifierConfig()
    cpu = RelationClassifier(cfg, seed=3)
    cpu.params += rng.normal(0, 0.05, cpu.params.shape).astype(np.float32)
    gpu = RelationClassifier(cfg, params=cpu.params.copy()).to(DEV)
    x = rng.random((B, 2, 16, 16)).astype(np.float32)
    steps = rng.integers(0, 50, B).astype(np.int32)
    labels = rng.integers(0, 4, B).astype(np.int32)
    p_c, l_c = cpu.forward(x, steps, labels)
    p_g, l_g = gpu.forward(_cuda(x), steps, labels)
    torch.testing.assert_close(_host(p_g), p_c, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(_host(l_g), l_c, rtol=1e-4, atol=1e-5)
    _, dx_c, _ = cpu.loss_and_input_grad(x, labels, steps)
    _, dx_g, _ = gpu.loss_and_input_grad(_cuda(x), labels, steps)
    torch.testing.assert_close(_host(dx_g), dx_c, rtol=1e-3, atol=1e-6)
    g_c = np.zeros_like(cpu.params)
    _C.classifier_backward(cpu._cfg, cpu.params, steps, labels, cpu._workspace(B), None, g_c)
    g_g = torch.zeros_like(gpu.params)
    _C.classifier_backward(gpu._cfg, gpu.params, steps, labels, gpu._workspace(B), None, g_g,
                             stream=torch.cuda.current_stream().cuda_stream)
    torch.testing.assert_close(_host(g_g), g_c, rtol=1e-3, atol=1e-5)


def test_classifier_trains_the_same_on_gpu(rng):
    from l2s.synthetic import relation_pairs
    x, y, t = relation_pairs(256, seed=5)
    cpu = RelationClassifier(ClassifierConfig(hidden1=64, hidden2=32), seed=2)
    gpu = RelationClassifier(ClassifierConfig(hidden1=64, hidden2=32), params=cpu.params.copy()).to(DEV)
    for i in range(0, 256, 64):
        lc = cpu.train_step(x[i:i + 64], y[i:i + 64], t[i:i + 64], lr=1e-3)
        lg = gpu.train_step(_cuda(x[i:i + 64]), y[i:i + 64], t[i:i + 64], lr=1e-3)
        assert abs(lc - lg) < 1e-3 * max(1, abs(lc))
    torch.testing.assert_close(_host(gpu.params), cpu.params, rtol=1e-3, atol=1e-5)


def test_adamw_and_latent(rng):
    p = rng.standard_normal(1000).astype(np.float32); g = rng.standard_normal(1000).astype(np.float32)
    pc, mc, vc = p.copy(), np.zeros_like(p), np.zeros_like(p)
    pg, mg, vg = _cuda(p), torch.zeros(1000, device=DEV), torch.zeros(1000, device=DEV)
    for t in (1, 2, 3):
        l2s.adamw_update(pc, g, mc, vc, lr=1e-2, step=t, weight_decay=0.1)
        l2s.adamw_update(pg, _cuda(g), mg, vg, lr=1e-2, step=t, weight_decay=0.1)
    torch.testing.assert_close(_host(pg), pc, rtol=1e-5, atol=1e-6)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        z = torch.from_numpy(rng.standard_normal((3, 4, 32, 32)).astype(np.float32)).to(dtype)
        gz = torch.from_numpy(rng.standard_normal((3, 4, 32, 32)).astype(np.float32)).to(dtype)
        gz[1, 0, 0, 0] = float("nan")
        zc, zg = z.clone(), z.to(DEV)
        nc = l2s.latent_update(zc, gz, 0.5)
        ng = l2s.latent_update(zg, gz.to(DEV), 0.5)
        assert torch.isnan(ng[1]).item() and torch.equal(zg[1].cpu(), z[1])
        torch.testing.assert_close(ng.cpu(), nc, rtol=1e-4, atol=1e-4, equal_nan=True)
        torch.testing.assert_close(zg.cpu().float(), zc.float(), rtol=1e-2 if dtype != torch.float32 else 1e-5, atol=1e-2)


def test_runs_on_a_side_stream_without_device_sync(rng):
    """Work queued on a non-default stream: inputs produced and outputs consumed on that stream."""
    q = torch.randn(2, 8, 1024, 64, device=DEV); k = torch.randn(2, 8, 77, 64, device=DEV)
    want = l2s.attn_maps_forward(q, k, [[3], [4, 5]])
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())    # q and k were made on the default stream
    with torch.cuda.stream(s):
        q2 = q * 1.0                      # produced on s
        got = l2s.attn_maps_forward(q2, k, [[3], [4, 5]])
        total = got.sum()                 # consumed on s
    s.synchronize()
    torch.testing.assert_close(got, want)
    assert torch.isfinite(total)


def test_device_mismatch_is_an_error():
    with pytest.raises(ValueError, match="share a device"):
        l2s.attn_maps_forward(torch.randn(1, 1, 4, 2, device=DEV), torch.randn(1, 1, 3, 2), [[0]])


def test_buffer_on_gpu_is_zero_copy():
    buf = _C.empty((4, 4), "float32", "cuda", 0)
    t = torch.from_dlpack(buf)
    assert t.is_cuda and t.data_ptr() == buf.data_ptr
    t.fill_(2.0)
    assert float(t.sum()) == 32.0


@pytest.mark.parametrize("batch", [1, 33])       # B = 1 (steering) used to slice the workspace 8-byte aligned
def test_gemm_paths_agree_and_cublaslt_runs(batch, tmp_path):
    """cuBLASLt and the fallback kernel give the same classifier (subprocess: the choice is made once),
    and in the first run every GEMM went through cuBLASLt (3 forward linear layers, none fell back)."""
    code = ("import sys, numpy as np, torch; from l2s import _C; from l2s.classifier import *; "
            "m=RelationClassifier(seed=1).to('cuda'); B=int(sys.argv[1]); "
            "x=torch.rand(B,2,16,16,device='cuda'); p,_=m.forward(x, np.arange(B)%50); torch.cuda.synchronize(); "
            "np.save(sys.argv[2] + '/%s.npy' % _C.gemm_backend(), p.cpu().numpy()); "
            "print(_C.gemm_backend(), _C.cublaslt_calls())")
    outs, calls = {}, {}
    for env in ({}, {"L2S_GEMM": "fallback"}):
        r = subprocess.run([sys.executable, "-c", code, str(batch), str(tmp_path)], env={**os.environ, **env},
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        backend, n = r.stdout.split()
        outs[backend], calls[backend] = np.load(tmp_path / f"{backend}.npy"), int(n)
    assert set(outs) == {"cublaslt", "fallback"}, outs.keys()
    assert calls == {"cublaslt": 3, "fallback": 0}, calls
    np.testing.assert_allclose(outs["cublaslt"], outs["fallback"], rtol=1e-4, atol=1e-6)


def _authors_pair():
    from l2s.authors import AuthorsClassifier
    cfg = {"d_model": 64, "map_size": 16, "num_timesteps": 6,
           "extractor": {"num_layers": 2, "nhead": 2, "dim_feedforward": 48, "layer_attn_nheads": 4},
           "classifier": {"num_layers": 1, "nhead": 4, "dim_feedforward": 32, "timestep_embedding_dim": 8}}
    cpu = AuthorsClassifier.new(["a", "b", "c", "d"], 40, 6, [1, 3], config=cfg, seed=3)
    gpu = AuthorsClassifier.new(["a", "b", "c", "d"], 40, 6, [1, 3], config=cfg, seed=3).to(DEV, fused=True)
    return cpu, gpu


def test_authors_network_twin_matches_the_c_pass(rng):
    """kernels/authors_net.cu against csrc/authors_net_cpu.c through the same driver: probabilities,
    per-sample losses and map gradients, and cuBLASLt did the products."""
    cpu, gpu = _authors_pair()
    assert gpu._net is not None and gpu._net.device.type == "cuda"
    maps = rng.random((3, 2, 37, 16, 16)).astype(np.float32)
    rows, labels = np.array([0, 2, 5]), np.array([1, 3, 0])
    before = _C.cublaslt_calls()
    want = cpu.losses_and_grad(maps, labels, rows)
    got = gpu.losses_and_grad(_cuda(maps), labels, rows)
    torch.cuda.synchronize()
    for g, w in zip(got, want):
        np.testing.assert_allclose(_host(g), w.numpy(), rtol=1e-4, atol=1e-6)
    assert _C.cublaslt_calls() > before


def test_authors_training_steps_match_with_the_same_dropout_masks(rng):
    cpu, gpu = _authors_pair()
    maps = rng.random((8, 2, 20, 16, 16)).astype(np.float32)
    rows, labels = rng.integers(0, 6, 8), rng.integers(0, 4, 8)
    for _ in range(3):
        lc = cpu.train_step(maps, labels, rows, lr=1e-3, dropout=0.3)
        lg = gpu.train_step(_cuda(maps), labels, rows, lr=1e-3, dropout=0.3)
        assert abs(lc - lg) < 1e-4 * max(1.0, abs(lc))
    for k, v in cpu.params.items():
        np.testing.assert_allclose(_host(gpu.params[k]), v.numpy(), rtol=1e-3, atol=1e-5, err_msg=k)
