"""Training the relation classifier on map datasets with the ``l2s._C`` fused passes (no torch autograd).

AdamW through ``l2s._C``'s optimiser op, mini-batches of a shuffled training split, the learning
rate halved when validation accuracy stalls, early stopping (the authors' recipe, with our
defaults: lr 1e-3 since the fused MLP is small, weight decay 0.05, batch 64, patience 10).
Validation rows are whole images (both inversions of an image fall on the same side).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .classifier import ClassifierConfig, RelationClassifier
from .inversion import MapDataset
from .relations import RELATIONS


def split_by_image(ds: MapDataset, val_fraction: float = 0.15, seed: int = 0) -> tuple[MapDataset, MapDataset]:
    """Train/validation split by source image."""
    images = np.unique(ds.image)
    rng = np.random.default_rng(seed)
    val_images = rng.choice(images, max(1, int(round(val_fraction * len(images)))), replace=False)
    is_val = np.isin(ds.image, val_images)
    return ds.subset(np.flatnonzero(~is_val)), ds.subset(np.flatnonzero(is_val))


def accuracy(clf: RelationClassifier, ds: MapDataset, batch: int = 512) -> float:
    """Share of rows whose most probable relation is the label."""
    if len(ds) == 0:
        return float("nan")
    hits = 0
    for i in range(0, len(ds), batch):
        probs, _ = clf.forward(np.ascontiguousarray(ds.maps[i: i + batch]), ds.steps[i: i + batch])
        hits += int((np.asarray(probs).argmax(1) == ds.labels[i: i + batch]).sum())
    return hits / len(ds)


@dataclass
class TrainHistory:
    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int = -1


def train_classifier(train: MapDataset, val: MapDataset, config: ClassifierConfig | None = None, epochs: int = 150,
                     batch: int = 64, lr: float = 1e-3, weight_decay: float = 0.05, patience: int = 10,
                     plateau: int = 4, seed: int = 0, progress: bool = True) -> tuple[RelationClassifier, TrainHistory]:
    """Train on ``train``; keep the weights of the best validation epoch; stop after ``patience``
    epochs without improvement; halve the learning rate after ``plateau`` such epochs."""
    from tqdm.auto import tqdm
    S = train.maps.shape[-1]
    labelled_by = tuple(train.meta.get("relations", RELATIONS))      # the order the dataset's labels index
    config = config or ClassifierConfig(map_size=S, relations=labelled_by)
    if tuple(config.relations) != labelled_by:
        raise ValueError(f"the dataset's labels index relations {list(labelled_by)} but the classifier's class order "
                         f"is {list(config.relations)}: build the dataset with relations=config.relations")
    if config.map_size != S:
        raise ValueError(f"maps are {S}x{S} but the classifier expects {config.map_size}x{config.map_size}")
    clf = RelationClassifier(config, seed=seed)
    rng = np.random.default_rng(seed)
    hist = TrainHistory()
    best, best_params, since_best = -1.0, None, 0
    bar = tqdm(range(epochs), desc="train classifier", disable=not progress or None)
    for epoch in bar:
        order = rng.permutation(len(train))
        losses = []
        for i in range(0, len(order), batch):
            rows = order[i: i + batch]
            losses.append(clf.train_step(np.ascontiguousarray(train.maps[rows]), train.labels[rows], train.steps[rows],
                                         lr=lr, weight_decay=weight_decay))
        acc = accuracy(clf, val)
        hist.train_loss.append(float(np.mean(losses)))
        hist.val_accuracy.append(acc)
        hist.lr.append(lr)
        bar.set_postfix(loss=f"{hist.train_loss[-1]:.3f}", val_acc=f"{acc:.3f}")
        if acc > best:
            best, best_params, since_best, hist.best_epoch = acc, np.array(clf.params, copy=True), 0, epoch
        else:
            since_best += 1
            if since_best % plateau == 0:
                lr /= 2
            if since_best >= patience:
                break
    clf.params[:] = best_params
    clf.config.meta = {**train.meta, "val_accuracy": best, "epochs_run": len(hist.val_accuracy),
                       "best_epoch": hist.best_epoch, "train_rows": len(train)}
    return clf, hist
