"""Spatial accuracy of the shipped shapes model on held-out prompts (vanilla generation for now).

    python benchmarks/bench_shapes.py --seeds 4 --prompts 25

Prints a markdown table: single-object quality (right colour and shape), and GenEval-rule accuracy
on one-relation and two-relation prompts built from held-out (colour, shape) pairs, with failure kinds
and wall time per image. Later issues add steered columns.
"""
from __future__ import annotations

import argparse
import json

import torch

from l2s.shapes.evaluate import evaluate, heldout_prompts, single_object_prompts
from l2s.shapes.pipeline import DEFAULT_GUIDANCE, load_shipped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="pipeline folder (default: the shipped model)")
    ap.add_argument("--seeds", type=int, default=4, help="seeds per prompt (default 4, as GenEval)")
    ap.add_argument("--prompts", type=int, default=25, help="prompts per relation count (default 25)")
    ap.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    ap.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                    help=f"classifier-free guidance scale (default {DEFAULT_GUIDANCE}: the shipped model's)")
    ap.add_argument("--json", default=None, help="also write the full results here")
    args = ap.parse_args()
    torch.manual_seed(0)
    pipe = load_shipped(args.model)
    seeds = list(range(args.seeds))
    guidance = args.guidance
    rows = {
        "single object (colour + shape)": evaluate(pipe, single_object_prompts(), seeds, args.steps, guidance),
        "one relation (held-out pairs)": evaluate(pipe, heldout_prompts(1, args.prompts, seed=1), seeds, args.steps, guidance),
        "two relations (held-out pairs)": evaluate(pipe, heldout_prompts(2, args.prompts, seed=2), seeds, args.steps, guidance),
    }
    print(f"steps={args.steps} guidance={guidance} seeds/prompt={args.seeds} (single object: all 35 colour x shape pairs)\n")
    print("| prompt set | images | vanilla accuracy | missing | fused | misplaced | s/image |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        f = r["failures"]
        print(f"| {name} | {r['n_images']} | {r['accuracy']:.3f} | {f['missing']:.3f} | {f['fused']:.3f} | "
              f"{f['misplaced']:.3f} | {r['seconds_per_image']:.3f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
