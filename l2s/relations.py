"""The spatial relations l2s knows: one table that every other part derives from.

A relation "A r B" is a direction of the subject-minus-object offset on one image axis (x to the
right, y DOWN, as image coordinates run): "left of" is axis x, sign -1. GenEval's rule
(``geneval.py``), the prompt parser's phrases (``prompts.py``), the centroid baseline
(``baselines.py``), the synthetic maps (``synthetic.py``) and the demo read this table; adding a
relation here adds it everywhere. A classifier keeps its OWN ordered relation list (its class
order): index labels through that list, never through ``RELATIONS``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    """name: canonical (GenEval's) name; axis: 0 = x, 1 = y (down); sign: direction of the
    subject-minus-object offset along the axis; opposite: the relation with the other sign;
    phrasings: what a prompt may say for it (matched case-insensitively, longest first)."""
    name: str
    axis: int
    sign: int
    opposite: str
    phrasings: tuple[str, ...]

    @property
    def direction(self) -> tuple[float, float]:
        """Unit offset (dx, dy) of the subject from the object."""
        return (float(self.sign), 0.0) if self.axis == 0 else (0.0, float(self.sign))


def _side(side: str) -> tuple[str, ...]:
    return (f"{side} of",) + tuple(f"{p} {side}{s} of" for p in ("to the", "on the", "at the") for s in ("", " side"))


TABLE: tuple[Relation, ...] = (
    Relation("left of", 0, -1, "right of", _side("left")),
    Relation("right of", 0, +1, "left of", _side("right")),
    Relation("above", 1, -1, "below", ("above", "on top of", "on the top of", "at the top of", "over", "atop")),
    Relation("below", 1, +1, "above", ("below", "under", "beneath", "underneath", "on the bottom of",
                                       "at the bottom of")),
)

BY_NAME: dict[str, Relation] = {r.name: r for r in TABLE}
RELATIONS: tuple[str, ...] = tuple(r.name for r in TABLE)
OPPOSITE: dict[str, str] = {r.name: r.opposite for r in TABLE}
PHRASES: dict[str, str] = {p: r.name for r in TABLE for p in r.phrasings}


def relation(name: str) -> Relation:
    """The table entry of ``name``; a clear error for an unknown one."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown relation {name!r}; known: {', '.join(RELATIONS)}") from None


def label_indices(names, relations) -> list[int]:
    """Indices of relation ``names`` in a classifier's own ordered ``relations`` list."""
    order = list(relations)
    missing = [n for n in names if n not in order]
    if missing:
        raise ValueError(f"unknown relation(s) {sorted(set(missing))}: not among the classifier's {order}")
    return [order.index(n) for n in names]
