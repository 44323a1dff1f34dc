"""Single-object accuracy of a shapes pipeline across classifier-free guidance scales.

    python benchmarks/sweep_guidance.py --scales 1.5 2 2.5 3 4 --seeds 100 101

Picks the shipped model's DEFAULT_GUIDANCE. Use seeds other than bench_shapes.py's (0..3) so the
benchmark table is not measured on the seeds the scale was chosen on.
"""
from __future__ import annotations

import argparse

from l2s_shapes.evaluate import evaluate, single_object_prompts
from l2s_shapes.pipeline import load_shipped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="pipeline folder (default: the shipped model)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.5, 2.0, 2.5, 3.0, 4.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101])
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args()
    pipe = load_shipped(args.model)
    print(f"single objects: 35 colour x shape pairs x seeds {args.seeds}, {args.steps} steps")
    print("| guidance | accuracy | missing | fused |")
    print("|---|---|---|---|")
    for g in args.scales:
        r = evaluate(pipe, single_object_prompts(), args.seeds, args.steps, g, batch=35)
        print(f"| {g:g} | {r['accuracy']:.3f} | {r['failures']['missing']:.3f} | {r['failures']['fused']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
