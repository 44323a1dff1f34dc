"""Time the core ops against plain torch implementations of the same maths and against the
device's floor; print a markdown table.

    python benchmarks/bench_core.py                 # CPU: C core vs torch (CPU)
    python benchmarks/bench_core.py --device cuda   # GPU: CUDA kernels vs torch (CUDA)

The authors' transformer classifier (the fused C pass, or with --device cuda its CUDA twin) runs at the SD1.4
widths on 128-map stacks: a steering pass (B=1: loss and map gradient) and a training step (B=64:
dropout 0.3, all gradients, AdamW), against the same network in torch (autograd, torch's AdamW).

Extraction shapes are Stable Diffusion 1.x cross-attention layers at 512 px (64x64, 32x32, 16x16
positions; 77 CLIP tokens; 8 heads) and one Flux-like joint layer (4096 image x 512 text tokens,
24 heads x 128). The torch baseline materialises the [B, H, N, L] softmax, as attention-store code does.

Floor = max(GEMM FLOPs / measured fp32 GEMM rate, compulsory bytes / measured copy bandwidth), both
rates measured on the same device with torch (a 2048^3 matmul; a 256 MiB copy, read + write
counted). FLOPs count the matrix products of the maths done once (extraction forward: Q K^T;
forward+backward: Q K^T, dQ, dK -- l2s recomputes Q K^T in the backward instead of storing the
probabilities, so it does 8/6 of the floor's FLOPs); bytes count reading each input and writing
each output once. The floor is a lower bound: "l2s / floor" says how far from it each op runs.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from l2s import _C
import l2s
from l2s.classifier import ClassifierConfig, RelationClassifier

EXTRACT_SHAPES = {  # name: (B, H, N, L, D)
    "SD 64x64 layer": (1, 8, 4096, 77, 40),
    "SD 32x32 layer": (1, 8, 1024, 77, 80),
    "SD 16x16 layer": (1, 8, 256, 77, 160),
    "Flux joint layer": (1, 24, 4096, 512, 128),
}
TOKENS = [[5], [8, 9]]


def timeit(fn, device: str, repeats: int) -> float:
    """Median seconds per call after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def device_rates(device: str) -> tuple[float, float]:
    """(fp32 GEMM FLOP/s, copy bytes/s) measured with torch on ``device``."""
    n = 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t_mm = timeit(lambda: a @ b, device, 5)
    src = torch.rand(64 * 2 ** 20, device=device)       # touched pages: no lazily mapped zero page
    dst = torch.rand_like(src)
    t_copy = timeit(lambda: dst.copy_(src), device, 5)
    return 2 * n ** 3 / t_mm, 2 * src.numel() * 4 / t_copy


def floor_seconds(flops: float, nbytes: float, rates: tuple[float, float]) -> float:
    return max(flops / rates[0], nbytes / rates[1])


def torch_maps(q, k, scale):
    p = torch.softmax(torch.einsum("bhnd,bhld->bhnl", q, k) * scale, -1)
    return torch.stack([p[..., row].sum(-1).mean(1) for row in TOKENS], 1)


def bench_extraction(device: str, repeats: int, skip_large_cpu: bool, rates) -> list[tuple]:
    rows = []
    for name, (B, H, N, L, D) in EXTRACT_SHAPES.items():
        if device == "cpu" and skip_large_cpu and L > 100:
            continue
        q = torch.randn(B, N, H, D, device=device).transpose(1, 2)     # diffusers layout, strided
        k = torch.randn(B, L, H, D, device=device).transpose(1, 2)
        scale = D ** -0.5
        dmaps = torch.randn(B, len(TOKENS), N, device=device)
        t_fwd = timeit(lambda: l2s.attn_maps_forward(q, k, TOKENS, scale), device, repeats)
        t_fb = timeit(lambda: (l2s.attn_maps_forward(q, k, TOKENS, scale),
                               l2s.attn_maps_backward(q, k, TOKENS, dmaps, scale)), device, repeats)
        qg, kg = q.detach().requires_grad_(), k.detach().requires_grad_()

        def torch_fb():
            m = torch_maps(qg, kg, scale)
            torch.autograd.grad((m * dmaps).sum(), (qg, kg))
        with torch.no_grad():
            t_tf = timeit(lambda: torch_maps(q, k, scale), device, repeats)
        t_tfb = timeit(torch_fb, device, repeats)
        probs_mb = B * H * N * L * 4 / 2 ** 20
        qk_flops, qk_bytes, map_bytes = 2 * B * H * N * L * D, 4 * B * (N + L) * H * D, 4 * B * len(TOKENS) * N
        floors = (floor_seconds(qk_flops, qk_bytes + map_bytes, rates),
                  floor_seconds(3 * qk_flops, 2 * (qk_bytes + map_bytes), rates))
        rows.append((f"maps {name} B={B} H={H} N={N} L={L} D={D}", (t_fwd, t_tf, floors[0]), (t_fb, t_tfb, floors[1]),
                     f"torch holds {probs_mb:.0f} MiB of probabilities; l2s none"))
    return rows


