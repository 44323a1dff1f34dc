"""Does a shapes model read the relation word? The quick check before any leakage ablation.

    python benchmarks/bench_word_following.py --model shipped --model runs/leak2/pipeline

Relation leakage (a classifier trained on single-inversion maps reading the prompt's relation word
instead of the layout) needs a model whose maps move with the word. Two measurements per model:

- **follows**: unsteered one-relation accuracy on 25 prompts x 4 seeds, over the held-out (colour,
  shape) pairs and over the pairs relational training captions use ("seen"). A model that ignores
  the word places objects at chance: about a quarter of the images obey.
- **word effect**: mean L1 distance between the maps of the same image, noise and step inverted with
  the true and with a wrong relation word (each map sums to 1), beside the distance between two
  different images' maps at the same step (``bench_inversion_ablation.word_effect``), on
  ``--examples`` inverted scenes.
- **loss gap**: how much the model's own training loss (v-prediction MSE) rises when a two-object
  scene's relational caption ("a red circle left of a blue square") carries the opposite word, same
  image, noise and timestep, on 256 scenes at t = 999, 960 and 900 (the steps where generation lays
  objects out). A model that uses the word to place objects predicts worse with the wrong one. The
  control beside it: the rise with an empty caption (the objects' words gone) at t = 999, which shows
  the measurement sees a word the model does use.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench_inversion_ablation import word_effect
from l2s_shapes.evaluate import evaluate, heldout_prompts, seen_pairs
from l2s_shapes.pipeline import load_shipped
from l2s_shapes.relation_classifier import inversion_dataset
from l2s_shapes.scenes import generate_scene, reverse_relations
from l2s_shapes.train import images_to_model, training_target

GAP_TIMESTEPS = (999, 960, 900)


def _per_image_errors(unet, noisy, t, cond, target, chunk: int = 64) -> torch.Tensor:
    """Each image's mean squared error of the UNet's prediction, ``chunk`` images per call."""
    return torch.cat([((unet(noisy[i:i + chunk], t[i:i + chunk], encoder_hidden_states=cond[i:i + chunk]).sample
                        - target[i:i + chunk]) ** 2).mean((1, 2, 3)) for i in range(0, len(noisy), chunk)])


@torch.no_grad()
def word_loss_gap(pipe, scenes: int = 256, timesteps=GAP_TIMESTEPS, seed: int = 0) -> list[tuple[float, float, float, float]]:
    """Per timestep: mean and standard error of loss(opposite word) - loss(true word) over two-object
    scenes whose captions state their relation (seeds 900000..), the mean loss with the true word, and
    the mean rise with an empty caption (the control)."""
    from diffusers import DDPMScheduler
    images, true_caps, wrong_caps = [], [], []
    k = 0
    while len(images) < scenes:
        scene = generate_scene(900_000 + k, n_objects=2, relational_fraction=1.0)
        k += 1
        if scene.relations:
            images.append(scene.image)
            true_caps.append(scene.caption)
            wrong_caps.append(reverse_relations(scene.caption))   # a two-object caption states one relation
    x = images_to_model(np.stack(images))
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    cond = [pipe.encode_prompt(c) for c in (true_caps, wrong_caps, [""] * len(images))]
    gen = torch.Generator().manual_seed(seed)
    out = []
    for tv in timesteps:
        noise = torch.randn(x.shape, generator=gen)
        t = torch.full((len(x),), tv)
        noisy = sched.add_noise(x, noise, t)
        target = training_target(sched, x, noise, t)
        losses = [_per_image_errors(pipe.unet, noisy, t, c, target) for c in cond]
        gap = (losses[1] - losses[0]).numpy()
        out.append((float(gap.mean()), float(gap.std() / np.sqrt(len(gap))), float(losses[0].mean()),
                    float((losses[2] - losses[0]).mean())))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True,
                    help="a shapes pipeline folder, or 'shipped'; repeat to compare models side by side")
    ap.add_argument("--prompts", type=int, default=25)
    ap.add_argument("--seeds", type=int, default=4, help="seeds 100.. per prompt")
    ap.add_argument("--examples", type=int, default=200, help="inverted scenes for the word effect")
    args = ap.parse_args()
    gap_head = " / ".join(str(t) for t in GAP_TIMESTEPS)
    print(f"| model | follows, held-out pairs | follows, seen pairs | word effect | two images apart | "
          f"loss gap x 1e4 (t = {gap_head}; +- s.e.) | loss, true word (t = {GAP_TIMESTEPS[0]}) | "
          f"control: empty caption, x 1e4 | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in args.model:
        t0 = time.time()
        pipe = load_shipped(None if model == "shipped" else model)
        follows = []
        for pairs in (None, seen_pairs()):
            specs = heldout_prompts(1, args.prompts, seed=11, pairs=pairs)
            follows.append(evaluate(pipe, specs, seeds=list(range(100, 100 + args.seeds)))["accuracy"])
        word, between = word_effect(inversion_dataset(pipe, args.examples, seed=0))
        gaps = word_loss_gap(pipe)
        gap_text = " / ".join(f"{m * 1e4:+.1f} +- {e * 1e4:.1f}" for m, e, _, _ in gaps)
        print(f"| {model} | {follows[0]:.3f} | {follows[1]:.3f} | {word:.4f} | {between:.4f} | {gap_text} | "
              f"{gaps[0][2]:.4f} | {gaps[0][3] * 1e4:+.1f} | {time.time() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
