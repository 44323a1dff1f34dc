"""Seeded synthetic scenes: 2-3 coloured shapes with exact boxes and masks, and template captions.

Most captions name the objects without a relation ("a red circle and a blue square"); a small
fraction state one, so a model trained on them places objects poorly for relational prompts — the
failure the steering method fixes. Held-out (colour, shape) pairs never appear in relational captions.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import numpy as np

from l2s.geneval import OPPOSITE, relations_between
from l2s.prompts import list_phrases
from l2s.relations import RELATIONS

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = {   # well separated in RGB, all saturated: backgrounds stay light and grey-ish
    "red": (215, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 215), "yellow": (235, 200, 30),
    "purple": (140, 55, 185), "orange": (245, 125, 25), "cyan": (30, 185, 200),
}
SUPERSAMPLE = 4       # coverage is computed on a 4x finer grid: anti-aliased edges, exact masks


@dataclass
class SceneObject:
    colour: str
    shape: str
    box: tuple[float, float, float, float]      # x0, y0, x1, y1 as fractions of the image side

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class Scene:
    image: np.ndarray                             # [S, S, 3] uint8
    objects: list[SceneObject]
    masks: np.ndarray                             # [n_objects, S, S] bool (coverage >= 0.5)
    caption: str = ""
    relations: list[tuple[int, str, int]] = field(default_factory=list)   # (subject, relation, object) in the caption


def render_shape_mask(shape: str, box, size: int, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Coverage in [0, 1] of ``shape`` filling ``box`` (fractions) on a size x size grid."""
    n = size * supersample
    c = (np.arange(n) + 0.5) / n
    x, y = np.meshgrid(c, c)                                          # y grows downwards
    x0, y0, x1, y1 = box
    u = (x - x0) / (x1 - x0) * 2 - 1                                 # [-1, 1] inside the box
    v = (y - y0) / (y1 - y0) * 2 - 1
    inside = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if shape == "square":
        m = inside
    elif shape == "circle":
        m = u ** 2 + v ** 2 <= 1
    elif shape == "triangle":                                         # apex up, base at the bottom
        m = inside & (np.abs(u) <= (v + 1) / 2)
    elif shape == "diamond":
        m = np.abs(u) + np.abs(v) <= 1
    elif shape == "cross":                                            # plus sign, arms a third wide
        m = inside & ((np.abs(u) <= 1 / 3) | (np.abs(v) <= 1 / 3))
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    return m.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(200, 245) + rng.uniform(-8, 8, 3)             # light, nearly grey
    img = np.broadcast_to(base, (size, size, 3)).astype(np.float64).copy()
    if rng.random() < 0.5:                                            # light texture: soft stripes or noise
        if rng.random() < 0.5:
            period, angle = rng.uniform(6, 16), rng.uniform(0, np.pi)
            yy, xx = np.mgrid[0:size, 0:size]
            img += 6 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)[..., None]
        else:
            img += rng.normal(0, 4, (size, size, 1))
    return img


def _place(rng: np.random.Generator, n: int, min_side: float, max_side: float, tries: int = 200):
    """n square boxes (fractions) that do not overlap, with a small gap."""
    boxes = []
    for _ in range(tries):
        if len(boxes) == n:
            break
        side = rng.uniform(min_side, max_side)
        x0, y0 = rng.uniform(0.02, 0.98 - side, 2)
        box = (x0, y0, x0 + side, y0 + side)
        gap = 0.03
        if all(box[0] > b[2] + gap or box[2] < b[0] - gap or box[1] > b[3] + gap or box[3] < b[1] - gap for b in boxes):
            boxes.append(box)
    return boxes if len(boxes) == n else None


LINE_SIDES = (0.18, 0.26)   # line layouts use smaller objects: three must fit along one axis with gaps


def _place_line(rng: np.random.Generator, n: int, min_side: float = LINE_SIDES[0], max_side: float = LINE_SIDES[1]):
    """n square boxes in a row, a column or along a diagonal, each past the previous one along the line
    (so some order of them forms a straight chain "A r B r C"), with small jitter across the line."""
    sides = rng.uniform(min_side, max_side, n)
    axis = str(rng.choice(["row", "column", "diagonal", "antidiagonal"]))
    free = 0.96 - sides.sum() - 0.03 * (n - 1)        # 0.03: the smallest gap between neighbours, as _place
    if free < 0:
        return None
    gaps = rng.dirichlet(np.ones(n + 1)) * free         # free space before, between and after the boxes
    gaps[1:n] += 0.03
    along = 0.02 + np.cumsum(gaps[:n]) + np.concatenate([[0.0], np.cumsum(sides[:-1])])
    boxes = []
    for k in range(n):
        if axis in ("row", "column"):
            across = float(np.clip(0.5 - sides[k] / 2 + rng.uniform(-0.12, 0.12), 0.02, 0.98 - sides[k]))
            x0, y0 = (along[k], across) if axis == "row" else (across, along[k])
        else:
            x0, y0 = along[k], (along[k] if axis == "diagonal" else 1.0 - along[k] - sides[k])
        boxes.append((float(x0), float(y0), float(x0 + sides[k]), float(y0 + sides[k])))
    return boxes


def straight_relations(boxes) -> set[str]:
    """The relations r for which some order (A, B, C) of the boxes has A r B and B r C by GenEval's
    rule: the layouts a straight chain ("A above B above C") can be judged right in."""
    out: set[str] = set()
    for a, b, c in itertools.permutations(range(len(boxes)), 3):
        out |= relations_between(boxes[a], boxes[b]) & relations_between(boxes[b], boxes[c])
    return out


