"""How often the shapes world's three-object training layouts admit a straight chain.

    python benchmarks/bench_layouts.py --layouts 3000

A straight chain "A r B r C" (three objects in one line, the middle one between the others) holds
for a layout when some order of its objects satisfies the same GenEval relation twice. The layouts
are the scene generator's own (``l2s_shapes.scenes._place``: non-overlapping squares, sides
0.22-0.38 of the image), so the share is how often the model saw such a layout in training.
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np

from l2s.geneval import relations_between
from l2s_shapes.scenes import _place


def straight_relations(boxes) -> set[str]:
    """The relations r for which some order (A, B, C) of the boxes has A r B and B r C."""
    out: set[str] = set()
    for a, b, c in itertools.permutations(range(len(boxes)), 3):
        out |= relations_between(boxes[a], boxes[b]) & relations_between(boxes[b], boxes[c])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layouts", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-side", type=float, default=0.22)
    ap.add_argument("--max-side", type=float, default=0.38)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    layouts = [b for b in (_place(rng, 3, args.min_side, args.max_side) for _ in range(args.layouts)) if b is not None]
    sides = np.array([[b[2] - b[0] for b in boxes] for boxes in layouts])
    straight = np.array([bool(straight_relations(boxes)) for boxes in layouts])
    print(f"{len(layouts)} three-object layouts (sides {args.min_side}-{args.max_side}): {straight.sum()} "
          f"({straight.mean():.3f}) admit a straight chain; mean side {sides[straight].mean():.3f} in those, "
          f"{sides.mean():.3f} in all")


if __name__ == "__main__":
    main()
