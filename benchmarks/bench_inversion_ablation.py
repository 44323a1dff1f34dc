"""Single vs dual inversion: classifier accuracy on held-out inversion maps and on generation-time maps.

    python benchmarks/bench_inversion_ablation.py --examples 2000 --gen-prompts 40 --gen-seeds 4

Both classifiers train on the same scenes (the single one on the positive-prompt rows only).
"Inversion" accuracy: held-out scenes' maps, positive-prompt rows and negative-prompt rows
separately. "Generation" accuracy: maps the steering hook captures while the model generates
held-out one-relation prompts, labelled with the layout the evaluator measures in the image —
what the classifier faces when it steers. Relation leakage shows as a classifier that reads the
prompt's word: right on positive rows, wrong on negative rows and at generation time.
"""
from __future__ import annotations

import argparse

import numpy as np

from l2s_shapes.evaluate import generation_maps, heldout_prompts
from l2s_shapes.pipeline import load_shipped
from l2s_shapes.relation_classifier import MAP_SIZE, NUM_INFERENCE_STEPS, STEP_INDICES, inversion_dataset, \
    split_scenes, train_shapes_classifier
from l2s.train_classifier import accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--cache", default="runs/ablation", help="folder caching the map dataset")
    ap.add_argument("--gen-prompts", type=int, default=40)
    ap.add_argument("--gen-seeds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pipe = load_shipped(args.model)
    data = inversion_dataset(pipe, args.examples, seed=args.seed, cache=f"{args.cache}/maps-{args.examples}-{args.seed}")
    gen = generation_maps(pipe, heldout_prompts(1, args.gen_prompts, seed=11), list(range(100, 100 + args.gen_seeds)),
                          list(STEP_INDICES), map_size=MAP_SIZE, steps=NUM_INFERENCE_STEPS)
    print(f"inversion rows {len(data)} ({args.examples} scenes x 2 prompts x {len(STEP_INDICES)} steps); "
          f"generation rows {len(gen)} from {gen.meta['images']} images with both objects and one relation")
    _, val_all = split_scenes(data, args.seed)                         # the scenes train_shapes_classifier holds out
    rows = []
    for dual in (False, True):
        clf, hist, _ = train_shapes_classifier(data, dual=dual, seed=args.seed, epochs=args.epochs)
        pos = val_all.subset(np.flatnonzero(val_all.inversion == 0))
        neg = val_all.subset(np.flatnonzero(val_all.inversion == 1))
        rows.append(("dual" if dual else "single", accuracy(clf, pos), accuracy(clf, neg), accuracy(clf, gen),
                     hist.best_epoch))
    print("\n| inversion | held-out inversion maps, positive prompt | negative prompt | generation-time maps | best epoch |")
    print("|---|---|---|---|---|")
    for name, p, n, g, e in rows:
        print(f"| {name} | {p:.3f} | {n:.3f} | {g:.3f} | {e} |")


if __name__ == "__main__":
    main()