def caption(objects: list[SceneObject], relations: list[tuple[int, str, int]], rng: np.random.Generator) -> str:
    """Template caption: a chain "a A rel a B rel a C" when relations are given, else a list."""
    if relations:
        subject = relations[0][0]
        text = f"a {objects[subject].name}"
        for _, rel, obj in relations:
            text += f" {rel} a {objects[obj].name}"
        return rng.choice(["{}", "a photo of {}"]).format(text)
    names = [f"a {o.name}" for o in objects]
    return rng.choice(["{}", "a photo of {}", "{} on a plain background"]).format(list_phrases(names))


_RELATION_PHRASE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, OPPOSITE), key=len, reverse=True)) + r")\b")


def reverse_relations(text: str) -> str | None:
    """The caption with every relation phrase replaced by its opposite ("left of" <-> "right of",
    "above" <-> "below"); None if it states none."""
    out, n = _RELATION_PHRASE.subn(lambda m: OPPOSITE[m.group(1)], text)
    return out if n else None


def _chain_relations(objects: list[SceneObject], rng: np.random.Generator) -> list[tuple[int, str, int]]:
    """A relation chain over the objects in a random order, each link true by GenEval's rule."""
    order = list(rng.permutation(len(objects)))
    chain = []
    for a, b in zip(order[:-1], order[1:]):
        held = sorted(relations_between(objects[a].box, objects[b].box))
        if not held:
            return []
        chain.append((int(a), str(rng.choice(held)), int(b)))
    return chain


def generate_scene(seed: int, size: int = 64, n_objects: int | None = None, relational_fraction: float = 0.1,
                   heldout: set[tuple[str, str]] = frozenset(), min_side: float = 0.22, max_side: float = 0.38,
                   line: bool = False) -> Scene:
    """One scene from ``seed``. ``relational_fraction`` of captions state relations (those never use
    a (colour, shape) pair in ``heldout``); the rest only list the objects. ``line``: place the objects
    along a row, column or diagonal with sides ``LINE_SIDES`` (``min_side``/``max_side`` then unused),
    the layouts that straight chains ("A above B above C") need and free placement rarely makes."""
    rng = np.random.default_rng(seed)
    n = n_objects or int(rng.integers(2, 4))
    boxes = None
    while boxes is None:
        boxes = _place_line(rng, n) if line else _place(rng, n, min_side, max_side)
    picked = set()
    objects = []
    for box in boxes:                                  # distinct (colour, shape) per scene: names stay unique
        while True:
            obj = SceneObject(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), tuple(float(v) for v in box))
            if (obj.colour, obj.shape) not in picked:
                picked.add((obj.colour, obj.shape))
                objects.append(obj)
                break
    img = _background(rng, size)
    masks = []
    for obj in objects:
        cover = render_shape_mask(obj.shape, obj.box, size)
        img = img * (1 - cover[..., None]) + np.array(COLOURS[obj.colour], np.float64) * cover[..., None]
        masks.append(cover >= 0.5)
    relations = []
    if rng.random() < relational_fraction and not any((o.colour, o.shape) in heldout for o in objects):
        relations = _chain_relations(objects, rng)
    scene = Scene(np.clip(np.rint(img), 0, 255).astype(np.uint8), objects, np.array(masks), relations=relations)
    scene.caption = caption(objects, relations, rng)
    return scene


def heldout_pairs(count: int = 8, seed: int = 1234) -> set[tuple[str, str]]:
    """(colour, shape) pairs kept out of relational training captions, for held-out evaluation."""
    rng = np.random.default_rng(seed)
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    return {pairs[i] for i in rng.choice(len(pairs), count, replace=False)}


def relation_examples(n: int, seed: int, size: int = 64, exclude: set[tuple[str, str]] | None = None,
                      line_fraction: float = 0.0):
    """n two-object scenes as ``inversion.RelationExample``s: a random ordered pair and one relation
    that holds between them by GenEval's rule (scenes where none holds are skipped). Objects from
    ``exclude`` (default: the held-out pairs) never appear, so evaluation pairs stay unseen.
    ``line_fraction``: that share of the examples are instead three objects in a line (``generate_scene(...,
    line=True)``: smaller, closer objects, as straight chains need) and name two of them, the third drawn
    but unnamed (0: the examples of the shipped classifier, the same draws)."""
    from l2s.inversion import RelationExample
    if not 0.0 <= line_fraction <= 1.0:
        raise ValueError(f"line_fraction must be in [0, 1], got {line_fraction}")
    exclude = heldout_pairs() if exclude is None else exclude
    rng = np.random.default_rng(seed)
    out, k = [], 0
    while len(out) < n:
        line = line_fraction > 0 and rng.random() < line_fraction        # no extra draw at 0: same examples
        scene = generate_scene(seed * 7_000_003 + k, size=size, n_objects=3 if line else 2, relational_fraction=0.0,
                               line=line)
        k += 1
        if any((o.colour, o.shape) in exclude for o in scene.objects):
            continue
        if line:
            a, b = (int(i) for i in rng.permutation(3)[:2])
        else:
            a, b = (0, 1) if rng.random() < 0.5 else (1, 0)
        held = sorted(relations_between(scene.objects[a].box, scene.objects[b].box))
        if held:
            out.append(RelationExample(scene.image, scene.objects[a].name, scene.objects[b].name, str(rng.choice(held))))
    return out


__all__ = ["SHAPES", "COLOURS", "RELATIONS", "SceneObject", "Scene", "render_shape_mask", "caption",
           "generate_scene", "heldout_pairs", "relation_examples"]
