"""Map datasets as shards: generation that survives a crash and splits across processes.

A dataset folder holds ``shards/shard-NNNNN.safetensors`` (maps as float16, labels, steps, inversion
kind, source image id: ``MapDataset``'s tensors) each with its ``.json`` (the rows' metadata and the
range of source items it covers), and ``manifest.json`` once every shard exists. Shard k always
covers source items ``[k * shard_size, (k + 1) * shard_size)`` and every item's rows depend only on
its own index (``build_dataset(first_index=...)``), so:

- a rerun after a crash or a kill skips the finished shards and redoes the partial one (a shard is
  written to temporary names and renamed into place, its ``.json`` last: a shard without its
  ``.json`` is not finished); nothing is lost and nothing is counted twice;
- processes split the shards between them (``shards_of(rank, world)``: rank r takes shards r, r + W,
  ...), each writes its own, and one of them (rank 0) writes the manifest when all exist; the merged
  dataset equals the one a single process makes, row for row.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .inversion import MapDataset

MANIFEST = "manifest.json"
SHARD_DIR = "shards"


def shard_stem(folder: str | Path, k: int) -> Path:
    """``folder/shards/shard-{k:05d}`` (add ``.safetensors`` / ``.json``)."""
    return Path(folder) / SHARD_DIR / f"shard-{k:05d}"


def shard_count(n_items: int, shard_size: int) -> int:
    """How many shards ``n_items`` source items make at ``shard_size`` items per shard."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return -(-n_items // shard_size)


def shards_of(n_shards: int, rank: int = 0, world: int = 1) -> list[int]:
    """The shards process ``rank`` of ``world`` makes: rank, rank + world, ..."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    return list(range(rank, n_shards, world))


def shard_done(folder: str | Path, k: int) -> bool:
    """A shard is finished when both its files are in place (the ``.json`` is renamed in last)."""
    stem = shard_stem(folder, k)
    return stem.with_suffix(".json").exists() and stem.with_suffix(".safetensors").exists()


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary name beside ``path``, then rename it into place: a reader (or a
    rerun after a kill) sees the whole file or none of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_shard(folder: str | Path, k: int, ds: MapDataset, items: tuple[int, int]) -> Path:
    """Write shard k (rows of source items ``items = (first, stop)``) under temporary names, then
    rename the tensors and finally the ``.json`` into place."""
    from safetensors.numpy import save_file
    stem = shard_stem(folder, k)
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors = ds.tensors()
    write_atomic(stem.with_suffix(".safetensors"), lambda p: save_file(tensors, str(p)))
    info = {"shard": k, "items": list(items), "rows": len(ds), "meta": ds.meta}
    write_atomic(stem.with_suffix(".json"), lambda p: p.write_text(json.dumps(info, indent=1, sort_keys=True)))
    return stem.with_suffix(".safetensors")


def load_shard(folder: str | Path, k: int) -> MapDataset:
    """Shard k as a MapDataset (maps back to float32)."""
    from safetensors.numpy import load_file
    stem = shard_stem(folder, k)
    if not shard_done(folder, k):
        raise FileNotFoundError(f"shard {k} of {folder} is missing or unfinished ({stem}.json / .safetensors)")
    info = json.loads(stem.with_suffix(".json").read_text())
    return MapDataset.from_tensors(load_file(str(stem.with_suffix(".safetensors"))), info["meta"])


def make_shards(folder: str | Path, n_items: int, shard_size: int,
                make_rows: Callable[[int, int], MapDataset], rank: int = 0, world: int = 1,
                progress: bool = True) -> list[int]:
    """Make this process's unfinished shards: ``make_rows(first, stop)`` gives the rows of source
    items [first, stop). Returns the shards made now (finished ones are skipped)."""
    from tqdm.auto import tqdm
    n_shards = shard_count(n_items, shard_size)
    todo = [k for k in shards_of(n_shards, rank, world) if not shard_done(folder, k)]
    made = []
    for k in tqdm(todo, desc=f"map shards (rank {rank})" if world > 1 else "map shards", disable=not progress or None):
        stem = shard_stem(folder, k)
        for stale in stem.parent.glob(f".{stem.name}.*.tmp"):  # left by a process killed while writing shard k
            stale.unlink(missing_ok=True)
        first, stop = k * shard_size, min(n_items, (k + 1) * shard_size)
        save_shard(folder, k, make_rows(first, stop), (first, stop))
        made.append(k)
    return made


def write_manifest(folder: str | Path, n_items: int, shard_size: int, meta: dict) -> dict:
    """Check every shard is finished and write ``manifest.json`` (shards, rows, items, meta)."""
    folder = Path(folder)
    n_shards = shard_count(n_items, shard_size)
    missing = [k for k in range(n_shards) if not shard_done(folder, k)]
    if missing:
        raise RuntimeError(f"{len(missing)} of {n_shards} shards are not finished (first: {shard_stem(folder, missing[0])}): "
                           "rerun the same command to make them")
    infos = [json.loads(shard_stem(folder, k).with_suffix(".json").read_text()) for k in range(n_shards)]
    rows = [info["rows"] for info in infos]
    dropped = [n for info in infos for n in info["meta"].get("dropped_psnr", [])]
    manifest = {"format": 1, "n_items": n_items, "shard_size": shard_size, "n_shards": n_shards,
                "rows": rows, "total_rows": int(sum(rows)), "dropped_psnr": dropped, "meta": meta}
    write_atomic(folder / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1, sort_keys=True)))
    return manifest


class ShardedMaps:
    """A finished sharded map dataset (read through its manifest), streamed shard by shard."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: the dataset is unfinished (rerun the command that makes it)")
        self.manifest = json.loads(path.read_text())
        self.meta: dict = self.manifest["meta"]

    def __len__(self) -> int:
        return int(self.manifest["total_rows"])

    @property
    def n_shards(self) -> int:
        """The number of shards (the manifest's)."""
        return int(self.manifest["n_shards"])

    def shard(self, k: int) -> MapDataset:
        """Shard k in memory."""
        return load_shard(self.folder, k)

    def iter_shards(self, order: Sequence[int] | None = None) -> Iterator[MapDataset]:
        """Shards one at a time (in ``order`` if given): memory holds one shard, not the dataset."""
        for k in (range(self.n_shards) if order is None else order):
            yield self.shard(int(k))

    def load(self) -> MapDataset:
        """Every row in memory, in shard order (image ids are global source-item indices)."""
        data = MapDataset.concat(list(self.iter_shards()), renumber_images=False)
        data.meta = dict(self.meta)
        return data
