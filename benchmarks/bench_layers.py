"""Which cross-attention layers carry the layout? Classifier accuracy per layer choice (shapes model).

    python benchmarks/bench_layers.py --examples 300

Same scenes, steps and dual inversion for every choice; validation split by scene.
"""
from __future__ import annotations

import argparse

from l2s.classifier import ClassifierConfig
from l2s.inversion import MapInverter, build_dataset
from l2s_shapes.pipeline import load_shipped
from l2s_shapes.scenes import relation_examples
from l2s.train_classifier import split_by_image, train_classifier

CHOICES = {"down+mid": ("down", "mid"), "up": ("up",), "all": ("down", "mid", "up")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--examples", type=int, default=300)
    ap.add_argument("--steps", default="6,9,12", help="step indices of 25 to invert at")
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    pipe = load_shipped(args.model)
    examples = relation_examples(args.examples, seed=0)
    steps = [int(s) for s in args.steps.split(",")]
    print("| layers | count | validation accuracy |")
    print("|---|---|---|")
    for name, blocks in CHOICES.items():
        with MapInverter(pipe, map_size=16, num_inference_steps=25, blocks=blocks, sides=(8, 16)) as inv:
            ds = build_dataset(inv, examples, steps, dual=True, progress=False)
            n_layers = len(inv.layers)
        train, val = split_by_image(ds, 0.2, 0)
        _, hist = train_classifier(train, val, ClassifierConfig(map_size=16, hidden1=128, hidden2=64),
                                   epochs=args.epochs, progress=False)
        print(f"| {name} | {n_layers} | {max(hist.val_accuracy):.3f} |", flush=True)


if __name__ == "__main__":
    main()
