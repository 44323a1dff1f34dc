"""l2s/presence.py: the presence hinge and the separation term beside a relation loss."""
import numpy as np
import pytest
import torch

from l2s.baselines import CentroidLoss
from l2s.losses import RelationLoss, relation_loss
from l2s.presence import WithPresence, WithSeparation
from l2s.synthetic import blob_maps


def _maps(sigma, rng):
    centres = np.array([[[0.25, 0.5], [0.75, 0.5]]] * 2)
    return torch.tensor(blob_maps(centres, 8, sigma), dtype=torch.float64) + torch.tensor(rng.random((2, 2, 8, 8))) * 1e-4


def _check_against_finite_differences(loss, x, labels, steps, g, cells, rel, abs_tol, eps=1e-6):
    """g (d sum of losses / d maps) at ``cells`` against central differences of ``loss``."""
    for idx in cells:
        xp, xm = x.clone(), x.clone()
        xp[idx] += eps
        xm[idx] -= eps
        fd = float((loss.losses_and_grad(xp, labels, steps)[0] - loss.losses_and_grad(xm, labels, steps)[0]).sum()) / (2 * eps)
        assert g[idx].item() == pytest.approx(fd, rel=rel, abs=abs_tol)


def test_is_a_relation_loss_and_adds_nothing_above_the_target(rng):
    base = CentroidLoss(8, margin=0.1)
    loss = WithPresence(base, weight=10.0, target=0.01)
    assert isinstance(loss, RelationLoss) and loss.relations == base.relations
    x = _maps(0.05, rng)                             # sharp blobs: peaks far above 0.01
    labels, steps = np.zeros(2, np.int32), np.zeros(2, np.int32)
    l1, d1, _ = base.losses_and_grad(x, labels, steps)
    l2, d2, _ = loss.losses_and_grad(x, labels, steps)
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(d1, d2)


def test_the_hinge_and_its_gradient_on_diffuse_maps(rng):
    loss = WithPresence(CentroidLoss(8, margin=0.1), weight=3.0, target=0.2)
    x = _maps(0.4, rng)                              # diffuse: peaks well under 0.2
    labels, steps = np.array([0, 1], np.int32), np.zeros(2, np.int32)
    xg = x.clone().requires_grad_(True)
    losses, _ = relation_loss(loss, xg, labels, steps)
    peaks = x.reshape(2, 2, -1).max(-1).values
    base = CentroidLoss(8, margin=0.1).losses_and_grad(x, labels, steps)[0]
    torch.testing.assert_close(losses.detach(), base + 3.0 * (0.2 - peaks).sum(1))
    (g,) = torch.autograd.grad(losses.sum(), xg)
    _check_against_finite_differences(loss, x, labels, steps, g, [(0, 0, 3, 4), (1, 1, 4, 3), (0, 1, 0, 0)], 1e-3, 1e-6)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="presence"):
        WithPresence(CentroidLoss(8), weight=-1.0)
    with pytest.raises(ValueError, match="presence"):
        WithPresence(CentroidLoss(8), target=1.5)


def test_separation_is_the_maps_overlap_with_its_gradient(rng):
    base = CentroidLoss(8, margin=0.1)
    loss = WithSeparation(base, weight=2.0)
    assert isinstance(loss, RelationLoss) and loss.relations == base.relations
    x = torch.tensor(rng.random((3, 2, 8, 8)))
    x = x / x.sum((-1, -2), keepdim=True)
    labels, steps = np.array([0, 1, 2], np.int32), np.zeros(3, np.int32)
    xg = x.clone().requires_grad_(True)
    losses, _ = relation_loss(loss, xg, labels, steps)
    expected = base.losses_and_grad(x, labels, steps)[0] + 2.0 * 64 * np.einsum("bij,bij->b", x[:, 0].numpy(), x[:, 1].numpy())
    torch.testing.assert_close(losses.detach(), torch.as_tensor(expected, dtype=losses.dtype))
    (g,) = torch.autograd.grad(losses.sum(), xg)
    _check_against_finite_differences(loss, x, labels, steps, g, [(0, 0, 3, 4), (1, 1, 4, 3), (2, 1, 0, 7)], 1e-4, 1e-7)
    # disjoint supports: no term, the base loss alone
    apart = torch.zeros(1, 2, 8, 8, dtype=torch.float64)
    apart[0, 0, :, :4], apart[0, 1, :, 4:] = 1 / 32, 1 / 32
    one = np.zeros(1, np.int32)
    torch.testing.assert_close(loss.losses_and_grad(apart, one, one)[0], base.losses_and_grad(apart, one, one)[0])
    with pytest.raises(ValueError, match="separation"):
        WithSeparation(base, weight=-1.0)
