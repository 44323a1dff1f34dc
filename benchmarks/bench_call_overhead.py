"""What one call across the ``l2s._C`` boundary costs at the smallest sizes (argument parsing,
borrowing, validation, dispatch), in microseconds, for the ops the steering loop calls at B=1.

    python benchmarks/bench_call_overhead.py               # the installed l2s._C
    PYTHONPATH=/path/to/old/build python benchmarks/bench_call_overhead.py --module _l2s   # an older build

Only the extension and NumPy are imported, so the same script times an older build side by side
(builds before the move into the package were the top-level ``_l2s``; builds from before the named
classifier config take the positional tuple: the script passes whichever the build asks for).
"""
from __future__ import annotations

import argparse
import importlib
import timeit

import numpy as np


FIELDS = dict(n_maps=2, map_pixels=4, n_steps=5, step_dim=3, hidden1=6, hidden2=5, n_relations=4, leaky_slope=0.1,
              ln_eps=1e-5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--number", type=int, default=20000, help="calls per timing (default 20000)")
    ap.add_argument("--repeats", type=int, default=7, help="timings; the best is kept (default 7)")
    ap.add_argument("--module", default="l2s._C", help="the extension to time (default l2s._C; _l2s for old builds)")
    args = ap.parse_args()
    _C = importlib.import_module(args.module)
    f = np.float32
    cfg = _C.classifier_config(**FIELDS) if hasattr(_C, "classifier_config") else tuple(FIELDS.values())
    n_params, ws_floats, _ = _C.classifier_sizes(cfg, 1)
    params, ws = np.zeros(n_params, f), np.zeros(ws_floats, f)
    x, probs, losses = np.zeros((1, 8), f), np.zeros((1, 4), f), np.zeros(1, f)
    steps, labels, dx = np.zeros(1, np.int32), np.zeros(1, np.int32), np.zeros((1, 8), f)
    z, g, norms = np.zeros((1, 4), f), np.ones((1, 4), f), np.zeros(1, f)
    v, w = np.ones((1, 4), f), np.zeros((1, 4), f)
    q, k, table, maps = np.zeros((1, 1, 4, 2), f), np.zeros((1, 1, 3, 2), f), np.array([[0], [1]], np.int32), \
        np.zeros((1, 2, 4), f)
    calls = {
        "classifier_forward (B=1)": lambda: _C.classifier_forward(cfg, params, x, steps, labels, ws, probs, losses),
        "classifier_backward (B=1, dx)": lambda: _C.classifier_backward(cfg, params, steps, labels, ws, dx, None),
        "attn_maps_forward (tiny)": lambda: _C.attn_maps_forward(q, k, table, maps, 0.5),
        "normalize_maps_forward (tiny)": lambda: _C.normalize_maps_forward(v, w),
        "latent_update (tiny)": lambda: _C.latent_update(z, g, norms, 0.0),
    }
    print("| call | us per call |\n|---|---|")
    for name, fn in calls.items():
        best = min(timeit.repeat(fn, number=args.number, repeat=args.repeats)) / args.number
        print(f"| {name} | {best * 1e6:.2f} |")


if __name__ == "__main__":
    main()
