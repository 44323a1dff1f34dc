"""The loss protocol: what steering, inversion and evaluation need of a loss on subject/object maps.

Every relation loss — the fused MLP classifier (``classifier.RelationClassifier``), the hand-made
centroid hinge (``baselines.CentroidLoss``), the authors' transformer classifier — implements
``RelationLoss``. ``relation_loss`` applies one as a ``torch.autograd.Function``, so maps -> loss ->
latent is one autograd graph, like the map ops of ``capture.py``.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from .relations import label_indices


@runtime_checkable
class RelationLoss(Protocol):
    """A loss on the maps of two objects (subject, object) toward a requested relation.

    relations: the loss's own class order (labels index this list, never ``relations.RELATIONS``).
    map_size: side S of the maps it reads; n_maps: maps per sample (2: subject, object).
    meta: where its maps come from (model, layers, steps, map kind) and its recommended steering
        settings (``meta["steering"]``); {} when it has none.
    """
    relations: tuple[str, ...]
    map_size: int
    n_maps: int
    meta: dict

    def step_row(self, step: int, num_steps: int) -> int:
        """The step-embedding row of denoising step ``step`` of ``num_steps`` (0 if steps are ignored)."""
        ...

    def losses_and_grad(self, maps: torch.Tensor, labels: np.ndarray,
                        steps: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample losses [B], d(sum of losses)/d(maps) (maps' shape) and class probabilities
        [B, len(relations)] for maps [B, n_maps, S, S], int32 labels [B] and step rows [B]."""
        ...

    def to(self, device: Any) -> "RelationLoss":
        """Move to a torch device; returns self."""
        ...


class RelationLossFn(torch.autograd.Function):
    """(losses [B], probs [B, K]) = loss(maps, labels, steps); backward: dlosses[b] * d loss_b / d maps[b]."""

    @staticmethod
    def forward(ctx, maps, loss, labels, steps):
        losses, dmaps, probs = loss.losses_and_grad(maps.detach(), labels, steps)
        losses = torch.as_tensor(losses, device=maps.device)
        ctx.save_for_backward(torch.as_tensor(dmaps, device=maps.device))
        probs = torch.as_tensor(probs, device=maps.device)
        ctx.mark_non_differentiable(probs)
        return losses, probs

    @staticmethod
    def backward(ctx, dlosses, dprobs):
        (dmaps,) = ctx.saved_tensors
        scale = dlosses.reshape((-1,) + (1,) * (dmaps.dim() - 1)).to(dmaps.dtype)
        return dmaps * scale, None, None, None


def relation_loss(loss: RelationLoss, maps: torch.Tensor, labels: Any, steps: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample losses [B] (differentiable w.r.t. ``maps``) and probabilities [B, K]."""
    B = int(maps.shape[0])
    return RelationLossFn.apply(maps, loss, _rows(labels, B), _rows(steps, B))


def labels_for(loss: RelationLoss, relation_names: Sequence[str]) -> np.ndarray:
    """int32 labels of relation names in ``loss``'s own class order."""
    return np.array(label_indices(relation_names, loss.relations), np.int32)


def _rows(v: Any, batch: int) -> np.ndarray:
    a = np.asarray(v.detach().cpu() if torch.is_tensor(v) else v)
    if a.ndim == 0:
        a = np.full(batch, int(a))
    return np.ascontiguousarray(a, dtype=np.int32)
