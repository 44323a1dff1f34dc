"""Relation examples from real image collections: GQA scene graphs, or any image folder with boxes.

Relations are derived from the boxes by GenEval's rule (``geneval.relations_between``), after the
image is resized to the model's square input (so the rule sees the geometry the model sees); a
pair is kept when exactly one relation holds and the two object names differ. GQA's own relation
words are not used: they mix spatial and semantic relations and depend on the annotator's view.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .geneval import relations_between
from .inversion import ATTRIBUTE, RelationExample


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


@dataclass(frozen=True)
class ExampleRef:
    """A relation example whose image is read only when needed (``load``): a dataset of many large
    images is listed up front and read shard by shard."""
    path: Path
    subject: str
    object: str
    relation: str

    def load(self, size: int) -> RelationExample:
        """The example with its image resized to size x size."""
        image, _ = _load_image(self.path, size)
        return RelationExample(image, self.subject, self.object, self.relation)


def _box(value, where: str) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: box must be four numbers [x0, y0, x1, y1], got {value!r}") from None
    return x0, y0, x1, y1


def _check_inside(box: tuple[float, float, float, float], w: float, h: float, where: str) -> None:
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(f"{where}: box {list(box)} is empty or outside the {w:g}x{h:g} image")


def _attribute_refs(path: Path, name: str, attributes: Any, where: str) -> list[ExampleRef]:
    """(attribute, "is", object) examples of one object's ``attributes`` (a list of words)."""
    if attributes is None:
        return []
    if not isinstance(attributes, list) or not all(isinstance(a, str) and a.strip() for a in attributes):
        raise ValueError(f"{where}: attributes must be a list of words, got {attributes!r}")
    return [ExampleRef(path, a.strip(), name, ATTRIBUTE) for a in attributes]


def box_folder_refs(folder: str | Path, max_examples: int | None = None, attributes: bool = False) -> list[ExampleRef]:
    """Examples from ``folder/boxes.json``, images not yet read. The format: a list of
    ``{"image": "a.png", "objects": [{"name": "dog", "box": [x0, y0, x1, y1]}, ...]}`` with boxes
    in pixels of the original image (x right, y down); relations come from the boxes (module doc).
    An object may list ``"attributes": ["white", ...]``: with ``attributes`` each gives an
    (attribute, "is", object) example too. A missing image, a malformed or outside box names the
    file and the entry."""
    from PIL import Image
    folder = Path(folder)
    index = folder / "boxes.json"
    if not index.exists():
        raise FileNotFoundError(f"{index} does not exist (a boxes folder holds boxes.json and its images)")
    try:
        entries = json.loads(index.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{index} is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise ValueError(f"{index} must hold a list of {{\"image\", \"objects\"}} entries")
    out = []
    for i, entry in enumerate(entries):
        where = f"{index} entry {i}"
        if not isinstance(entry, dict) or "image" not in entry or "objects" not in entry:
            raise ValueError(f"{where}: needs \"image\" and \"objects\"")
        path = folder / entry["image"]
        if not path.is_file():
            raise FileNotFoundError(f"{where}: image {path} is missing")
        with Image.open(path) as im:                       # the header only: the size
            w, h = im.size
        objs = []
        for j, o in enumerate(entry["objects"]):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str) or not o["name"].strip():
                raise ValueError(f"{where} object {j}: needs a \"name\" (text) and a \"box\"")
            box = _box(o.get("box"), f"{where} object {j} ({o['name']!r})")
            _check_inside(box, w, h, f"{where} object {j} ({o['name']!r})")
            objs.append((o["name"], (box[0] / w, box[1] / h, box[2] / w, box[3] / h)))
            if attributes:
                out.extend(_attribute_refs(path, o["name"], o.get("attributes"), f"{where} object {j}"))
        out.extend(ExampleRef(path, s, o, r) for s, r, o in pairs_from_boxes(objs))
        if max_examples is not None and len(out) >= max_examples:
            return out[:max_examples]
    return out


def box_folder_examples(folder: str | Path, size: int = 64, max_examples: int | None = None) -> list[RelationExample]:
    """``box_folder_refs`` with the images read (resized to size x size)."""
    return [ref.load(size) for ref in box_folder_refs(folder, max_examples)]


def gqa_refs(scene_graphs: str | Path, image_dir: str | Path, max_examples: int | None = None,
             max_per_image: int = 2, seed: int = 0, attributes: bool = False) -> list[ExampleRef]:
    """Examples from GQA's scene-graph JSON (``{image_id: {"width", "height", "objects": {id:
    {"name", "x", "y", "w", "h", ...}}}}``) and its image folder (``{image_id}.jpg``), images not
    yet read; at most ``max_per_image`` pairs per image, chosen at random (and with ``attributes``
    at most as many (attribute, "is", object) examples from the objects' ``attributes``)."""
    graphs = json.loads(Path(scene_graphs).read_text())
    rng = np.random.default_rng(seed)
    out = []
    for image_id in sorted(graphs):
        g = graphs[image_id]
        W, H = float(g["width"]), float(g["height"])
        objs = []
        for oid, o in g["objects"].items():
            # GQA's boxes may overrun the image by a pixel: clipped; a box with no area inside is dropped
            box = (max(0.0, o["x"]), max(0.0, o["y"]), min(W, o["x"] + o["w"]), min(H, o["y"] + o["h"]))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            objs.append((o["name"], (box[0] / W, box[1] / H, box[2] / W, box[3] / H)))
        pairs = list(pairs_from_boxes(objs))
        if not pairs:
            continue
        path = Path(image_dir) / f"{image_id}.jpg"
        if not path.exists():
            raise FileNotFoundError(f"GQA image {path} listed in the scene graphs is missing")
        for k in rng.permutation(len(pairs))[:max_per_image]:
            s, r, o = pairs[k]
            out.append(ExampleRef(path, s, o, r))
        if attributes:
            attrs = [ref for oid, o in g["objects"].items() for ref in
                     _attribute_refs(path, o["name"], o.get("attributes"), f"{scene_graphs} image {image_id} object {oid}")]
            out.extend(attrs[k] for k in rng.permutation(len(attrs))[:max_per_image])
        if max_examples is not None and len(out) >= max_examples:
            return out[:max_examples]
    return out


def gqa_examples(scene_graphs: str | Path, image_dir: str | Path, size: int = 64, max_examples: int | None = None,
                 max_per_image: int = 2, seed: int = 0) -> list[RelationExample]:
    """``gqa_refs`` with the images read (resized to size x size)."""
    return [ref.load(size) for ref in gqa_refs(scene_graphs, image_dir, max_examples, max_per_image, seed)]
