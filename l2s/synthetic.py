"""Synthetic attention-map pairs with a known spatial relation (for demos, tests and benchmarks).

Each sample is two Gaussian blobs on an S x S grid (subject, object) whose centres satisfy one of
the relations by GenEval's rule (dominant axis offset): a stand-in for real cross-attention maps.
"""
from __future__ import annotations

import numpy as np

from .relations import RELATIONS, relation


def blob_maps(centres: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Gaussian blobs: centres [..., 2] in [0, 1] (x, y) -> maps [..., size, size] summing to 1."""
    grid = (np.arange(size, dtype=np.float64) + 0.5) / size
    gx = np.exp(-((grid[None, :] - centres[..., 0:1]) ** 2) / (2 * sigma ** 2))   # [..., size]
    gy = np.exp(-((grid[None, :] - centres[..., 1:2]) ** 2) / (2 * sigma ** 2))
    m = gy[..., :, None] * gx[..., None, :]
    return (m / m.sum(axis=(-2, -1), keepdims=True)).astype(np.float32)


def relation_pairs(n: int, size: int = 16, seed: int = 0, relations=RELATIONS, n_steps: int = 50,
                   noise: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n samples: maps [n, 2, size, size] float32, labels [n] int32 (index into relations), steps [n] int32."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(relations), n).astype(np.int32)
    centres = np.empty((n, 2, 2))
    for i, lab in enumerate(labels):
        dx, dy = relation(relations[lab]).direction
        gap = rng.uniform(0.3, 0.55)
        jitter = rng.uniform(-0.12, 0.12)              # off-axis wobble, below the dominance threshold
        mid = rng.uniform(0.35, 0.65, 2)
        off = np.array([dx * gap + (jitter if dx == 0 else 0), dy * gap + (jitter if dy == 0 else 0)])
        centres[i, 0] = mid + off / 2
        centres[i, 1] = mid - off / 2
    maps = blob_maps(np.clip(centres, 0.05, 0.95), size, sigma=rng.uniform(0.06, 0.12))
    if noise > 0:
        maps = np.abs(maps + rng.normal(0, noise / size ** 2, maps.shape)).astype(np.float32)
    steps = rng.integers(0, n_steps, n).astype(np.int32)
    return maps, labels, steps