def torch_classifier(model: RelationClassifier, device: str):
    """The same 'mlp' classifier as torch modules, sharing the l2s parameters."""
    c = model.config
    P = {n: torch.as_tensor(np.asarray(v)).to(device) for n, v in model.parameters().items()}
    emb = P["step_embedding"]

    def loss_fn(x, steps, labels):
        h = torch.cat([x.reshape(x.shape[0], -1), emb[steps]], 1)
        for i in (1, 2):
            h = torch.nn.functional.linear(h, P[f"fc{i}.weight"], P[f"fc{i}.bias"])
            h = torch.nn.functional.layer_norm(h, (h.shape[1],), P[f"ln{i}.weight"], P[f"ln{i}.bias"], c.ln_eps)
            h = torch.nn.functional.leaky_relu(h, c.leaky_slope)
        return torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, P["fc3.weight"], P["fc3.bias"]), labels)
    return loss_fn, list(P.values())


def bench_classifier(device: str, repeats: int, rates) -> list[tuple]:
    rows = []
    model = RelationClassifier(ClassifierConfig(), seed=0)          # the authors' head widths: 256 -> 128
    if device == "cuda":
        model.to("cuda")
    loss_fn, tparams = torch_classifier(model, device)
    for p in tparams:
        p.requires_grad_()
    for B, what in ((1, "steering (input grad)"), (64, "training (all grads)")):
        x = torch.rand(B, 2, 16, 16, device=device)
        steps = torch.randint(0, 50, (B,), device=device)
        labels = torch.randint(0, 4, (B,), device=device)
        steps_h, labels_h = steps.cpu().numpy().astype(np.int32), labels.cpu().numpy().astype(np.int32)
        if B == 1:
            run_l2s = lambda: model.loss_and_input_grad(x, labels_h, steps_h)
            xg = x.clone().requires_grad_()
            run_torch = lambda: torch.autograd.grad(loss_fn(xg, steps, labels), xg)
        else:
            grads = torch.zeros_like(model.params) if device == "cuda" else np.zeros(model.n_params, np.float32)
            stream = torch.cuda.current_stream().cuda_stream if device == "cuda" else None

            def run_l2s():
                model.forward(x, steps_h, labels_h)
                _C.classifier_backward(model._cfg, model.params, steps_h, labels_h,
                                         model._workspace(B), None, grads, stream=stream)
            run_torch = lambda: torch.autograd.grad(loss_fn(x, steps, labels), tparams)
        t_l2s = timeit(run_l2s, device, repeats)
        t_torch = timeit(run_torch, device, repeats)
        c = model.config
        gemm_weights = (c.n_maps * c.map_size ** 2 + c.step_dim) * c.hidden1 + c.hidden1 * c.hidden2 + c.hidden2 * len(c.relations)
        in_bytes = 4 * B * c.n_maps * c.map_size ** 2
        if B == 1:      # forward + input gradient: read the weights and the maps, write the map gradient
            floor = floor_seconds(4 * B * gemm_weights, 4 * model.n_params + 2 * in_bytes, rates)
        else:           # forward + all gradients: read weights and maps, write weight gradients
            floor = floor_seconds(6 * B * gemm_weights, 8 * model.n_params + in_bytes, rates)
        rows.append((f"classifier fwd+bwd B={B}, {what}", None, (t_l2s, t_torch, floor),
                     f"{model.n_params / 1e3:.0f}k params"))
    return rows


SD14_AUTHORS = {"d_model": 256, "map_size": 16, "num_timesteps": 50,          # authors-format.md §2, sd14
                "extractor": {"nhead": 2, "num_layers": 2, "dim_feedforward": 128, "layer_attn_nheads": 2},
                "classifier": {"nhead": 4, "num_layers": 2, "dim_feedforward": 128, "timestep_embedding_dim": 16}}


def authors_macs(cfg: dict, C: int, K: int) -> int:
    """Multiply-adds of one forward of the authors' network on one sample of C channels."""
    d, S2, ex, cl = cfg["d_model"], cfg["map_size"] ** 2, cfg["extractor"], cfg["classifier"]
    E, h = cl["timestep_embedding_dim"], d // 2
    layer = lambda rows, ff: rows * d * 3 * d + 2 * rows * rows * d + rows * d * d + 2 * rows * d * ff
    per_object = C * S2 * d + ex["num_layers"] * layer(C, ex["dim_feedforward"]) + C * d * 2 * d + 2 * C * d \
        + d * d + d * S2
    return 2 * per_object + 2 * S2 * d + cl["num_layers"] * layer(1, cl["dim_feedforward"]) + (d + E) * d + d * h + h * K


