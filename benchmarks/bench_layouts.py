"""How often three-object layouts admit a straight chain: in training data, or as a model draws them.

    python benchmarks/bench_layouts.py --layouts 3000
    python benchmarks/bench_layouts.py --drawn --model runs/lines-ft/pipeline

A straight chain "A r B r C" (three objects in one line, the middle one between the others) holds
for a layout when some order of its objects satisfies the same GenEval relation twice. By default the
layouts are the scene generator's own (``l2s_shapes.scenes._place``: non-overlapping squares, sides
0.22-0.38 of the image; ``--line`` for ``_place_line``), so the share is how often a model saw such a
layout in training. ``--drawn``: images a model (default the shipped one) draws, unsteered, for the
object lists ("a red diamond, a blue cross and a green circle") of the tuning set's first 12 straight
chains, seeds 204-211; the share among images with exactly three detections.
"""
from __future__ import annotations

import argparse

import numpy as np

from l2s_shapes.scenes import LINE_SIDES, _place, _place_line, straight_relations


def drawn_layouts(model: str | None, prompts: int = 12, seeds: range = range(204, 212)) -> list[list]:
    """Detected boxes of every image with exactly three detections, for the straight chains' object lists."""
    import torch
    from bench_prompt_groups import tuning_prompts_of_kind
    from l2s.prompts import list_phrases
    from l2s_shapes.detect import detect
    from l2s_shapes.pipeline import load_shipped
    specs = tuning_prompts_of_kind("straight", prompts)
    pipe, layouts = load_shipped(model), []
    for spec in specs:
        text = list_phrases([f"a {colour} {shape}" for colour, shape in spec.objects])
        images = pipe([text] * len(seeds), num_inference_steps=25, generator=[torch.Generator().manual_seed(s) for s in seeds]).images
        found = [detect(np.asarray(im)) for im in images]
        layouts += [[d.box for d in dets] for dets in found if len(dets) == 3]
    print(f"{len(specs) * len(seeds)} images, {len(layouts)} with exactly three detections")
    return layouts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layouts", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-side", type=float, default=0.22)
    ap.add_argument("--max-side", type=float, default=0.38)
    ap.add_argument("--line", action="store_true", help="the generator's line layouts (sides LINE_SIDES)")
    ap.add_argument("--drawn", action="store_true", help="layouts a model draws for list prompts")
    ap.add_argument("--model", default=None, help="pipeline folder for --drawn (default: the shipped model)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    if args.drawn:
        layouts, what = drawn_layouts(args.model), f"drawn by {args.model or 'the shipped model'}"
    else:
        place = (lambda: _place_line(rng, 3)) if args.line else (lambda: _place(rng, 3, args.min_side, args.max_side))
        layouts = [b for b in (place() for _ in range(args.layouts)) if b is not None]
        sides = LINE_SIDES if args.line else (args.min_side, args.max_side)
        what = f"{'line ' if args.line else ''}(sides {sides[0]}-{sides[1]})"
    sides = np.array([[b[2] - b[0] for b in boxes] for boxes in layouts])
    straight = np.array([bool(straight_relations(boxes)) for boxes in layouts])
    print(f"{len(layouts)} three-object layouts {what}: {straight.sum()} "
          f"({straight.mean():.3f}) admit a straight chain; mean side {sides[straight].mean():.3f} in those, "
          f"{sides.mean():.3f} in all")


if __name__ == "__main__":
    main()
