"""Vanilla vs steered wall time on a real Stable Diffusion UNet architecture (random weights).

    python benchmarks/bench_steer.py --model sd14 --size 256 --steps 10            # CPU, here
    python benchmarks/bench_steer.py --model sd14 --size 512 --steps 50 --device cuda --dtype float16

The UNet is the published SD 1.4 / 2.1 architecture with random weights, the text encoder the
SD 1.4 CLIP-L text architecture (random), the tokenizer a character-level CLIP BPE. Timings cover
the whole pipeline call with ``output_type="latent"`` (no VAE decode: the same cost in both arms,
so leaving it out makes the ratio larger, not smaller). The classifier is random: the loss value is
meaningless here, only the cost of each gradient iteration is measured (``loss_target=-1`` makes
every scheduled iteration run). Rows: vanilla; steered with early exit (forward stops after the
last captured layer); steered with the full forward.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def build(model: str, device: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    from l2s.testing import sd_unet, write_clip_tokenizer
    tok = write_clip_tokenizer(Path(tempfile.mkdtemp()) / "tok", max_length=77)
    unet = sd_unet(model, dtype=dtype)
    dim = unet.config.cross_attention_dim
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=dim, intermediate_size=4 * dim,
                                        num_hidden_layers=12, num_attention_heads=dim // 64, max_position_embeddings=77,
                                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id))
    # a 4-level VAE (scale factor 8, like SD's) kept tiny: it only sets the latent size here
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4)
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="sd14", choices=["sd14", "sd21"])
    ap.add_argument("--size", type=int, default=256, help="image side in pixels (latent = size / 8)")
    ap.add_argument("--steps", type=int, default=10, help="denoising steps (first half steered)")
    ap.add_argument("--iterations", type=int, default=1, help="gradient iterations per steered step")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    from l2s.classifier import ClassifierConfig, RelationClassifier
    from l2s.steer import Steerer
    dtype = getattr(torch, args.dtype)
    pipe = build(args.model, args.device, dtype)
    clf = RelationClassifier(ClassifierConfig(map_size=16))
    if args.device.startswith("cuda"):
        clf = clf.to(args.device)
    prompt = "a dog to the left of a cat"
    call = dict(num_inference_steps=args.steps, guidance_scale=7.5, output_type="latent", height=args.size,
                width=args.size)

    def vanilla():
        pipe(prompt, generator=torch.Generator().manual_seed(0), **call)

    def steered(early_exit: bool):
        def run():
            with Steerer(pipe, clf, prompt, iterations=args.iterations, loss_target=-1.0,
                         early_exit=early_exit) as s:
                s.generate(pipe, prompt, generator=torch.Generator().manual_seed(0), **call)
        return run

    vanilla()                                             # warm-up (allocator, kernels, first-call costs)
    rows = [("vanilla", vanilla), ("steered, early exit", steered(True)), ("steered, full forward", steered(False))]
    results = {}
    for name, fn in rows:
        results[name] = min(timed(fn, args.device) for _ in range(args.repeats))
    n_steered = round(0.5 * args.steps)
    print(f"{args.model} UNet (random weights), {args.size}px, {args.steps} steps (first {n_steered} steered, "
          f"{args.iterations} iteration(s) each), CFG 7.5, {args.dtype} on {args.device}")
    print(f"{'arm':<24}{'s/image':>10}{'x vanilla':>11}")
    for name, sec in results.items():
        print(f"{name:<24}{sec:>10.2f}{sec / results['vanilla']:>11.2f}")
    grad_pass = (results["steered, early exit"] - results["vanilla"]) / (n_steered * args.iterations)
    full_pass = (results["steered, full forward"] - results["vanilla"]) / (n_steered * args.iterations)
    print(f"per gradient iteration: early exit {grad_pass:.2f} s, full forward {full_pass:.2f} s "
          f"(saving {100 * (1 - grad_pass / full_pass):.0f}%)")


if __name__ == "__main__":
    main()
