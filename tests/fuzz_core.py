"""Seeded fuzzing of every ``l2s._C`` entry point: random shapes, dtypes, strides, byte orders, index
values, scales and argument kinds, valid and hostile. Each call must either raise a Python
exception (TypeError/ValueError/RuntimeError/OverflowError) or return results that match a float64
NumPy reference. A crash (the process dying) is what the test around this script catches: it runs
here in a subprocess.

    python tests/fuzz_core.py --calls 3000 --seed 0       # what the suite runs
    python tests/fuzz_core.py --long                      # 100,000 calls

Prints ``calls N exceptions E mismatches M`` and exits 1 if any result mismatched.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from l2s import _C

EXPECTED = (TypeError, ValueError, RuntimeError, OverflowError, MemoryError)
F32 = np.float32


def ref_maps(q, k, table, scale):
    q, k = q.astype(np.float64), k.astype(np.float64)
    p = np.exp((q @ np.swapaxes(k, -1, -2)) * scale - ((q @ np.swapaxes(k, -1, -2)) * scale).max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)                                  # [B, H, N, L]
    out = np.stack([p[..., [t for t in row if t >= 0]].sum(-1).mean(1) for row in table], 1)
    return out                                                     # [B, T, N]


def ref_resize_area(x, H, W):
    h, w = x.shape[-2:]
    out = np.zeros(x.shape[:-2] + (H, W))
    for i in range(H):
        y0, y1 = (i * h) // H, -(-((i + 1) * h) // H)
        for j in range(W):
            x0, x1 = (j * w) // W, -(-((j + 1) * w) // W)
            out[..., i, j] = x[..., y0:y1, x0:x1].astype(np.float64).mean((-2, -1))
    return out


def rand_array(rng, shape, dtype=F32, hostile=False):
    a = rng.standard_normal(shape).astype(dtype) if np.issubdtype(np.dtype(dtype), np.floating) \
        else rng.integers(-3, 10, shape).astype(dtype)
    if hostile:
        kind = rng.integers(0, 6)
        if kind == 0:
            a = a.astype(a.dtype.newbyteorder(">"))
        elif kind == 1 and a.ndim:
            a = np.asfortranarray(a) if a.ndim > 1 else a[::-1]
        elif kind == 2:
            a = a.astype(np.float64)
        elif kind == 3:
            a.setflags(write=False)
        elif kind == 4 and a.size:
            a = a.copy(); a.flat[0] = np.nan
    return a


def one_call(rng, stats):
    op = rng.integers(0, 8)
    hostile = rng.random() < 0.5
    try:
        if op == 0:                                                # attention maps
            B, H, N, L, D = (int(v) for v in rng.integers(1, 6, 5))
            q, k = rand_array(rng, (B, H, N, D), hostile=hostile), rand_array(rng, (B, H, L, D))
            T = int(rng.integers(1, 3))
            table = rng.integers(-1 if hostile else 0, L + (2 if hostile else 0), (T, 2)).astype(np.int32)
            table[:, 0] = np.abs(table[:, 0]) % (L + (1 if hostile else 0))
            scale = float(rng.choice([0.5, 1 / np.sqrt(D)] + ([-1.0, 0.0, np.inf] if hostile else [])))
            out = np.zeros((B, T, N), F32)
            _C.attn_maps_forward(q, k, table, out, scale)
            if q.dtype == F32 and np.isfinite(q).all():
                want = ref_maps(q, k, table, scale)
                if not np.allclose(out, want, rtol=1e-4, atol=1e-6):
                    stats["mismatches"] += 1
        elif op == 1:                                              # resize (area), forward
            P, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 12)), int(rng.integers(1, 12))
            H, W = int(rng.integers(1, 12)), int(rng.integers(1, 12))
            x = rand_array(rng, (P, h, w), hostile=hostile)
            out = np.zeros((P, H, W) if not hostile or rng.random() < 0.7 else (P + 1, H, W), F32)
            _C.resize_maps_forward(x, out, "area")
            if x.dtype == F32 and np.isfinite(x).all() and not np.allclose(out, ref_resize_area(x, H, W), rtol=1e-4, atol=1e-5):
                stats["mismatches"] += 1
        elif op == 2:                                              # resize, backward
            P, h, w = (int(v) for v in rng.integers(1, 9, 3))
            dout = rand_array(rng, (P, int(rng.integers(1, 9)), int(rng.integers(1, 9))), hostile=hostile)
            din = np.zeros((P, h, w), F32)
            _C.resize_maps_backward(dout, din, str(rng.choice(["bilinear", "area"] + (["nearest"] if hostile else []))))
        elif op == 3:                                              # normalise
            x = np.abs(rand_array(rng, (int(rng.integers(1, 5)), int(rng.integers(1, 20))), hostile=hostile))
            y = np.zeros(x.shape, F32)
            _C.normalize_maps_forward(x, y, "sum", 1e-8)
            if x.dtype == F32 and np.isfinite(x).all():
                want = x.astype(np.float64) / (x.astype(np.float64).sum(-1, keepdims=True) + 1e-8)
                if not np.allclose(y, want, rtol=1e-5, atol=1e-7):
                    stats["mismatches"] += 1
        elif op == 4:                                              # latent update
            B, K = int(rng.integers(1, 4)), int(rng.integers(1, 30))
            z, g = rand_array(rng, (B, K)), rand_array(rng, (B, K), hostile=hostile)
            z0, norms = z.copy(), np.zeros(B, F32)
            step = float(rng.choice([0.1, 1.0] + ([np.nan] if hostile else [])))
            _C.latent_update(z, g, norms, step, True)
            if g.dtype == F32:
                g64 = g.astype(np.float64)
                n = np.sqrt((g64 ** 2).sum(1))
                ok = np.isfinite(n)
                want = np.where(ok[:, None], z0 - step * g64 / np.where(ok & (n > 0), n, 1)[:, None], z0)
                if not np.allclose(z, want, rtol=1e-5, atol=1e-6):
                    stats["mismatches"] += 1
        elif op == 5:                                              # classifier configs and passes
            fields = dict(n_maps=int(rng.integers(1, 3)), map_pixels=int(rng.integers(1, 9)), n_steps=int(rng.integers(1, 5)),
                          step_dim=int(rng.integers(0, 3)), hidden1=int(rng.integers(1, 6)), hidden2=int(rng.integers(1, 6)),
                          n_relations=int(rng.integers(2, 5)))
            if hostile:
                key = str(rng.choice(list(fields)))
                fields[key] = int(rng.choice([0, -1, 2 ** 30, 2 ** 31 - 1]))
            cfg = _C.classifier_config(**fields)
            n_params, ws, X = _C.classifier_sizes(cfg, 2)
            B = 2
            steps = rng.integers(0, fields["n_steps"] + (2 if hostile else 0), B).astype(np.int32)
            labels = rng.integers(0, fields["n_relations"] + (2 if hostile else 0), B).astype(np.int32)
            params = rand_array(rng, (n_params,)) * 0.1
            x, probs, losses = rand_array(rng, (B, X), hostile=hostile), np.zeros((B, fields["n_relations"]), F32), np.zeros(B, F32)
            work = np.zeros(ws, F32)
            _C.classifier_forward(cfg, params, x, steps, labels, work, probs, losses)
            if x.dtype == F32 and np.isfinite(x).all() and not np.allclose(probs.sum(1), 1.0, atol=1e-5):
                stats["mismatches"] += 1
            _C.classifier_backward(cfg, params, steps, labels, work, np.zeros((B, X), F32), np.zeros(n_params, F32))
        elif op == 7:                                              # the authors' transformer: config and passes
            d = int(rng.choice([2, 4, 8]))
            fields = dict(d=d, map_pixels=int(rng.choice([1, 4, 9])), max_channels=int(rng.integers(1, 6)),
                          n_steps=int(rng.integers(1, 4)), ex_layers=int(rng.integers(0, 3)), ex_heads=int(rng.choice([1, 2])),
                          ex_ff=int(rng.integers(1, 5)), pool_heads=int(rng.choice([1, 2])), cl_layers=int(rng.integers(0, 2)),
                          cl_heads=int(rng.choice([1, 2])), cl_ff=int(rng.integers(1, 4)), step_dim=int(rng.integers(0, 3)),
                          n_relations=int(rng.integers(2, 4)))
            if hostile and rng.random() < 0.3:
                key = str(rng.choice(list(fields)))
                fields[key] = int(rng.choice([0, -1, 3, 2 ** 20, 2 ** 31 - 1]))
            cfg = _C.authors_config(**fields)
            B, C = int(rng.integers(1, 4)), int(rng.integers(1, fields["max_channels"] + (3 if hostile else 1)))
            n_params, _, ws = _C.authors_sizes(cfg, B, min(C, fields["max_channels"]))
            S2, K = fields["map_pixels"], fields["n_relations"]
            steps = rng.integers(0, fields["n_steps"] + (2 if hostile else 0), B).astype(np.int32)
            labels = rng.integers(-1 if hostile else 0, K + (2 if hostile else 0), B).astype(np.int32)
            params = rand_array(rng, (n_params,)) * 0.3
            maps = np.abs(rand_array(rng, (B, 2, C, S2 + (int(rng.integers(0, 2)) if hostile else 0)), hostile=hostile))
            work = np.zeros(ws - (int(rng.integers(0, 2)) if hostile else 0), F32)
            probs, losses = np.zeros((B, K), F32), np.zeros(B, F32)
            p = float(rng.choice([0.0, 0.3] + ([1.0, -0.1, np.nan] if hostile else [])))
            _C.authors_forward(cfg, params, maps, steps, labels, work, probs, losses, p, int(rng.integers(0, 2 ** 63)))
            if maps.dtype == F32 and np.isfinite(maps).all() and not np.allclose(probs.sum(1), 1.0, atol=1e-5):
                stats["mismatches"] += 1
            dmaps = np.zeros((B, 2, C, S2), F32) if not hostile or rng.random() < 0.7 else np.zeros((B, 2, C + 1, S2), F32)
            _C.authors_backward(cfg, params, steps, labels, work, C, dmaps, np.zeros(n_params, F32), p, 1)
        else:                                                      # AdamW
            n = int(rng.integers(1, 20))
            p, g = rand_array(rng, (n,)), rand_array(rng, (n,), hostile=hostile)
            m, v = np.zeros(n, F32), np.zeros(n, F32)
            _C.adamw_update(p, g, m, v, float(rng.choice([1e-3, 0.1])), step=int(rng.integers(0 if hostile else 1, 5)))
    except EXPECTED:
        stats["exceptions"] += 1
    stats["calls"] += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--long", action="store_true", help="100,000 calls")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    stats = {"calls": 0, "exceptions": 0, "mismatches": 0}
    for _ in range(100_000 if args.long else args.calls):
        one_call(rng, stats)
    print(f"calls {stats['calls']} exceptions {stats['exceptions']} mismatches {stats['mismatches']}")
    return 1 if stats["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
