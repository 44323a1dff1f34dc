"""Terms beside a relation loss on the same (subject, object) maps: presence and separation.

Objects the model does not draw leave a diffuse attention map; Attend-and-Excite lifts such maps
with a hinge on their maximum. ``WithPresence`` adds that hinge to any ``losses.RelationLoss`` on
the same (subject, object) maps it reads, so one steering pass asks for the relation AND for both
objects: ``loss_b = relation_loss_b + weight * sum_obj relu(target - max(map_obj))`` (maps are the
relation loss's input, normalised to sum 1, so ``target`` is a share of the map's mass in its
brightest cell).

``WithSeparation`` adds a repulsion between the two maps, against objects drawn into one blob:
``loss_b = relation_loss_b + weight * S^2 * sum_ij subject_ij * object_ij`` (the maps' overlap, 1
for two uniform S x S maps, 0 for maps with disjoint support).
"""
from __future__ import annotations

from typing import Any

import torch

from .losses import RelationLoss


class _MapTerm:
    """A ``RelationLoss`` that is ``base`` plus a term on its input maps (``term``: per-sample
    values [B] and their map gradient)."""

    def __init__(self, base: RelationLoss):
        self.base = base
        self.relations, self.map_size, self.n_maps = base.relations, base.map_size, base.n_maps
        self.meta = base.meta

    def step_row(self, step: int, num_steps: int) -> int:
        return self.base.step_row(step, num_steps)

    def to(self, device: Any) -> "_MapTerm":
        self.base.to(device)
        return self

    def term(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def losses_and_grad(self, maps: Any, labels: Any, steps: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        losses, dmaps, probs = self.base.losses_and_grad(maps, labels, steps)
        x = torch.as_tensor(maps)
        value, d = self.term(x)
        losses = torch.as_tensor(losses, device=x.device)
        losses = losses + value.to(losses.dtype)
        dmaps = torch.as_tensor(dmaps, device=x.device) + d.to(x.dtype)
        return losses, dmaps, probs


class WithPresence(_MapTerm):
    """``base`` plus ``weight`` x the presence hinge of each of the two maps (see the module doc)."""

    def __init__(self, base: RelationLoss, weight: float = 10.0, target: float = 0.05):
        if not (weight >= 0 and 0 < target < 1):
            raise ValueError(f"presence weight must be >= 0 and target in (0, 1), got {weight}, {target}")
        super().__init__(base)
        self.weight, self.target = float(weight), float(target)

    def term(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.reshape(x.shape[0], x.shape[1], -1).float()                  # [B, 2, S*S]
        peak, where = flat.max(-1)                                            # [B, 2]
        short = (self.target - peak).clamp_min(0)
        presence = short.sum(1)
        # d relu(target - max) / d map = -1 at the argmax while the peak is under the target
        d = torch.zeros_like(flat)
        d.scatter_(-1, where[..., None], -(short > 0).to(flat.dtype)[..., None] * self.weight)
        return self.weight * presence, d.reshape(x.shape)


class WithSeparation(_MapTerm):
    """``base`` plus ``weight`` x the overlap of the subject's and the object's maps (module doc)."""

    def __init__(self, base: RelationLoss, weight: float = 1.0):
        if not weight >= 0:
            raise ValueError(f"separation weight must be >= 0, got {weight}")
        super().__init__(base)
        self.weight = float(weight)

    def term(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.weight * x.shape[-1] * x.shape[-2]
        subject, obj = x[:, 0].double(), x[:, 1].double()
        value = scale * (subject * obj).sum((-1, -2))
        return value, torch.stack([scale * obj, scale * subject], 1)
