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
from typing import Any, Iterator, Union

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
        """The dataset's metadata (relations, map size, kind...)."""
        return self.data.meta

    def _rows(self, part: MapDataset) -> MapDataset:
        mask = np.isin(part.image, list(self.images)) == self.keep
        if self.positive_only:
            mask &= part.inversion == 0
        return part.subset(np.flatnonzero(mask))

    def parts(self, rng: np.random.Generator | None = None) -> Iterator[MapDataset]:
        """This split's rows shard by shard (shards in a random order when ``rng`` is given)."""
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


def accuracy(clf: Any, ds: Rows, batch: int = 512) -> float:
    """Share of rows whose most probable relation is the label (any classifier kind)."""
    hits = total = 0
    for b in _batches(ds, batch):
        if len(b):
            out = clf.forward(np.ascontiguousarray(b.maps), b.steps)
            probs = out[0] if isinstance(out, tuple) else out          # the MLP returns (probs, losses)
            hits += int((np.asarray(probs.cpu() if hasattr(probs, "cpu") else probs).argmax(1) == b.labels).sum())
            total += len(b)
    return hits / total if total else float("nan")


@dataclass
class TrainHistory:
    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int = -1


def _relations_of(train: Rows) -> tuple[str, ...]:
    return tuple(train.meta.get("relations", RELATIONS))          # the order the dataset's labels index


def fit(model: Any, train: Rows, val: Rows, epochs: int = 150, batch: int = 64, lr: float = 1e-3,
        weight_decay: float = 0.05, patience: int = 10, plateau: int = 4, seed: int = 0, progress: bool = True,
        desc: str = "train classifier") -> tuple[TrainHistory, int]:
    """The training loop any classifier kind shares: ``model.train_step`` on shuffled mini-batches,
    validation accuracy each epoch, the best epoch's weights kept (``snapshot``/``restore``), the
    learning rate halved after ``plateau`` epochs without improvement, a stop after ``patience``.
    Returns the history and the number of training rows."""
    from tqdm.auto import tqdm
    rng = np.random.default_rng(seed)
    hist = TrainHistory()
    best, best_state, since_best, n_rows = -1.0, None, 0, 0
    bar = tqdm(range(epochs), desc=desc, disable=not progress or None)
    for epoch in bar:
        losses, n_rows = [], 0
        for b in _batches(train, batch, rng):
            if len(b):
                losses.append(model.train_step(np.ascontiguousarray(b.maps), b.labels, b.steps, lr=lr,
                                               weight_decay=weight_decay))
                n_rows += len(b)
        if not losses:
            raise ValueError("the training split has no rows")
        acc = accuracy(model, val)
        hist.train_loss.append(float(np.mean(losses)))
        hist.val_accuracy.append(acc)
        hist.lr.append(lr)
        bar.set_postfix(loss=f"{hist.train_loss[-1]:.3f}", val_acc=f"{acc:.3f}")
        if acc > best:
            best, best_state, since_best, hist.best_epoch = acc, model.snapshot(), 0, epoch
        else:
            since_best += 1
            if since_best % plateau == 0:
                lr /= 2
            if since_best >= patience:
                break
    if best_state is not None:                     # None: validation never scored (no rows): the last weights
        model.restore(best_state)
    return hist, n_rows


def _fit_meta(train: Rows, hist: TrainHistory, n_rows: int) -> dict:
    return {**train.meta, "val_accuracy": max(hist.val_accuracy), "epochs_run": len(hist.val_accuracy),
            "best_epoch": hist.best_epoch, "train_rows": n_rows}


def train_classifier(train: Rows, val: Rows, config: ClassifierConfig | None = None, epochs: int = 150,
                     batch: int = 64, lr: float = 1e-3, weight_decay: float = 0.05, patience: int = 10,
                     plateau: int = 4, seed: int = 0, progress: bool = True) -> tuple[RelationClassifier, TrainHistory]:
    """Train the MLP classifier (fused C passes) on layer-averaged maps with ``fit``."""
    S = int(train.meta.get("map_size", 0)) if isinstance(train, ShardSplit) else train.maps.shape[-1]
    labelled_by = _relations_of(train)
    config = config or ClassifierConfig(map_size=S, relations=labelled_by)
    if tuple(config.relations) != labelled_by:
        raise ValueError(f"the dataset's labels index relations {list(labelled_by)} but the classifier's class order "
                         f"is {list(config.relations)}: build the dataset with relations=config.relations")
    if config.map_size != S:
        raise ValueError(f"maps are {S}x{S} but the classifier expects {config.map_size}x{config.map_size}")
    clf = RelationClassifier(config, seed=seed)
    hist, n_rows = fit(clf, train, val, epochs, batch, lr, weight_decay, patience, plateau, seed, progress)
    clf.config.meta = _fit_meta(train, hist, n_rows)
    return clf, hist


def train_transformer(train: Rows, val: Rows, epochs: int = 60, batch: int = 64, lr: float = 3e-4,
                      weight_decay: float = 0.05, patience: int = 10, plateau: int = 4, seed: int = 0,
                      config: dict | None = None, progress: bool = True) -> tuple[Any, TrainHistory]:
    """Train the authors' transformer (``authors.AuthorsClassifier``, torch) on map stacks
    [N, 2, C, S, S] whose steps are denoising-step indices (the embedding rows) with ``fit``."""
    from .authors import AuthorsClassifier
    meta = train.meta
    if meta.get("map_kind") != "stack":
        raise ValueError("the transformer reads per-(layer, head) map stacks: make the dataset with the stack capture "
                         "(train-classifier --kind transformer)")
    clf = AuthorsClassifier.new(_relations_of(train), int(meta["input_channels"]), int(meta["num_inference_steps"]),
                                list(meta["step_indices"]), config=config, meta=dict(meta), seed=seed)
    hist, n_rows = fit(clf, train, val, epochs, batch, lr, weight_decay, patience, plateau, seed, progress,
                       desc="train transformer")
    clf.meta.update(_fit_meta(train, hist, n_rows))
    return clf, hist
