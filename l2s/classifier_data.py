"""Relation-classifier training data for any diffusers pipeline: a data spec, the pipeline's own
inversion and capture, sharded map datasets (``map_shards``), data-parallel across processes.

Data specs (``data_spec.parse_data_spec``): ``boxes:FOLDER`` (``FOLDER/boxes.json``, see
``datasets.box_folder_refs``), ``gqa:SCENE_GRAPHS.json,IMAGE_DIR`` or ``shapes`` (scenes of the shapes
world, needs ``l2s-shapes``). Items are listed up front (images unread); each shard reads, encodes
(the pipeline's VAE for latent models) and inverts its own items.

Processes: ``make_map_dataset(..., rank, world, barrier)`` makes the shards of one rank (rank, world
and barrier from ``l2s.distributed.distributed_rank``); rank 0 writes the manifest after the others
are done.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from .data_spec import DataSpec
from .inversion import MapDataset, MapInverter, RelationExample, build_dataset
from .map_shards import ShardedMaps, make_shards, write_atomic, write_manifest
from .relations import RELATIONS


def list_items(spec: DataSpec, max_items: int | None, seed: int = 0, attributes: bool = False) -> list[Any]:
    """The spec's examples, images unread where they live on disk (``ExampleRef``: reading its list
    checks every entry, before any model work); shapes scenes are drawn here (small). ``load_item``
    turns one into a ``RelationExample``. ``attributes``: the objects' attributes give ("is")
    examples too (boxes and GQA)."""
    from .datasets import box_folder_refs, gqa_refs
    if spec.kind == "boxes":
        items = box_folder_refs(spec.paths[0], max_items, attributes=attributes)
        where = f"{spec.paths[0]}/boxes.json"
    elif spec.kind == "gqa":
        items = gqa_refs(spec.paths[0], spec.paths[1], max_items, seed=seed, attributes=attributes)
        where = spec.paths[0]
    else:
        from l2s_shapes.scenes import relation_examples
        items = relation_examples(max_items or 2000, seed=seed, line_fraction=spec.line_fraction)
        where = "the shapes world"
    if not items:
        raise ValueError(f"{where} gives no usable example (two differently named objects in exactly one "
                         f"relation of {list(RELATIONS)})")
    return list(items)


def load_item(item: Any, size: int) -> RelationExample:
    """A listed item as an example with its image at size x size (shapes scenes are drawn at 64)."""
    return item if isinstance(item, RelationExample) else item.load(size)


def default_size(pipe: Any) -> int:
    """The pipeline's native image side: its default sample size (Flux) or its denoiser's, times the
    VAE's scale (pixel models: the sample size)."""
    den = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    sample = getattr(pipe, "default_sample_size", None) or getattr(getattr(den, "config", None), "sample_size", None)
    if isinstance(sample, (tuple, list)):
        sample = sample[0]
    if sample is None:
        raise ValueError(f"{type(pipe).__name__}: no sample_size in its denoiser config; pass --size")
    return int(sample) * int(getattr(pipe, "vae_scale_factor", 1) if getattr(pipe, "vae", None) is not None else 1)


SETTINGS = "settings.json"


def check_settings(out: str | Path, settings: dict) -> None:
    """``out/settings.json`` records what the shards are made of; a rerun with other settings into
    the same folder would mix two datasets, so it is refused (every rank writes the same file)."""
    path = Path(out) / SETTINGS
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(f"{out} holds a map dataset made with other settings ({', '.join(diff)}): use another "
                             "folder, or delete it to start over")
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda p: p.write_text(json.dumps(settings, indent=1, sort_keys=True)))


def make_map_dataset(pipe: Any, out: str | Path, spec: DataSpec, step_indices: Sequence[int],
                     num_inference_steps: int = 25, map_size: int = 16, size: int | None = None,
                     max_items: int | None = None, dual: bool = True, mode: str = "noise",
                     psnr_floor: float | None = None, fixed_point_iterations: int = 5, seed: int = 0,
                     shard_size: int = 64, rank: int = 0, world: int = 1, barrier: Callable[[], None] = lambda: None,
                     relations: Sequence[str] = RELATIONS, progress: bool = True,
                     items: Sequence[Any] | None = None, stack: bool = False) -> ShardedMaps | None:
    """Make (or finish) the sharded map dataset of ``spec`` under ``out``: this rank's shards, then,
    on rank 0 after every rank is done, the manifest. Returns the dataset (rank 0; None elsewhere).
    Rerun with the same arguments after a crash: finished shards are kept, the rest are made.
    ``items``: the spec's ``list_items`` when the caller listed them already; ``stack``: per-(layer,
    head) map stacks for the authors' transformer instead of averaged maps."""
    size = size or default_size(pipe)
    items = list(items) if items is not None else list_items(spec, max_items, seed)
    with MapInverter(pipe, map_size=map_size, num_inference_steps=num_inference_steps, mode=mode, image_size=size,
                     psnr_floor=psnr_floor, fixed_point_iterations=fixed_point_iterations, stack=stack) as inverter:
        meta = {**inverter.meta(), "relations": list(relations), "dual": dual,
                "step_indices": [int(i) for i in step_indices], "seed": seed, "data": spec.text(), "image_size": size,
                "n_items": len(items), "shard_size": shard_size}
        check_settings(out, meta)

        def rows(first: int, stop: int) -> MapDataset:
            return build_dataset(inverter, [load_item(it, size) for it in items[first:stop]], step_indices, dual=dual,
                                 seed=seed, progress=False, relations=relations, first_index=first)
        make_shards(out, len(items), shard_size, rows, rank=rank, world=world, progress=progress)
    barrier()
    if rank != 0:
        return None
    write_manifest(out, len(items), shard_size, meta)
    return ShardedMaps(out)
