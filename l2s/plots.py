"""Plots of a steering run: attention heat maps per steered step, loss and probability curves.

    steer = Steerer(pipe, clf, prompt)            # keep_maps=True (the default) keeps the maps
    image = steer.generate(pipe, prompt).images[0]
    plot_attention(steer.records, image, names=("red circle", "blue square")).savefig("maps.png")
    plot_curves(steer.records).savefig("curves.png")

Figures are returned (shown inline by Jupyter); matplotlib is imported only here, with the
non-interactive backend when no display backend was chosen.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _pyplot():
    import os
    import sys

    import matplotlib
    if "MPLBACKEND" not in os.environ and not os.environ.get("DISPLAY") and "ipykernel" not in sys.modules:
        matplotlib.use("Agg")                   # headless: render to files only
    import matplotlib.pyplot as plt
    return plt


def first_iterations(records: Sequence[Any]) -> list[Any]:
    """The first gradient iteration of each steered step, in step order (a restart's replayed steps,
    ``restart_steer``, are left out: one row per step)."""
    return sorted((r for r in records if r.iteration == 0 and not getattr(r, "replayed", False)),
                  key=lambda r: r.step)


def plot_attention(records: Sequence[Any], image: np.ndarray | None = None, names: Sequence[str] = ("subject", "object"),
                   sample: int = 0, max_steps: int = 8):
    """Subject and object maps (rows) at each steered step (columns), over the final image if given."""
    plt = _pyplot()
    rows = [r for r in first_iterations(records) if r.maps is not None][:max_steps]
    if not rows:
        raise ValueError("no maps in these records (steer with keep_maps=True)")
    fig, axes = plt.subplots(2, len(rows), figsize=(1.8 * len(rows), 3.8), squeeze=False)
    for col, rec in enumerate(rows):
        for row in range(2):
            ax = axes[row][col]
            if image is not None:
                ax.imshow(image, extent=(0, 1, 1, 0))
            ax.imshow(rec.maps[sample, row], cmap="inferno", alpha=0.6 if image is not None else 1.0,
                      extent=(0, 1, 1, 0), interpolation="bilinear")
            ax.set_xticks([]); ax.set_yticks([])
            if row == 0:
                ax.set_title(f"step {rec.step}\n{rec.relation}: p={rec.probs[sample][rec.label]:.2f}", fontsize=8)
            if col == 0:
                ax.set_ylabel(names[row], fontsize=9)
    fig.tight_layout()
    return fig


def plot_curves(records: Sequence[Any], sample: int = 0):
    """Classifier loss per gradient iteration and the requested relation's probability, by step."""
    plt = _pyplot()
    if not records:
        raise ValueError("no steering records (was the prompt relational?)")
    fig, (ax_loss, ax_prob) = plt.subplots(1, 2, figsize=(9, 3.2))
    x = np.arange(len(records))
    ax_loss.plot(x, [r.loss for r in records], marker="o", ms=3)
    ax_loss.set_xlabel("gradient iteration"); ax_loss.set_ylabel("classifier loss (batch mean)")
    ax_loss.set_yscale("log")
    for i, r in enumerate(records):
        if r.iteration == 0:                     # a new steered step starts here
            ax_loss.axvline(i, color="0.85", lw=0.8, zorder=0)
    for rel in sorted({r.relation for r in records}):
        pts = [(r.step, r.probs[sample][r.label]) for r in first_iterations(records) if r.relation == rel]
        ax_prob.plot(*zip(*pts), marker="o", label=rel)
    ax_prob.set_xlabel("denoising step (first iteration)"); ax_prob.set_ylabel("p(requested relation)")
    ax_prob.set_ylim(0, 1); ax_prob.legend(fontsize=8)
    fig.tight_layout()
    return fig
