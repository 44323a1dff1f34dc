"""Single vs dual inversion: classifier accuracy on held-out inversion maps and on generation-time maps.

    python benchmarks/bench_inversion_ablation.py --examples 2000 --gen-prompts 40 --gen-seeds 4

Both classifiers train on the same scenes (the single one on the positive-prompt rows only).
"Inversion" accuracy: held-out scenes' maps, positive-prompt rows and negative-prompt rows
separately. "Generation" accuracy: maps the steering hook captures while the model generates
held-out one-relation prompts, labelled with the layout the evaluator measures in the image —
what the classifier faces when it steers, split into images that obeyed the prompt and images that
did not (the case steering exists for: the classifier must see that the layout is wrong). Relation
leakage shows as a classifier that reads the prompt's word: right on positive rows, wrong on
negative rows and on disobeying images, where "reads the word" gives the share of those rows
classified as the PROMPTED relation instead of the drawn one.

    python benchmarks/bench_inversion_ablation.py --model runs/leak/pipeline --cache runs/leak-ablation

``--gen-pairs seen`` generates with the (colour, shape) pairs relational training captions use, where
a model trained on such captions follows the relation word (held-out pairs by default).
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from l2s_shapes.evaluate import generation_maps, heldout_prompts, seen_pairs
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
    ap.add_argument("--gen-pairs", choices=("heldout", "seen"), default="heldout",
                    help="(colour, shape) pairs of the generation prompts: held out of relational captions, or seen in them")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default=None, help="folder to save both classifiers in (SAVE/single, SAVE/dual), "
                    "e.g. to steer with each: python -m l2s eval --classifier SAVE/single --model ...")
    args = ap.parse_args()
    pipe = load_shipped(args.model)
    data = inversion_dataset(pipe, args.examples, seed=args.seed, cache=f"{args.cache}/maps-{args.examples}-{args.seed}")
    prompts = heldout_prompts(1, args.gen_prompts, seed=11, pairs=seen_pairs() if args.gen_pairs == "seen" else None)
    gen = generation_maps(pipe, prompts, list(range(100, 100 + args.gen_seeds)), list(STEP_INDICES),
                          map_size=MAP_SIZE, steps=NUM_INFERENCE_STEPS)
    print(f"inversion rows {len(data)} ({args.examples} scenes x 2 prompts x {len(STEP_INDICES)} steps); "
          f"generation rows {len(gen)} from {gen.meta['images']} images with both objects and one relation")
    _, val_all = split_scenes(data, args.seed)                         # the scenes train_shapes_classifier holds out
    word, between = word_effect(data)
    print(f"word effect: the wrong word moves a map by {word:.4f} of its mass (L1, same image, noise and step); "
          f"two different images' maps differ by {between:.4f}")
    prompted = np.asarray(gen.meta["prompt_labels"], np.int64)
    obeyed, disobeyed = np.flatnonzero(prompted == gen.labels), np.flatnonzero(prompted != gen.labels)
    print(f"generation images that obeyed the prompt: {len(obeyed) // len(STEP_INDICES)}, "
          f"disobeyed: {len(disobeyed) // len(STEP_INDICES)}")
    pos = val_all.subset(np.flatnonzero(val_all.inversion == 0))
    neg = val_all.subset(np.flatnonzero(val_all.inversion == 1))
    right, wrong = gen.subset(obeyed), gen.subset(disobeyed)
    wrong_as_prompted = replace(wrong, labels=prompted[disobeyed])   # "right" = the prompt's word: reads the word
    rows = []
    for dual in (False, True):
        clf, hist, _ = train_shapes_classifier(data, dual=dual, seed=args.seed, epochs=args.epochs)
        if args.save:
            clf.config.meta["pipeline"] = args.model or clf.config.meta["pipeline"]
            clf.save_pretrained(f"{args.save}/{'dual' if dual else 'single'}")
        rows.append(("dual" if dual else "single", accuracy(clf, pos), accuracy(clf, neg), accuracy(clf, gen),
                     accuracy(clf, right), accuracy(clf, wrong), accuracy(clf, wrong_as_prompted),
                     hist.best_epoch))
    print("\n| inversion | held-out inversion maps, positive prompt | negative prompt | generation-time maps | "
          "obeyed images | disobeyed images | disobeyed: reads the word | best epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for name, *values, e in rows:
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {e} |")


def word_effect(data, seed: int = 0) -> tuple[float, float]:
    """How far the prompt's relation word moves the maps: mean L1 distance between the positive- and
    negative-prompt maps of the same image, noise and step (each map sums to 1), and, for scale, between
    the positive maps of two different images at the same step. Leakage needs the first to be large:
    a classifier can only read a word that changes the maps."""
    row = {(int(i), int(s), int(v)): r for r, (i, s, v) in enumerate(zip(data.image, data.steps, data.inversion))}
    pairs = np.array([(r, row[(i, s, 1)]) for (i, s, v), r in row.items() if v == 0 and (i, s, 1) in row])
    if len(pairs) == 0:
        return float("nan"), float("nan")
    pos, neg = data.maps[pairs[:, 0]], data.maps[pairs[:, 1]]
    same_step = np.lexsort((np.random.default_rng(seed).random(len(pairs)), data.steps[pairs[:, 0]]))
    other = np.roll(same_step, 1)                                # a different image at the same step
    keep = data.steps[pairs[same_step, 0]] == data.steps[pairs[other, 0]]
    word = np.abs(pos - neg).sum((-2, -1)).mean()
    between = np.abs(pos[same_step][keep] - pos[other][keep]).sum((-2, -1)).mean()
    return float(word), float(between)


if __name__ == "__main__":
    main()
