"""A presence term beside a relation loss: each named object's map must peak somewhere.

Objects the model does not draw leave a diffuse attention map; Attend-and-Excite lifts such maps
with a hinge on their maximum. ``WithPresence`` adds that hinge to any ``losses.RelationLoss`` on
the same (subject, object) maps it reads, so one steering pass asks for the relation AND for both
objects: ``loss_b = relation_loss_b + weight * sum_obj relu(target - max(map_obj))`` (maps are the
relation loss's input, normalised to sum 1, so ``target`` is a share of the map's mass in its
brightest cell).
"""
from __future__ import annotations

from typing import Any

import torch

from .losses import RelationLoss


class WithPresence:
    """``base`` plus ``weight`` x the presence hinge of each of the two maps (see the module doc)."""

    def __init__(self, base: RelationLoss, weight: float = 10.0, target: float = 0.05):
        if not (weight >= 0 and 0 < target < 1):
            raise ValueError(f"presence weight must be >= 0 and target in (0, 1), got {weight}, {target}")
        self.base, self.weight, self.target = base, float(weight), float(target)
        self.relations, self.map_size, self.n_maps = base.relations, base.map_size, base.n_maps
        self.meta = base.meta

    def step_row(self, step: int, num_steps: int) -> int:
        return self.base.step_row(step, num_steps)

    def to(self, device: Any) -> "WithPresence":
        self.base.to(device)
        return self

    def losses_and_grad(self, maps: Any, labels: Any, steps: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        losses, dmaps, probs = self.base.losses_and_grad(maps, labels, steps)
        x = torch.as_tensor(maps)
        flat = x.reshape(x.shape[0], x.shape[1], -1).float()                  # [B, 2, S*S]
        peak, where = flat.max(-1)                                            # [B, 2]
        short = (self.target - peak).clamp_min(0)
        presence = short.sum(1)
        # d relu(target - max) / d map = -1 at the argmax while the peak is under the target
        d = torch.zeros_like(flat)
        d.scatter_(-1, where[..., None], -(short > 0).to(flat.dtype)[..., None] * self.weight)
        losses = torch.as_tensor(losses, device=x.device) + self.weight * presence
        dmaps = torch.as_tensor(dmaps, device=x.device) + d.reshape(x.shape).to(x.dtype)
        return losses, dmaps, probs
