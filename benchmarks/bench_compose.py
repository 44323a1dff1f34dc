"""Composing per-object predictions (Composable-Diffusion style) in the shapes world, unsteered.

    python benchmarks/bench_compose.py add:0.3:25 add:0.3:8 and:1.0:8 and:0.6:25   # ~7 min on 2 CPU cores

For the phrasing study's held-out triples (``bench_phrasing_presence.py``: prompt seed 777, noise
seeds 300-302), generates the list prompt "a A, a B and a C" alone, then with each arm MODE:W:K:
for the first K steps the conditional prediction becomes ``list + W * sum_i (object_i - uncond)``
(MODE "add") or ``uncond + W * sum_i (object_i - uncond)`` (MODE "and"), object_i being the
prediction for "a <colour> <shape>" alone. Prints how often all three objects are drawn.
"""
from __future__ import annotations

import argparse
from collections import Counter

import torch

from l2s.prompts import object_list, parse_prompt
from l2s_shapes.detect import detect, judge_prompt
from l2s_shapes.evaluate import heldout_prompts
from l2s_shapes.pipeline import DEFAULT_GUIDANCE, load_shipped


@torch.no_grad()
def generate(pipe, spec, seeds: list[int], mode: str, weight: float, k: int, steps: int = 25):
    texts = ["", object_list(parse_prompt(spec.text)).prompt] + [f"a {c} {s}" for c, s in spec.objects]
    emb = pipe.encode_prompt(texts)
    B, size = len(seeds), pipe.unet.config.sample_size
    lat = torch.cat([torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(s)) for s in seeds])
    lat = lat * pipe.scheduler.init_noise_sigma
    pipe.scheduler.set_timesteps(steps)
    for i, t in enumerate(pipe.scheduler.timesteps):
        n = len(texts) if (mode != "list" and i < k) else 2
        x = pipe.scheduler.scale_model_input(torch.cat([lat] * n), t)
        eps = pipe.unet(x, t, encoder_hidden_states=emb[:n].repeat_interleave(B, 0)).sample.view(n, B, *lat.shape[1:])
        uncond, text = eps[0], eps[1]
        if n > 2:
            objects = (eps[2:] - uncond[None]).sum(0)
            text = (text if mode == "add" else uncond) + weight * objects
        lat = pipe.scheduler.step(uncond + DEFAULT_GUIDANCE * (text - uncond), t, lat).prev_sample
    return pipe.to_images(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arms", nargs="*", help="MODE:W:K, MODE add or and")
    args = ap.parse_args()
    pipe = load_shipped()
    specs, seeds = heldout_prompts(2, 16, seed=777), [300, 301, 302]
    for arm in ["list:0:0"] + args.arms:
        mode, weight, k = arm.split(":")
        if mode not in ("list", "add", "and"):
            raise SystemExit(f"{arm}: MODE must be add or and")
        kinds: Counter = Counter()
        for spec in specs:
            for image in generate(pipe, spec, seeds, mode, float(weight), int(k)):
                kinds[judge_prompt(image, spec.objects, spec.relations, detect(image)).failure] += 1
        n = sum(kinds.values())
        print(f"{arm}: all drawn {(n - kinds['missing'] - kinds['fused']) / n:.3f}  missing {kinds['missing'] / n:.3f}  "
              f"fused {kinds['fused'] / n:.3f}", flush=True)


if __name__ == "__main__":
    main()
