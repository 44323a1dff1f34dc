"""Spatial accuracy on held-out prompts: vanilla vs the hand-made centroid loss vs Learn-to-Steer.

    python benchmarks/bench_steering.py --classifier runs/classifier/classifier --prompts 25 --seeds 4

Prompts use only the held-out (colour, shape) pairs (never in relational training captions nor in
the classifier's scenes); one- and two-relation chains; judged by the exact evaluator with
GenEval's rule. Each arm uses the same seeds, schedule and guidance; only the loss differs.
"""
from __future__ import annotations

import argparse
import json

from l2s.baselines import CentroidLoss
from l2s.classifier import RelationClassifier
from l2s.shapes.evaluate import evaluate, heldout_prompts
from l2s.shapes.pipeline import DEFAULT_GUIDANCE, load_shipped
from l2s.steer import Steerer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="pipeline folder (default: the shipped model)")
    ap.add_argument("--classifier", required=True, help="relation classifier (path stem of .safetensors/.json)")
    ap.add_argument("--prompts", type=int, default=25, help="prompts per relation count (default 25)")
    ap.add_argument("--seeds", type=int, default=4, help="seeds per prompt (default 4)")
    ap.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    ap.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    ap.add_argument("--iterations", type=int, default=3, help="gradient iterations per steered step")
    ap.add_argument("--step-size", type=float, default=0.1, help="RMS latent change per update")
    ap.add_argument("--steer-fraction", type=float, default=0.5, help="share of steps steered (from the start)")
    ap.add_argument("--margin", type=float, default=0.2, help="centroid loss margin (fraction of the image)")
    ap.add_argument("--arms", default="vanilla,centroid,l2s")
    ap.add_argument("--relations", default="1,2", help="relation counts to run (default 1,2)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    pipe = load_shipped(args.model)
    clf = RelationClassifier.load(args.classifier)
    knobs = dict(iterations=args.iterations, step_size=args.step_size, steer_fraction=args.steer_fraction)
    losses = {"vanilla": None, "centroid": CentroidLoss(clf.config.map_size, args.margin), "l2s": clf}
    seeds = list(range(args.seeds))
    table = {}
    for n_rel in [int(v) for v in args.relations.split(",")]:
        prompts = heldout_prompts(n_rel, args.prompts, seed=n_rel)
        for arm in args.arms.split(","):
            loss = losses[arm]
            steering = None if loss is None else (lambda p, text, loss=loss: Steerer(p, loss, text, **knobs))
            r = evaluate(pipe, prompts, seeds, args.steps, args.guidance, batch=len(seeds), steering=steering)
            table[(n_rel, arm)] = r
            f = r["failures"]
            print(f"{n_rel} relation(s) {arm:<9} acc {r['accuracy']:.3f}  missing {f['missing']:.3f} fused "
                  f"{f['fused']:.3f} misplaced {f['misplaced']:.3f}  {r['seconds_per_image']:.2f} s/image", flush=True)
    print(f"\nsteps={args.steps} guidance={args.guidance} seeds={args.seeds} prompts={args.prompts} "
          f"iterations={args.iterations} step_size={args.step_size} steer_fraction={args.steer_fraction}\n")
    print("| relations | arm | images | accuracy | missing | fused | misplaced | s/image |")
    print("|---|---|---|---|---|---|---|---|")
    for (n_rel, arm), r in table.items():
        f = r["failures"]
        print(f"| {n_rel} | {arm} | {r['n_images']} | {r['accuracy']:.3f} | {f['missing']:.3f} | {f['fused']:.3f} | "
              f"{f['misplaced']:.3f} | {r['seconds_per_image']:.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({f"{k[0]}-{k[1]}": v for k, v in table.items()}, fh, indent=1)


if __name__ == "__main__":
    main()
