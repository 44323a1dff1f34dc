"""Vanilla vs steered wall time on real SD 1.4 / SD 2.1 UNet and FLUX.1-dev transformer
architectures (random weights).

    python benchmarks/bench_steer.py --model sd14 --size 512 --steps 10            # CPU, here
    python benchmarks/bench_steer.py --model sd14 --size 512 --steps 50 --device cuda --dtype float16
    python benchmarks/bench_steer.py --model sd21 --size 768 --steps 50 --device cuda --dtype float16
    python benchmarks/bench_steer.py --model flux --size 1024 --steps 28 --device cuda --dtype bfloat16
    python benchmarks/bench_steer.py --model flux --flux-layers 1,1 --size 256 --steps 4   # CPU smoke run
    python benchmarks/bench_steer.py --model shapes          # the shipped shapes model and classifier

The UNet is the published SD 1.4 / 2.1 architecture with random weights, the text encoder the
SD 1.4 CLIP-L text architecture (random), the tokenizer a character-level CLIP BPE. Flux: the
FLUX.1-dev transformer config (``l2s.testing.FLUX_DEV_CONFIG``; guidance 3.5 embedded, no CFG
batch) with small text encoders and VAE (they run once per image in both arms). Timings cover
the whole pipeline call with ``output_type="latent"`` (no VAE decode: the same cost in both arms,
so leaving it out makes the ratio larger, not smaller). The classifier is random: the loss value is
meaningless here, only the cost of each gradient iteration is measured (``loss_target=-1`` makes
every scheduled iteration run). Rows: vanilla; steered with early exit (forward stops after the
last captured layer); steered with the full forward.

``--model shapes`` times the shipped 64 px shapes model with its trained classifier over held-out
one-relation prompts (``--prompts`` x 2 seeds, arms interleaved prompt by prompt): vanilla; steered
with the classifier's recommended schedule, which stops a step once the loss is under its target;
the same schedule with every iteration run.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from l2s.steer import SteeringConfig


def build(model: str, device: str, dtype: torch.dtype, flux_layers: tuple[int, int] | None = None):
    from l2s.testing import flux_dev_pipeline, sd_pipeline
    if model == "flux":
        return flux_dev_pipeline(Path(tempfile.mkdtemp()), flux_layers, device, dtype)
    return sd_pipeline(Path(tempfile.mkdtemp()), model, device, dtype)


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
    ap.add_argument("--model", default="sd14", choices=["sd14", "sd21", "flux", "shapes"])
    ap.add_argument("--flux-layers", default=None, help="D,S: shrink Flux to D double and S single blocks "
                                                        "(a smoke run; not the real architecture)")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels (latent = size / 8)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default 10; shapes: 25, its schedule)")
    ap.add_argument("--iterations", type=int, default=SteeringConfig.iterations,
                    help=f"gradient iterations per steered step (default {SteeringConfig.iterations}, the default schedule; "
                         "all of them run: the random classifier never reaches the loss target)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--arms", default="vanilla,early,full", help="vanilla, early (steered, early exit), full "
                                                              "(steered, full forward); vanilla always runs")
    ap.add_argument("--prompts", type=int, default=10, help="shapes only: held-out prompts (x 2 seeds)")
    ap.add_argument("--preset", default="default", choices=["default", "paper", "both"],
                    help="steering schedule of the steered arms: l2s's default (--iterations per steered step, "
                         "first half), the authors' (l2s.presets: 16 plain updates on steps 0-24), or both side by side")
    args = ap.parse_args()
    if set(args.arms.split(",")) - {"vanilla", "early", "full"}:
        ap.error(f"--arms takes vanilla, early, full; got {args.arms!r}")
    if args.steps is None:
        args.steps = 25 if args.model == "shapes" else 10
    if args.model == "shapes":
        return shapes_main(args)

    from l2s.classifier import ClassifierConfig, RelationClassifier
    from l2s.steer import Steerer
    dtype = getattr(torch, args.dtype)
    flux_layers = tuple(int(v) for v in args.flux_layers.split(",")) if args.flux_layers else None
    pipe = build(args.model, args.device, dtype, flux_layers)
    clf = RelationClassifier(ClassifierConfig(map_size=16))
    if args.device.startswith("cuda"):
        clf = clf.to(args.device)
    prompt = "a dog to the left of a cat"
    call = dict(num_inference_steps=args.steps, guidance_scale=3.5 if args.model == "flux" else 7.5,
                output_type="latent", height=args.size, width=args.size)

    def vanilla():
        pipe(prompt, generator=torch.Generator().manual_seed(0), **call)

    def steered(early_exit: bool, preset: str = "default"):
        def run():
            knobs = dict(loss_target=-1.0, early_exit=early_exit)
            if preset == "paper":                         # the random classifier never reaches their tiny targets
                knobs["loss_targets"] = [-1.0]
            else:
                knobs["iterations"] = args.iterations
            with Steerer(pipe, clf, prompt, preset=preset, **knobs) as s:
                s.generate(pipe, prompt, generator=torch.Generator().manual_seed(0), **call)
        return run

    vanilla()                                             # warm-up (allocator, kernels, first-call costs)
    presets = ["default", "paper"] if args.preset == "both" else [args.preset]
    arms = {"vanilla": ("vanilla", vanilla)}
    for p in presets:
        tag = "" if p == "default" and len(presets) == 1 else f" [{p}]"
        arms[f"early{p}"] = (f"steered, early exit{tag}", steered(True, p))
        arms[f"full{p}"] = (f"steered, full forward{tag}", steered(False, p))
    rows = [arms["vanilla"]] + [arms[f"{a}{p}"] for p in presets for a in args.arms.split(",") if a != "vanilla"]
    results = {}
    for name, fn in rows:
        results[name] = min(timed(fn, args.device) for _ in range(args.repeats))
    n_steered = round(0.5 * args.steps)
    passes = {"default": n_steered * args.iterations, "paper": min(25, args.steps) * 16}   # gradient iterations
    what = "FLUX.1-dev transformer" if args.model == "flux" else f"{args.model} UNet"
    if flux_layers:
        what += f" shrunk to {flux_layers[0]}+{flux_layers[1]} blocks"
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{what} (random weights), {args.size}px, {args.steps} steps, guidance {call['guidance_scale']}, "
          f"{args.dtype} on {device}; default: first {n_steered} steps x {args.iterations} iteration(s); "
          f"paper: steps 0-{min(25, args.steps) - 1} x 16 iterations (every one runs: random classifier)")
    print(f"{'arm':<34}{'s/image':>10}{'x vanilla':>11}{'s/iteration':>13}")
    for name, sec in results.items():
        preset = "paper" if "[paper]" in name else "default"
        per = f"{(sec - results['vanilla']) / passes[preset]:.2f}" if name != "vanilla" else "-"
        print(f"{name:<34}{sec:>10.2f}{sec / results['vanilla']:>11.2f}{per:>13}")


def shapes_main(args) -> None:
    from l2s_shapes.benchmark import benchmark_prompts
    from l2s_shapes.pipeline import DEFAULT_GUIDANCE, load_shipped
    from l2s_shapes.relation_classifier import load_shipped_classifier
    from l2s.steer import Steerer, recommended_settings
    pipe, clf = load_shipped(), load_shipped_classifier()
    knobs = recommended_settings(clf)                        # what Steerer runs by itself; printed below
    prompts = [p.text for p in benchmark_prompts(1, args.prompts)]
    steps = args.steps

    def run(prompt: str, loss_target: float | None):
        gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
        kw = dict(num_inference_steps=steps, generator=gens)
        if loss_target is None:
            return pipe([prompt] * 2, **kw)
        with Steerer(pipe, clf, prompt, loss_target=loss_target) as st:
            return st.generate(pipe, [prompt] * 2, **kw)
    arms = {"vanilla": None, "steered, recommended": knobs["loss_target"], "steered, every iteration": -1.0}
    seconds = dict.fromkeys(arms, 0.0)
    run(prompts[0], None)                                    # warm-up
    for prompt in prompts:                                   # interleaved: drift in machine load hits all arms
        for name, target in arms.items():
            seconds[name] += timed(lambda: run(prompt, target), "cpu")
    n = 2 * len(prompts)
    print(f"shapes model (shipped), 64px, {steps} steps, steered steps {knobs['steps']}, {knobs['iterations']} "
          f"iterations, guidance {DEFAULT_GUIDANCE}, {n} images, CPU ({torch.get_num_threads()} threads)")
    print(f"{'arm':<28}{'s/image':>10}{'x vanilla':>11}")
    for name, sec in seconds.items():
        print(f"{name:<28}{sec / n:>10.3f}{sec / seconds['vanilla']:>11.2f}")


if __name__ == "__main__":
    main()
