"""Training the relation classifier on map datasets with the ``l2s._C`` fused passes (no torch autograd).

AdamW through ``l2s._C``'s optimiser op, mini-batches of a shuffled training split, the learning
rate halved when validation accuracy stalls, early stopping (the authors' recipe, with our
defaults: lr 1e-3 since the fused MLP is small, weight decay 0.05, batch 64, patience 10).
Validation rows are whole images (both inversions of an image fall on the same side).

Rows come from a ``MapDataset`` in memory or stream from a sharded one (``ShardSplit``: one shard
in memory at a time, shards in a new random order every epoch, rows shuffled within the shard).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Union

import numpy as np

from .classifier import ClassifierConfig, RelationClassifier
from .inversion import MapDataset
from .map_shards import ShardedMaps
from .relations import RELATIONS


@dataclass
class ShardSplit:
    """The rows of a sharded dataset whose source image is (``keep=True``) or is not in ``images``,
    optionally positive-inversion rows only; read shard by shard."""
    data: ShardedMaps
    images: frozenset
    keep: bool
    positive_only: bool = False

    @property
    def meta(self) -> dict:
        return self.data.meta

    def _rows(self, part: MapDataset) -> MapDataset:
        mask = np.isin(part.image, list(self.images)) == self.keep
        if self.positive_only:
            mask &= part.inversion == 0
        return part.subset(np.flatnonzero(mask))

    def parts(self, rng: np.random.Generator | None = None) -> Iterator[MapDataset]:
        order = None if rng is None else rng.permutation(self.data.n_shards)
        for part in self.data.iter_shards(order):
            yield self._rows(part)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts())


Rows = Union[MapDataset, ShardSplit]


def split_shards(data: ShardedMaps, val_fraction: float = 0.15, seed: int = 0,
                 positive_only: bool = False) -> tuple[ShardSplit, ShardSplit]:
    """Train/validation split of a sharded dataset by source image (the manifest's items), read lazily."""
    rng = np.random.default_rng(seed)
    n = int(data.manifest["n_items"])
    val = frozenset(int(i) for i in rng.choice(n, max(1, int(round(val_fraction * n))), replace=False))
    return ShardSplit(data, val, False, positive_only), ShardSplit(data, val, True, positive_only)


def _parts(rows: Rows, rng: np.random.Generator | None = None) -> Iterator[MapDataset]:
    if isinstance(rows, MapDataset):
        yield rows
    else:
        yield from rows.parts(rng)


def _batches(rows: Rows, batch: int, rng: np.random.Generator | None = None) -> Iterator[MapDataset]:
    """Mini-batches: shuffled within each part when ``rng`` is given, in order otherwise."""
    for part in _parts(rows, rng):
        order = rng.permutation(len(part)) if rng is not None else np.arange(len(part))
        for i in range(0, len(order), batch):
            yield part.subset(order[i: i + batch])


def split_by_image(ds: MapDataset, val_fraction: float = 0.15, seed: int = 0) -> tuple[MapDataset, MapDataset]:
    """Train/validation split by source image."""
    images = np.unique(ds.image)
    rng = np.random.default_rng(seed)
    val_images = rng.choice(images, max(1, int(round(val_fraction * len(images)))), replace=False)
    is_val = np.isin(ds.image, val_images)
    return ds.subset(np.flatnonzero(~is_val)), ds.subset(np.flatnonzero(is_val))


def accuracy(clf: RelationClassifier, ds: Rows, batch: int = 512) -> float:
    """Share of rows whose most probable relation is the label."""
    hits = total = 0
    for b in _batches(ds, batch):
        if len(b):
            probs, _ = clf.forward(np.ascontiguousarray(b.maps), b.steps)
            hits += int((np.asarray(probs).argmax(1) == b.labels).sum())
            total += len(b)
    return hits / total if total else float("nan")


@dataclass
class TrainHistory:
    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int = -1


def train_classifier(train: Rows, val: Rows, config: ClassifierConfig | None = None, epochs: int = 150,
                     batch: int = 64, lr: float = 1e-3, weight_decay: float = 0.05, patience: int = 10,
                     plateau: int = 4, seed: int = 0, progress: bool = True) -> tuple[RelationClassifier, TrainHistory]:
    """Train on ``train``; keep the weights of the best validation epoch; stop after ``patience``
    epochs without improvement; halve the learning rate after ``plateau`` such epochs."""
    from tqdm.auto import tqdm
    S = int(train.meta.get("map_size", 0)) if isinstance(train, ShardSplit) else train.maps.shape[-1]
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
        losses, n_rows = [], 0
        for b in _batches(train, batch, rng):
            if len(b):
                losses.append(clf.train_step(np.ascontiguousarray(b.maps), b.labels, b.steps, lr=lr,
                                             weight_decay=weight_decay))
                n_rows += len(b)
        if not losses:
            raise ValueError("the training split has no rows")
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
                       "best_epoch": hist.best_epoch, "train_rows": n_rows}
    return clf, hist
