"""GenEval's "position" rule, reproduced exactly (see shared/method.md), on boxes.

Boxes are (x0, y0, x1, y1) with the image y axis pointing DOWN, in any unit (pixels or fractions):
the rule compares an offset with box sizes, so the unit cancels.
"""
from __future__ import annotations

import math
from typing import Sequence

from .relations import OPPOSITE, RELATIONS, TABLE, relation

Box = Sequence[float]

MARGIN = 0.1          # fraction of (w_A + w_B) / (h_A + h_B) an offset must exceed
DOMINANCE = 0.5       # |unit offset| component needed to call a direction
NO_RELATION_EPS = 1e-3


def centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def relations_between(box_a: Box, box_b: Box) -> set[str]:
    """Every relation that holds for "A {rel} B" by GenEval's rule (a 45-degree diagonal gives two)."""
    ax, ay = centre(box_a)
    bx, by = centre(box_b)
    ox, oy = ax - bx, ay - by
    wa, ha = box_a[2] - box_a[0], box_a[3] - box_a[1]
    wb, hb = box_b[2] - box_b[0], box_b[3] - box_b[1]
    rx = math.copysign(max(abs(ox) - MARGIN * (wa + wb), 0.0), ox)
    ry = math.copysign(max(abs(oy) - MARGIN * (ha + hb), 0.0), oy)
    if abs(rx) < NO_RELATION_EPS and abs(ry) < NO_RELATION_EPS:
        return set()
    norm = math.hypot(ox, oy)
    unit = (rx / norm, ry / norm)
    return {r.name for r in TABLE if r.sign * unit[r.axis] > DOMINANCE}


def relation_holds(box_a: Box, box_b: Box, name: str) -> bool:
    """True if "A {name} B" holds by GenEval's rule."""
    return relation(name).name in relations_between(box_a, box_b)


__all__ = ["RELATIONS", "OPPOSITE", "MARGIN", "DOMINANCE", "NO_RELATION_EPS", "centre", "relations_between",
           "relation_holds"]
