"""A lead, not a feature: restart after the steered steps, in the shapes world.

    python benchmarks/bench_restart.py --restart 12 8          # ~5 min alone on 2 CPU cores
    python benchmarks/bench_restart.py                          # the same loop without restart

Steered generation with the shipped classifier and settings (noise screening, list prompt), run
through a hand-written copy of the shapes pipeline's loop that, after step R, re-noises the latent
back to the noise level of step R + 1 - K (DDIM's forward process) and denoises those K steps
again, unsteered (the idea of Restart sampling: let the model repair shapes the latent updates
deformed). Without ``--restart`` it reproduces ``l2s eval``'s L2S row image for image. Tuning
prompts and seeds; prints accuracy and failure kinds and writes per-image verdicts to ``--json``.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import torch

from l2s.callbacks import L2SCallback
from l2s.steer import Steerer
from l2s_shapes.benchmark import benchmark_prompts, seed_list
from l2s_shapes.detect import detect, judge_prompt
from l2s_shapes.pipeline import DEFAULT_GUIDANCE, load_shipped
from l2s_shapes.relation_classifier import load_shipped_classifier


@torch.no_grad()
def sample(pipe, prompt: str, latents: torch.Tensor, callback, restart: tuple[int, int] | None,
           steps: int = 25, guidance: float = DEFAULT_GUIDANCE, noise_seed: int = 1234):
    """The shapes pipeline's loop (CFG, DDIM, step-end callback) with an optional restart."""
    sch = pipe.scheduler
    B = latents.shape[0]
    cond = torch.cat([pipe.encode_prompt([""] * B), pipe.encode_prompt([prompt] * B)])
    sch.set_timesteps(steps)
    ts = sch.timesteps
    noise = torch.Generator().manual_seed(noise_seed)

    def step(i: int, lat: torch.Tensor, steer: bool) -> torch.Tensor:
        x = sch.scale_model_input(torch.cat([lat] * 2), ts[i])
        uncond, text = pipe.unet(x, ts[i], encoder_hidden_states=cond).sample.chunk(2)
        lat = sch.step(uncond + guidance * (text - uncond), ts[i], lat).prev_sample
        return callback(pipe, i, ts[i], {"latents": lat})["latents"] if steer else lat

    lat = latents * sch.init_noise_sigma
    for i in range(steps):
        lat = step(i, lat, True)
        if restart is not None and i == restart[0]:
            R, K = restart
            a_now, a_back = sch.alphas_cumprod[int(ts[R + 1])], sch.alphas_cumprod[int(ts[R + 1 - K])]
            ratio = a_back / a_now                       # x_t at ts[R+1] -> x at the noisier ts[R+1-K]
            lat = ratio.sqrt() * lat + (1 - ratio).sqrt() * torch.randn(lat.shape, generator=noise)
            for j in range(R + 1 - K, R + 1):
                lat = step(j, lat, False)
    return pipe.to_images(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--restart", type=int, nargs=2, metavar=("R", "K"), default=None,
                    help="after step R, re-noise to step R+1-K's level and denoise K steps again")
    ap.add_argument("--relations", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--seeds", default="204-211")
    ap.add_argument("--prompt-set", default="tuning", choices=["heldout", "tuning"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    pipe, clf = load_shipped(), load_shipped_classifier()
    seeds = seed_list(args.seeds, args.prompt_set)
    kinds: Counter = Counter()
    verdicts = []
    t0 = time.perf_counter()
    for spec in benchmark_prompts(args.relations, args.prompts, args.prompt_set):
        steer = Steerer(pipe, clf, spec.text)
        prompt = steer.prompt or spec.text
        kw = dict(num_inference_steps=25, guidance_scale=None, generator=[torch.Generator().manual_seed(s) for s in seeds])
        with steer:
            start = steer.screened_latents(pipe, [prompt] * len(seeds), kw)
            images = sample(pipe, prompt, start, L2SCallback(steer), tuple(args.restart) if args.restart else None)
        for seed, image in zip(seeds, images):
            failure = judge_prompt(image, spec.objects, spec.relations, detect(image)).failure
            kinds[failure] += 1
            verdicts.append({"prompt": spec.text, "seed": seed, "failure": failure})
    n = sum(kinds.values())
    print(f"restart {args.restart}: accuracy {kinds['correct'] / n:.3f}  missing {kinds['missing'] / n:.3f}  "
          f"fused {kinds['fused'] / n:.3f}  misplaced {kinds['misplaced'] / n:.3f}  "
          f"{(time.perf_counter() - t0) / n:.2f} s/image ({n} images)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(verdicts, fh)


if __name__ == "__main__":
    main()