def bench_authors(device: str, repeats: int, rates) -> list[tuple]:
    """The authors' transformer (SD1.4 widths, C = 128 maps per object): the fused pass of
    AuthorsClassifier (C, or its CUDA twin) vs the same network in torch (authors.authors_logits,
    autograd, torch's AdamW) on the same device."""
    from l2s.authors import AuthorsClassifier, authors_logits
    rows, C, K = [], 128, 5
    clf = AuthorsClassifier.new(["above", "below", "is", "left", "right"], 128, 50, [5, 10, 15, 20, 25, 49],
                                config=SD14_AUTHORS)
    P = {k: v.detach().clone().to(device) for k, v in clf.params.items()}
    if device == "cuda":
        clf.to("cuda", fused=True)
    trained = [v.requires_grad_() for k, v in P.items() if "positional" not in k]
    opt = torch.optim.AdamW(trained, lr=1e-4, weight_decay=0.05)
    macs = authors_macs(SD14_AUTHORS, C, K)
    n_params = sum(v.numel() for v in P.values())
    for B, what in ((1, "steering (input grad)"), (64, "training step (dropout 0.3, AdamW)")):
        g = torch.Generator().manual_seed(B)
        maps = torch.rand(B, 2, C, 16, 16, generator=g)
        maps = (maps / maps.sum((-1, -2), keepdim=True)).to(device)
        steps = torch.randint(0, 50, (B,), generator=g).to(device)
        labels = torch.randint(0, K, (B,), generator=g).to(device)
        if B == 1:
            run_l2s = lambda: clf.losses_and_grad(maps, labels, steps)

            def run_torch():
                x = maps.clone().requires_grad_()
                torch.autograd.grad(torch.nn.functional.cross_entropy(
                    authors_logits(P, SD14_AUTHORS, x, steps), labels, reduction="sum"), x)
            floor = floor_seconds(2 * 2 * macs, 4 * n_params + 2 * 4 * maps.numel(), rates)
        else:
            run_l2s = lambda: clf.train_step(maps, labels.cpu().numpy(), steps.cpu().numpy(), 1e-4, 0.05, 0.3)

            def run_torch():
                loss = torch.nn.functional.cross_entropy(authors_logits(P, SD14_AUTHORS, maps, steps, 0.3), labels)
                opt.zero_grad()
                loss.backward()
                opt.step()
            floor = floor_seconds(3 * 2 * B * macs, 4 * 4 * n_params + 4 * maps.numel(), rates)
        t_l2s = timeit(run_l2s, device, repeats)
        t_torch = timeit(run_torch, device, repeats)
        rows.append((f"authors' classifier B={B}, {what}", None, (t_l2s, t_torch, floor),
                     f"SD1.4 widths, C={C}, {n_params / 1e6:.2f}M params"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per cell (median is reported)")
    ap.add_argument("--with-flux-cpu", action="store_true", help="also time the Flux-size layer on the CPU (slow)")
    args = ap.parse_args()
    if args.device == "cuda" and not _C.cuda_available():
        raise SystemExit("no CUDA device or l2s._C built without CUDA (python -m l2s info)")
    if args.device == "cuda":
        dev = torch.cuda.get_device_name()
    else:
        dev = (f"CPU ({os.cpu_count()} cores), torch threads={torch.get_num_threads()}, l2s C core threads="
               f"{os.environ.get('L2S_NUM_THREADS', os.cpu_count())}")
    rates = device_rates(args.device)
    print(f"device: {dev}; torch {torch.__version__}; median of {args.repeats}; measured fp32 GEMM "
          f"{rates[0] / 1e9:.0f} GFLOP/s, copy {rates[1] / 1e9:.1f} GB/s\n")
    print("| op | l2s fwd ms | torch fwd ms | floor fwd ms | l2s fwd+bwd ms | torch fwd+bwd ms | floor fwd+bwd ms "
          "| torch / l2s (fwd+bwd) | l2s / floor (fwd+bwd) | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = (bench_extraction(args.device, args.repeats, not args.with_flux_cpu, rates)
            + bench_classifier(args.device, args.repeats, rates)
            + bench_authors(args.device, args.repeats, rates))
    fmt = lambda t: f"{t * 1e3:.3f}" if t < 1e-2 else f"{t * 1e3:.2f}"
    for name, fwd, fb, note in rows:
        cells = " | ".join(fmt(t) for t in fwd) if fwd else "- | - | -"
        print(f"| {name} | {cells} | {' | '.join(fmt(t) for t in fb)} | {fb[1] / fb[0]:.2f}x | {fb[0] / fb[2]:.1f}x | {note} |")

if __name__ == "__main__":
    main()
