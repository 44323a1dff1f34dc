"""Hand-made attention losses: the heuristics a learned loss is compared against.

``CentroidLoss`` is the usual one: the centroid of each object's map, and a hinge on their offset
along the relation's axis ("left of": the subject's centroid must sit ``margin`` left of the
object's; axis and sign come from ``relations.TABLE``). It implements ``losses.RelationLoss``, so
``Steerer`` runs it unchanged.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .layout import centroids
from .relations import RELATIONS, relation


class CentroidLoss:
    """Hinge on the subject/object centroid offset; ``probs`` are a softmax of the signed offsets
    along each relation's direction (for records and plots only). Denoising steps are ignored."""

    n_maps = 2

    def __init__(self, map_size: int = 16, margin: float = 0.2, relations: tuple[str, ...] = RELATIONS):
        self.map_size, self.margin = int(map_size), float(margin)
        self.relations = tuple(relation(r).name for r in relations)
        self.meta: dict = {}

    def step_row(self, step: int, num_steps: int) -> int:
        return 0

    def to(self, device: Any) -> "CentroidLoss":
        return self                                   # torch ops run on the maps' device

    def losses_and_grad(self, maps: Any, labels: Any, steps: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample hinge losses [B], d(sum)/d(maps) for maps [B, 2, S, S], pseudo-probabilities."""
        x = torch.as_tensor(maps).detach()
        x = (x if x.dtype == torch.float64 else x.float()).requires_grad_(True)
        with torch.enable_grad():
            c = centroids(x)                                                             # [B, 2, (x, y)]
            offset = c[:, 0] - c[:, 1]                                                   # [B, 2]
            rels = [relation(self.relations[int(i)]) for i in np.asarray(labels).reshape(-1)]
            axis = torch.tensor([r.axis for r in rels], device=x.device)
            sign = torch.tensor([r.sign for r in rels], dtype=x.dtype, device=x.device)
            along = offset.gather(1, axis[:, None])[:, 0]
            losses = torch.relu(self.margin - sign * along)
            (dx,) = torch.autograd.grad(losses.sum(), x)
        table = [relation(r) for r in self.relations]
        scores = torch.stack([r.sign * offset[:, r.axis] for r in table], 1) * 10
        return losses.detach(), dx, torch.softmax(scores, 1).detach()

    def loss_and_input_grad(self, x: Any, labels: Any, steps: Any = None) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Mean hinge loss over the batch, its gradient w.r.t. maps x [B, 2, S, S], pseudo-probabilities."""
        losses, dsum, probs = self.losses_and_grad(x, labels, steps)
        return float(losses.mean()), dsum / losses.shape[0], probs
