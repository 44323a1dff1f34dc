"""Hand-made attention losses: the heuristics a learned loss is compared against.

``CentroidLoss`` is the usual one: the centroid of each object's map, and a hinge on their offset
along the relation's axis ("left of": the subject's centroid must sit ``margin`` left of the
object's). It has the classifier's steering interface (``config``, ``loss_and_input_grad``), so
``Steerer`` runs it unchanged.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .classifier import ClassifierConfig

# (axis, sign): the subject-minus-object offset along axis (0 = x, 1 = y; y points down) must be
# below -margin for sign -1 and above +margin for sign +1
_RULE = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}


class CentroidLoss:
    """Hinge on the subject/object centroid offset; ``probs`` are a softmax of the four signed
    offsets (for records and plots only)."""

    def __init__(self, map_size: int = 16, margin: float = 0.2, n_steps: int = 50):
        self.config = ClassifierConfig(map_size=map_size, n_steps=n_steps, hidden1=1, hidden2=1, kind="centroid")
        self.margin = margin
        self.params = torch.zeros(0)

    def to(self, device: Any) -> "CentroidLoss":
        self.params = self.params.to(device)
        return self

    def loss_and_input_grad(self, x: Any, labels: Any, steps: Any = None) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Mean hinge loss over the batch, its gradient w.r.t. maps x [B, 2, S, S], pseudo-probabilities."""
        maps = torch.as_tensor(x).detach()
        maps = (maps if maps.dtype == torch.float64 else maps.float()).requires_grad_(True)
        S = maps.shape[-1]
        grid = (torch.arange(S, dtype=maps.dtype, device=maps.device) + 0.5) / S
        mass = maps.sum((-2, -1)).clamp_min(1e-8)
        cx = (maps.sum(-2) * grid).sum(-1) / mass                 # [B, 2]
        cy = (maps.sum(-1) * grid).sum(-1) / mass
        offset = torch.stack([cx[:, 0] - cx[:, 1], cy[:, 0] - cy[:, 1]], 1)          # [B, 2]
        rels = [self.config.relations[int(i)] for i in np.asarray(labels).reshape(-1)]
        axis = torch.tensor([_RULE[r][0] for r in rels], device=maps.device)
        sign = torch.tensor([_RULE[r][1] for r in rels], dtype=maps.dtype, device=maps.device)
        along = offset.gather(1, axis[:, None])[:, 0]
        losses = torch.relu(self.margin - sign * along)
        loss = losses.mean()
        (dx,) = torch.autograd.grad(loss, maps)
        scores = torch.stack([-offset[:, 0], offset[:, 0], -offset[:, 1], offset[:, 1]], 1) * 10
        order = [list(_RULE).index(r) for r in self.config.relations]
        return float(loss.detach()), dx, torch.softmax(scores[:, order], 1).detach()
