"""The core on synthetic maps, end to end: extract -> prepare -> train the classifier -> steer.

Stands in for real generation until the diffusers hook and the shapes world land: every op of the
``l2s._C`` core runs here on the CPU (or CUDA with ``--device cuda`` and torch).
"""
from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from . import core
from .classifier import ClassifierConfig, RelationClassifier
from .relations import OPPOSITE
from .synthetic import relation_pairs


def extraction_demo(rng: np.random.Generator) -> dict:
    """Maps of two objects from two fake cross-attention layers (32x32 and 16x16), averaged on 16x16."""
    maps16 = np.zeros((1, 2, 16, 16), np.float32)
    for side in (32, 16):
        q = rng.standard_normal((1, 8, side * side, 40)).astype(np.float32)
        k = rng.standard_normal((1, 8, 77, 40)).astype(np.float32)
        m = core.attn_maps_forward(q, k, [[2], [5, 6]])                      # "dog", "teddy bear"
        core.resize_maps_forward(m.reshape(1, 2, side, side), 16, "area", out=maps16, weight=0.5, accumulate=True)
    maps = core.normalize_maps_forward(maps16, "sum")
    return {"maps_shape": maps.shape, "map_sums": maps.sum(axis=(2, 3)).ravel().round(4).tolist()}


def train(model: RelationClassifier, n_train: int, epochs: int, batch: int, seed: int) -> list[float]:
    x, y, t = relation_pairs(n_train, model.config.map_size, seed=seed, n_steps=model.config.n_steps, noise=0.5)
    rng = np.random.default_rng(seed)
    losses = []
    with tqdm(total=epochs * (n_train // batch), desc="train classifier (C core)", leave=False, disable=None) as bar:
        for _ in range(epochs):
            order = rng.permutation(n_train)
            for s in range(0, n_train - batch + 1, batch):
                idx = order[s: s + batch]
                losses.append(model.train_step(x[idx], y[idx], t[idx], lr=2e-3, weight_decay=0.01))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def accuracy(model: RelationClassifier, x, y, t) -> float:
    probs, _ = model.forward(x, t)
    return float((np.asarray(probs).argmax(1) == y).mean())


def steer(model: RelationClassifier, maps: np.ndarray, target: np.ndarray, steps: np.ndarray,
          iters: int, step_size: float) -> tuple[np.ndarray, list[float]]:
    """Move raw maps toward the target relation: the classifier's loss is the steering loss."""
    z = maps.copy()
    curve = []
    for _ in range(iters):
        x = core.normalize_maps_forward(z, "sum")
        loss, dx, _ = model.loss_and_input_grad(x, target, steps)
        g = core.normalize_maps_backward(z, dx, "sum")
        core.latent_update(z.reshape(len(z), -1), g.reshape(len(z), -1), step_size, normalize=True)
        np.maximum(z, 0, out=z)                                           # maps stay non-negative
        curve.append(loss)
    return core.normalize_maps_forward(z, "sum"), curve


def run(n_train: int = 4096, epochs: int = 6, batch: int = 64, seed: int = 0, steer_iters: int = 30) -> dict:
    """Run the demo and return its measurements."""
    rng = np.random.default_rng(seed)
    out = {"extraction": extraction_demo(rng)}
    model = RelationClassifier(ClassifierConfig(hidden1=128, hidden2=64), seed=seed)
    t0 = time.perf_counter()
    losses = train(model, n_train, epochs, batch, seed)
    out["train_seconds"] = round(time.perf_counter() - t0, 2)
    out["train_loss_first_last"] = (round(losses[0], 4), round(float(np.mean(losses[-20:])), 4))
    xv, yv, tv = relation_pairs(512, 16, seed=seed + 1, noise=0.5)
    out["val_accuracy"] = accuracy(model, xv, yv, tv)
    # steer: ask each held-out layout for a relation it does not satisfy ("left of" <-> "right of", ...)
    rels = model.config.relations
    flip = np.array([rels.index(OPPOSITE[r]) for r in rels], np.int32)[yv[:128]]
    before = float((np.asarray(model.forward(xv[:128], tv[:128])[0]).argmax(1) == flip).mean())
    steered, curve = steer(model, xv[:128], flip, tv[:128], steer_iters, step_size=0.02)
    after = float((np.asarray(model.forward(steered, tv[:128])[0]).argmax(1) == flip).mean())
    out["steer_target_rate_before_after"] = (before, after)
    out["steer_loss_first_last"] = (round(curve[0], 4), round(curve[-1], 4))
    return out
