"""Relation examples from real image collections: GQA scene graphs, or any image folder with boxes.

Relations are derived from the boxes by GenEval's rule (``geneval.relations_between``), after the
image is resized to the model's square input (so the rule sees the geometry the model sees); a
pair is kept when exactly one relation holds and the two object names differ. GQA's own relation
words are not used: they mix spatial and semantic relations and depend on the annotator's view.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from .geneval import relations_between
from .inversion import RelationExample


def _load_image(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The image resized to size x size (uint8 RGB) and its original (width, height)."""
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.uint8), im.size


def pairs_from_boxes(objects: list[tuple[str, tuple[float, float, float, float]]],
                     min_area: float = 0.01) -> Iterator[tuple[str, str, str]]:
    """(subject, relation, object) for every ordered pair of differently named objects whose boxes
    (fractions of the image, y down) satisfy exactly one relation; tiny boxes are skipped."""
    keep = [(n, b) for n, b in objects if (b[2] - b[0]) * (b[3] - b[1]) >= min_area]
    names = [n for n, _ in keep]
    for i, (na, ba) in enumerate(keep):
        for j, (nb, bb) in enumerate(keep):
            if i == j or na == nb or names.count(na) > 1 or names.count(nb) > 1:
                continue
            held = relations_between(ba, bb)
            if len(held) == 1:
                yield na, next(iter(held)), nb


def box_folder_examples(folder: str | Path, size: int = 64, max_examples: int | None = None) -> list[RelationExample]:
    """Examples from ``folder/boxes.json``: ``[{"image": "a.png", "objects": [{"name": "dog",
    "box": [x0, y0, x1, y1]}, ...]}, ...]`` with boxes in pixels of the original image."""
    folder = Path(folder)
    out = []
    for entry in json.loads((folder / "boxes.json").read_text()):
        image, (w, h) = _load_image(folder / entry["image"], size)
        objs = [(o["name"], (o["box"][0] / w, o["box"][1] / h, o["box"][2] / w, o["box"][3] / h)) for o in entry["objects"]]
        pairs = list(pairs_from_boxes(objs))
        if pairs:
            out.extend(RelationExample(image, s, o, r) for s, r, o in pairs)
        if max_examples is not None and len(out) >= max_examples:
            return out[:max_examples]
    return out


def gqa_examples(scene_graphs: str | Path, image_dir: str | Path, size: int = 64, max_examples: int | None = None,
                 max_per_image: int = 2, seed: int = 0) -> list[RelationExample]:
    """Examples from GQA's scene-graph JSON (``{image_id: {"width", "height", "objects": {id:
    {"name", "x", "y", "w", "h", ...}}}}``) and its image folder (``{image_id}.jpg``); at most
    ``max_per_image`` pairs per image, chosen at random."""
    graphs = json.loads(Path(scene_graphs).read_text())
    rng = np.random.default_rng(seed)
    out = []
    for image_id in sorted(graphs):
        g = graphs[image_id]
        W, H = float(g["width"]), float(g["height"])
        objs = [(o["name"], (o["x"] / W, o["y"] / H, (o["x"] + o["w"]) / W, (o["y"] + o["h"]) / H))
                for o in g["objects"].values()]
        pairs = list(pairs_from_boxes(objs))
        if not pairs:
            continue
        path = Path(image_dir) / f"{image_id}.jpg"
        if not path.exists():
            raise FileNotFoundError(f"GQA image {path} listed in the scene graphs is missing")
        image, _ = _load_image(path, size)
        for k in rng.permutation(len(pairs))[:max_per_image]:
            s, r, o = pairs[k]
            out.append(RelationExample(image, s, o, r))
        if max_examples is not None and len(out) >= max_examples:
            return out[:max_examples]
    return out
