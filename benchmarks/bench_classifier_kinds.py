"""The MLP (layer- and head-averaged maps) beside the authors' transformer (per-(layer, head) stacks)
in the shapes world: accuracy on held-out inversion maps and on generation-time maps.

    python -m l2s train-classifier --kind transformer --out runs/tr-shapes --examples 1000 --epochs 30
    python benchmarks/bench_classifier_kinds.py --transformer runs/tr-shapes/transformer

"Inversion": fresh scenes (seed 99; classifiers trained on seed 0), dual inversion at steps 1-12.
"Generation": maps captured while the model generates held-out one-relation prompts (seeds
100...), labelled with the layout the evaluator measures: what a classifier faces when it steers.
Each classifier reads its own kind of maps of the same images. Steering accuracy: `l2s eval
--classifier FOLDER` on the same prompts and seeds for each.
"""
from __future__ import annotations

import argparse

from l2s import load_classifier
from l2s.inversion import MapInverter, build_dataset
from l2s.train_classifier import accuracy
from l2s_shapes.evaluate import generation_maps, heldout_prompts
from l2s_shapes.pipeline import load_shipped
from l2s_shapes.relation_classifier import MAP_SIZE, NUM_INFERENCE_STEPS, SHIPPED_CLASSIFIER, STEP_INDICES
from l2s_shapes.scenes import relation_examples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mlp", default=None, help="MLP classifier folder (default: the shipped one)")
    ap.add_argument("--transformer", required=True, help="transformer classifier folder")
    ap.add_argument("--scenes", type=int, default=100, help="fresh scenes for the inversion accuracy (default 100)")
    ap.add_argument("--gen-prompts", type=int, default=25)
    ap.add_argument("--gen-seeds", type=int, default=4)
    args = ap.parse_args()
    pipe = load_shipped()
    mlp = load_classifier(args.mlp or SHIPPED_CLASSIFIER)
    tr = load_classifier(args.transformer)
    scenes = relation_examples(args.scenes, seed=99)
    prompts, seeds = heldout_prompts(1, args.gen_prompts, seed=11), list(range(100, 100 + args.gen_seeds))
    print("| classifier | maps | held-out inversion maps | generation-time maps | generation rows |")
    print("|---|---|---|---|---|")
    for name, clf, stack in (("MLP (fused C)", mlp, False), ("authors' transformer (torch)", tr, True)):
        with MapInverter(pipe, map_size=MAP_SIZE, num_inference_steps=NUM_INFERENCE_STEPS, stack=stack) as inv:
            inversion = build_dataset(inv, scenes, STEP_INDICES, seed=99, relations=clf.relations
                                      if stack else clf.config.relations)
        gen = generation_maps(pipe, prompts, seeds, list(STEP_INDICES), map_size=MAP_SIZE, steps=NUM_INFERENCE_STEPS,
                              layers=None if stack else clf.config.meta.get("layers"), stack=stack)
        kind = "stacks" if stack else "averaged"
        print(f"| {name} | {kind} | {accuracy(clf, inversion):.3f} | {accuracy(clf, gen):.3f} | {len(gen)} |", flush=True)


if __name__ == "__main__":
    main()
