"""l2s/losses.py: the RelationLoss protocol, its autograd function, labels in a loss's own order."""
import numpy as np
import pytest
import torch

from l2s.baselines import CentroidLoss
from l2s.classifier import ClassifierConfig, RelationClassifier
from l2s.inversion import MapDataset
from l2s.losses import RelationLoss, labels_for, relation_loss
from l2s.synthetic import relation_pairs
from l2s.train_classifier import accuracy, train_classifier

SHUFFLED = ("below", "left of", "above", "right of")


def test_classifier_and_centroid_implement_the_protocol():
    assert isinstance(RelationClassifier(ClassifierConfig(map_size=8, hidden1=8, hidden2=8)), RelationLoss)
    assert isinstance(CentroidLoss(8), RelationLoss)


@pytest.mark.parametrize("make", [
    lambda: RelationClassifier(ClassifierConfig(map_size=6, hidden1=16, hidden2=8, n_steps=10, step_dim=4), seed=1),
    lambda: CentroidLoss(6, margin=0.5),
])
def test_autograd_function_gives_per_sample_gradients(make, rng):
    """d(sum_b w_b loss_b)/d maps through the Function equals finite differences of the weighted losses."""
    loss = make()
    x = torch.tensor(rng.random((3, 2, 6, 6)) + 0.1, dtype=torch.float64 if isinstance(loss, CentroidLoss) else torch.float32)
    labels, steps = np.array([0, 2, 3], np.int32), np.array([1, 4, 9], np.int32)
    w = torch.tensor([0.5, 2.0, -1.0], dtype=x.dtype)
    xg = x.clone().requires_grad_(True)
    losses, probs = relation_loss(loss, xg, labels, steps)
    assert losses.shape == (3,) and probs.shape == (3, 4) and not probs.requires_grad
    (g,) = torch.autograd.grad((w * losses).sum(), xg)
    eps = 1e-3 if x.dtype == torch.float32 else 1e-6
    for idx in [(0, 0, 1, 2), (1, 1, 3, 3), (2, 0, 5, 0)]:
        xp, xm = x.clone(), x.clone()
        xp[idx] += eps
        xm[idx] -= eps
        lp = loss.losses_and_grad(xp, labels, steps)[0]
        lm = loss.losses_and_grad(xm, labels, steps)[0]
        fd = float((w * (torch.as_tensor(lp) - torch.as_tensor(lm))).sum()) / (2 * eps)
        assert g[idx].item() == pytest.approx(fd, rel=2e-2, abs=2e-4)


def test_labels_are_indexed_through_the_loss_own_order():
    clf = RelationClassifier(ClassifierConfig(map_size=8, hidden1=8, hidden2=8, relations=SHUFFLED))
    assert labels_for(clf, ["left of", "below"]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="not among"):
        labels_for(clf, ["behind"])


def test_a_classifier_with_another_class_order_is_trained_and_read_by_name():
    """Synthetic pairs labelled in a shuffled order train a classifier whose predictions, read
    through its own relation list, name the true relations; a dataset labelled in another order than
    the classifier's is refused instead of silently mislabelled."""
    maps, y, steps = relation_pairs(3000, 8, seed=0, relations=SHUFFLED, n_steps=10)
    meta = {"relations": list(SHUFFLED)}
    ds = MapDataset(maps, y, steps, np.zeros(len(y), np.int8), np.arange(len(y)), meta)
    train, val = ds.subset(np.arange(2500)), ds.subset(np.arange(2500, 3000))
    clf, _ = train_classifier(train, val, ClassifierConfig(map_size=8, hidden1=32, hidden2=16, n_steps=10,
                                                           step_dim=4, relations=SHUFFLED), epochs=6, progress=False)
    assert accuracy(clf, val) > 0.9
    names = clf.predict(val.maps[:200], val.steps[:200])
    assert np.mean([n == SHUFFLED[l] for n, l in zip(names, val.labels[:200])]) > 0.9
    with pytest.raises(ValueError, match="class order"):
        train_classifier(train, val, ClassifierConfig(map_size=8, hidden1=8, hidden2=8, n_steps=10, step_dim=4),
                         epochs=1, progress=False)
