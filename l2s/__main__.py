"""Command line: ``python -m l2s --help``."""
from __future__ import annotations

import argparse
import json
import os
import sys

from .cli_checks import (Parser, classifier_in, data_spec, file_in, file_out, float_in, folder_in, folder_out, image_out,
                         int_in, int_list, one_line_warnings, prefix_out, prompt_text, unknown_words)

SEED_MAX = 2 ** 63 - 1
MAX_ITERATIONS = 1000            # as steer.MAX_ITERATIONS (not imported: the parser must not import torch)


def torch_device(text: str) -> str:
    """An argparse type: a torch device string ("cpu", "cuda", "cuda:1")."""
    import re
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", text):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {text!r}")
    return text


# commands that load the shapes world's model, classifier or evaluator (the optional l2s-shapes package)
SHAPES_COMMANDS = frozenset({"generate", "judge", "eval", "train-model", "train-text-encoder", "train-classifier", "app"})


def shapes_installed() -> bool:
    """True if the optional shapes world (package ``l2s_shapes``, distribution ``l2s-shapes``) imports."""
    try:
        import l2s_shapes  # noqa: F401
    except ImportError:
        return False
    return True


def uses_shapes(args: argparse.Namespace) -> bool:
    """Whether the command loads the shapes world (train-classifier only by default or for its data)."""
    if args.command == "train-classifier":
        return args.pipeline is None or args.data.startswith("shapes")
    return args.command in SHAPES_COMMANDS


def main(argv: list[str] | None = None) -> int:
    """The ``l2s`` command. Every argument is checked while it is parsed (``cli_checks``); a bad one
    or an error during the work ends the command with one line on stderr and a non-zero status
    (``L2S_DEBUG=1`` shows the traceback instead)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if uses_shapes(args) and not shapes_installed():
        print(f"l2s {args.command}: error: this command uses the shapes world, which is not installed: "
              "pip install --no-build-isolation ./shapes (scripts/install.sh installs it)", file=sys.stderr)
        return 2
    one_line_warnings()
    try:
        return _run(args, parser)
    except KeyboardInterrupt:
        print(f"l2s {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:                       # one line, not a traceback
        if os.environ.get("L2S_DEBUG") == "1":
            raise
        print(f"l2s {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (one-line errors, values checked at parse time)."""
    parser = Parser(prog="l2s", description="Learn-to-Steer: spatial steering for text-to-image diffusion.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    demo = sub.add_parser("demo", help="run the C core end to end on synthetic attention maps "
                                       "(extract, prepare, train the relation classifier, steer) and print the results")
    demo.add_argument("--train-samples", type=int_in(64, 10 ** 7), default=4096, help="synthetic training pairs (default 4096)")
    demo.add_argument("--epochs", type=int_in(1, 10 ** 4), default=6, help="training epochs (default 6)")
    demo.add_argument("--batch", type=int_in(1, 10 ** 5), default=64, help="batch size (default 64)")
    demo.add_argument("--steer-iters", type=int_in(0, 10 ** 5), default=30, help="steering iterations (default 30)")
    demo.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help="random seed (default 0)")
    sub.add_parser("info", help="print the build: CUDA compiled/available, GEMM backend")
    gen = sub.add_parser("generate", help="generate an image with the shipped shapes-world model, steered, and save a PNG",
                         description="Generate a 64x64 image from a prompt with the shapes-world model, steered by the "
                                     "shipped relation classifier (Learn-to-Steer) when the prompt names a spatial "
                                     "relation, and print what the exact evaluator finds in it.")
    gen.add_argument("prompt", type=prompt_text, help='e.g. "a red circle to the left of a blue square"')
    gen.add_argument("--out", type=image_out, default="l2s.png", help="output PNG path (default l2s.png)")
    gen.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help="noise seed (default 0)")
    gen.add_argument("--steps", type=int_in(1, 1000), default=25, help="DDIM denoising steps (default 25)")
    gen.add_argument("--guidance", type=float_in(0.0, 100.0), default=None, help="classifier-free guidance scale "
                     "(default: the shipped model's, l2s_shapes.pipeline.DEFAULT_GUIDANCE)")
    gen.add_argument("--no-steer", action="store_true", help="plain generation (no steering)")
    gen.add_argument("--compare", action="store_true", help="save vanilla | steered side by side (same seed)")
    gen.add_argument("--classifier", type=classifier_in, default=None, help="relation classifier folder, stem or Hub repo id "
                     "(default: the shipped one)")
    gen.add_argument("--iterations", type=int_in(0, MAX_ITERATIONS), default=None, help="gradient iterations per "
                     "steered step (default: the classifier's recommendation)")
    gen.add_argument("--step-size", type=float_in(0.0, 100.0), default=None, help="RMS latent change per update "
                     "(default: recommended)")
    gen.add_argument("--loss-target", type=float_in(), default=None, help="stop a step's updates under this loss "
                     "(default: recommended)")
    gen.add_argument("--list-prompt-from", type=int_in(0, 10 ** 3), default=None, metavar="N", help="with N or more "
                     "relations, generate from the plain object list and steer the relations alone (0: never; "
                     "default: recommended, 2 for the shipped classifier)")
    gen.add_argument("--screen-noises", type=int_in(1, 64), default=None, metavar="N", help="start the steered image "
                     "from the best-scored of N initial noises drawn from --seed (1: from the seed's own noise, as the "
                     "vanilla panel; default: recommended, 8 for the shipped classifier)")
    restart = gen.add_mutually_exclusive_group()
    restart.add_argument("--restart", type=int_in(0, 1000), nargs=2, default=None, metavar=("R", "K"), help="after "
                         "step R, re-noise the latent to step R+1-K's noise level and denoise those K steps again, "
                         "unsteered: the model repairs shapes the steering deformed (K extra denoiser steps; default: "
                         "recommended, 10 8 for the shipped classifier)")
    restart.add_argument("--no-restart", action="store_true", help="steer without the recommended restart")
    gen.add_argument("--restart-steer", type=float_in(0.0, 10.0), default=None, metavar="F", help="steer the "
                     "restart's replayed steps too, at F times the step size, where a relation's loss is over the "
                     "target (0: unsteered replay; default: recommended)")
    gen.add_argument("--layout-weight", type=float_in(0.0, 1e4), default=None, metavar="W", help="pull each object "
                     "toward a layout planned to hold every relation at once, at W times that term, on prompts with "
                     "two relations on one axis (0: off; default: recommended, 40 for the shipped classifier)")
    gen.add_argument("--layout-box-weight", type=float_in(0.0, 1e4), default=None, metavar="W", help="also pull each "
                     "object's attention into a box around its planned place, at W times that term, on the same "
                     "prompts (0: off; default: recommended, 100 for the shipped classifier)")
    gen.add_argument("--layout-box-side", type=float_in(0.0, 1.0, above=True), default=None, metavar="S",
                     help="side of those boxes, a fraction of the image (smaller: smaller objects, wider gaps; "
                     "default: recommended, 0.2 for the shipped classifier)")
    gen.add_argument("--layout-box-target", type=float_in(0.0, 1.0), default=None, metavar="T", help="keep steering "
                     "a step while the boxes' mean term is above T, even once the relations are met (1: the relations "
                     "alone decide; default: recommended, 0 for the shipped classifier: every steered step runs in "
                     "full)")
    gen.add_argument("--preset", default="default", choices=["default", "paper"], help="steering schedule: l2s's "
                     "(default) or the authors' (paper: SD 1.4/2.1 and FLUX.1 models only; l2s.presets)")
    gen.add_argument("--plots", type=prefix_out, default=None, metavar="PREFIX", help="also save PREFIX-maps.png "
                     "(subject/object attention per steered step) and PREFIX-curves.png (loss, relation probability); "
                     "needs matplotlib")
    gen.add_argument("--upscale", type=int_in(1, 64), default=4, help="nearest-neighbour enlargement of the PNG "
                     "(default 4: 256 px)")
    gen.add_argument("--model", type=folder_in, default=None, help="pipeline folder (default: the model shipped in "
                     "shapes/l2s_shapes/weights)")
    jd = sub.add_parser("judge", help="the relation classifier as a judge: read an image's relation from its maps",
                        description="Noise an image (a PNG, or one generated from the prompt) to the classifier's steps, "
                                    "read the first relation's subject and object maps through the model, and print the "
                                    "classifier's relation probabilities per step and averaged, beside the exact "
                                    "evaluator's verdict.")
    jd.add_argument("prompt", type=prompt_text, help='e.g. "a red circle to the left of a blue square" (its first '
                    'relation is judged)')
    jd.add_argument("--image", type=file_in, default=None, help="PNG to judge (square, any multiple of 64 px; "
                    "default: generate one)")
    jd.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help="noise seed of generation and of the judge's "
                    "noising (default 0)")
    jd.add_argument("--steps", type=int_in(1, 1000), default=25, help="DDIM steps when generating (default 25)")
    jd.add_argument("--no-steer", action="store_true", help="judge a vanilla image (when generating)")
    jd.add_argument("--classifier", type=classifier_in, default=None, help="relation classifier folder, stem or Hub repo id "
                    "(default: the shipped one)")
    jd.add_argument("--model", type=folder_in, default=None, help="pipeline folder (default: the shipped model)")
    ev = sub.add_parser("eval", help="spatial-accuracy benchmark table: vanilla vs centroid loss vs Learn-to-Steer",
                        description="Generate held-out prompts (objects never paired with a relation in training) with "
                                    "each arm and the same seeds, judge every image with the exact evaluator "
                                    "(GenEval's rule) and print a markdown table of accuracy with its 95%% Wilson "
                                    "interval, failure kinds (missing, fused, misplaced) and seconds per image (arms "
                                    "interleaved prompt by prompt), then each steered arm paired with vanilla and with "
                                    "every other arm on the same images (exact McNemar test). "
                                    "With --compare A.json B.json, only print the paired table of two saved runs.")
    ev.add_argument("--arms", default="vanilla,centroid,l2s", help="comma-separated arms at their tuned settings: "
                    "vanilla, centroid, l2s (default all three; ignored with --grid)")
    ev.add_argument("--grid", type=file_in, default=None, help="JSON-lines file, one arm per line: {\"arm\": ..., optional "
                    "\"margin\" (centroid) and SteeringConfig fields}; see benchmarks/grids/")
    ev.add_argument("--relations", default="1,2", help="relation counts, comma-separated; 0 = every single-object "
                                                       "prompt (default 1,2)")
    ev.add_argument("--prompts", type=int_in(1, 5000), default=25, help="different prompts per relation count "
                    "(default 25)")
    ev.add_argument("--seeds", default="4", help="noise seeds per prompt: a count N (the prompt set's first N: "
                    "0.. for heldout, 200.. for tuning; default 4, as GenEval), a range 40-43, or a list 0,7,9")
    ev.add_argument("--prompt-set", default="heldout", choices=["heldout", "tuning"],
                    help="heldout: the benchmark's prompts and seeds; tuning: other prompts and seeds, for choosing "
                         "settings")
    ev.add_argument("--steps", type=int_in(1, 1000), default=25, help="DDIM denoising steps (default 25)")
    ev.add_argument("--guidance", type=float_in(0.0, 100.0), default=None, help="guidance scale (default: the shipped "
                    "model's)")
    ev.add_argument("--classifier", type=classifier_in, default=None, help="relation classifier folder, stem or Hub repo id (default: "
                    "the shipped one)")
    ev.add_argument("--model", type=folder_in, default=None, help="pipeline folder (default: the shipped model)")
    ev.add_argument("--json", type=file_out, default=None, help="also write the run (settings, rows, every image's prompt, seed, arm, "
                                                 "detections, verdict and seconds) to this file")
    ev.add_argument("--compare", nargs=2, type=file_in, default=None, metavar=("A.json", "B.json"),
                    help="print the paired table of two --json runs (every arm of A against every arm of B on the "
                         "images both judged) and exit")
    app = sub.add_parser("app", help="the web app (Gradio): vanilla vs steered, verdict, probabilities, maps, curves",
                         description="Serve the Learn-to-Steer web app on http://HOST:PORT: a prompt, a seed and the "
                                     "steering settings; vanilla and steered images side by side, the evaluator's "
                                     "verdict (shapes world), the classifier's relation probabilities, attention maps "
                                     "per steered step and the loss curve. Needs gradio (pip install l2s[app]).")
    app.add_argument("--model", type=folder_in, default=None, help="pipeline folder (default: the shipped shapes "
                     "model); any folder DiffusionPipeline.from_pretrained opens")
    app.add_argument("--classifier", type=classifier_in, default=None, help="relation classifier folder, stem or Hub "
                     "repo id (default: the shipped one)")
    app.add_argument("--steps", type=int_in(1, 1000), default=25, help="denoising steps (default 25)")
    app.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    app.add_argument("--port", type=int_in(1024, 65535), default=7860, help="port (default 7860)")
    cv = sub.add_parser("convert-checkpoint", help="convert one of the authors' classifier checkpoints (.pth) to a "
                        "classifier folder", description="Open IN.pth with torch.load(weights_only=True) only (a "
                        "pickle needing anything else is refused, never executed), check its state dict against the "
                        "authors' network for its config, and write DIR: config.json, model.safetensors, README.md.")
    cv.add_argument("checkpoint", type=file_in, help="the authors' .pth file (e.g. sd14.pth)")
    cv.add_argument("--out", type=folder_out, required=True, help="classifier folder to write")
    cv.add_argument("--family", choices=["sd14", "sd21", "flux-dev", "flux-schnell"], default=None,
                    help="the model it was trained for (default: guessed from its config; SD 1.4 and 2.1 look alike)")
    tm = sub.add_parser("train-model", help="train the shapes-world text-to-image model (resumable)",
                        description="Train the shapes-world model; rerunning with the same --out resumes from its checkpoint.")
    tm.add_argument("--out", type=folder_out, default="runs/shapes", help="run folder: data cache, checkpoint, log, "
                    "final pipeline")
    tm.add_argument("--steps", type=int_in(1, 10 ** 7), default=5000, help="optimiser steps (default 5000)")
    tm.add_argument("--batch", type=int_in(1, 10 ** 5), default=32, help="batch size (default 32)")
    tm.add_argument("--lr", type=float_in(0.0, 10.0, above=True), default=1e-3, help="peak learning rate (default "
                    "1e-3, cosine to 10%%)")
    tm.add_argument("--scenes", type=int_in(1, 10 ** 8), default=30000, help="training scenes rendered once and "
                    "cached (default 30000)")
    tm.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help="seed of data and initialisation (default 0)")
    tm.add_argument("--device", type=torch_device, default="cpu", help="torch device (default cpu)")
    tm.add_argument("--init-from", type=folder_in, default=None, help="pipeline folder to start a new run from (e.g. shapes/l2s_shapes/weights/"
                                                      "shapes-pipeline to train the shipped model further)")
    tm.add_argument("--object-mix", type=object_mix, default="0.3,0.4,0.3", help="share of training scenes with 1,2,3 objects "
                                                              "(default 0.3,0.4,0.3)")
    tm.add_argument("--relational-fraction", type=float_in(0.0, 1.0), default=0.1, help="share of captions that state "
                    "the scene's relations (default 0.1, the shipped model; the leakage world uses more)")
    tm.add_argument("--line-fraction", type=float_in(0.0, 1.0), default=0.0, help="share of three-object scenes laid "
                    "out in a row, column or diagonal, the layouts straight chains need (default 0, the shipped model)")
    tm.add_argument("--min-timestep", type=int_in(0, 999), default=0, help="train only on timesteps >= this (default 0; "
                    "e.g. 800: the noisiest steps, where generation lays objects out)")
    tm.add_argument("--coords", action="store_true", help="give the UNet two pixel-coordinate input channels "
                    "(zero-initialised from a plain --init-from model), so it can tie relation words to places")
    tm.add_argument("--text-encoder", type=folder_in, default=None, help="a text-encoder folder to use frozen (e.g. "
                    "from `l2s_shapes.text_pretrain`, a contrastively trained CLIP in miniature); only the UNet trains")
    tt = sub.add_parser("train-text-encoder", help="pre-train a shapes-world text encoder contrastively (a CLIP "
                        "in miniature, for train-model --text-encoder)",
                        description="Match captions to scene images against the batch's other images and against "
                        "each caption with its relations reversed (so the encoder must read the relation word), "
                        "as CLIP was trained apart from SD's UNet. Writes OUT/text_encoder.")
    tt.add_argument("--out", type=folder_out, default="runs/text-encoder", help="run folder: data cache, log, "
                    "text_encoder/")
    tt.add_argument("--steps", type=int_in(1, 10 ** 7), default=3000, help="optimiser steps (default 3000)")
    tt.add_argument("--batch", type=int_in(2, 10 ** 5), default=256, help="scenes per batch (default 256)")
    tt.add_argument("--lr", type=float_in(0.0, 10.0, above=True), default=1e-3, help="peak learning rate (default 1e-3)")
    tt.add_argument("--scenes", type=int_in(2, 10 ** 8), default=30000, help="scenes rendered once and cached "
                    "(default 30000; the last 1000 validate)")
    tt.add_argument("--seed", type=int_in(0, SEED_MAX), default=3, help="seed of data and initialisation (default 3)")
    tt.add_argument("--object-mix", type=object_mix, default="0.2,0.6,0.2", help="share of scenes with 1,2,3 objects "
                    "(default 0.2,0.6,0.2)")
    tt.add_argument("--relational-fraction", type=float_in(0.0, 1.0), default=1.0, help="share of captions that "
                    "state the scene's relations (default 1.0)")
    tc = sub.add_parser("train-classifier", help="train a relation classifier for a pipeline (dual inversion, sharded "
                                                 "map datasets, data-parallel under accelerate/torchrun)",
                        description="Invert images with known boxes through a diffusers pipeline with the true and a "
                                    "wrong relation in the prompt, read the subject's and object's attention maps "
                                    "(sharded safetensors datasets: a rerun resumes), and train the classifier on "
                                    "them. Default: the shapes world's model and scenes. Under `accelerate launch "
                                    "-m l2s train-classifier ...` (or torchrun) every process makes its share of "
                                    "the shards; rank 0 trains.")
    tc.add_argument("--pipeline", "--model", dest="pipeline", type=folder_in, default=None,
                    help="pipeline folder (anything DiffusionPipeline.from_pretrained opens offline; default: the "
                         "shipped shapes model)")
    tc.add_argument("--data", type=data_spec, default="shapes", help="boxes:FOLDER (FOLDER/boxes.json), "
                    "gqa:SCENE_GRAPHS.json,IMAGE_DIR, shapes (default) or shapes:F (a share F of the shapes "
                    "examples from three objects in a line, two of them named)")
    tc.add_argument("--kind", default="mlp", choices=["mlp", "transformer"], help="classifier kind: mlp (fused C) on "
                    "layer- and head-averaged maps (default), or the authors' transformer (torch, a narrower width than "
                    "theirs) on per-(layer, head) map stacks")
    tc.add_argument("--out", type=folder_out, default="runs/classifier", help="output folder: maps/ or stacks/ (the "
                    "sharded dataset) and classifier/ or transformer/ (default runs/classifier)")
    tc.add_argument("--examples", type=int_in(2, 10 ** 7), default=2000, help="examples to invert at most (shapes: "
                    "scenes drawn; default 2000)")
    tc.add_argument("--size", type=int_in(8, 4096), default=None, help="image side fed to the pipeline (default: its "
                    "native size)")
    tc.add_argument("--inference-steps", type=int_in(2, 1000), default=25, help="the schedule the maps' steps belong "
                    "to (default 25)")
    tc.add_argument("--read-steps", type=int_list, default=None, help="denoising-step indices to read maps at, e.g. "
                    "1-12 (default: 1 to half the schedule)")
    tc.add_argument("--mode", default="noise", choices=["noise", "ddim", "fixed-point"], help="inversion: noising "
                    "(rectified flow: straight-line noising), DDIM inversion, or fixed-point DDIM inversion with DDIM "
                    "reconstruction and a PSNR filter (the authors' SD recipe)")
    tc.add_argument("--psnr-floor", type=float_in(0.0, 200.0), default=19.5, help="fixed-point: drop images whose "
                    "reconstruction is under this PSNR in dB (default 19.5, the authors')")
    tc.add_argument("--shard-size", type=int_in(1, 10 ** 6), default=64, help="examples per shard (default 64)")
    tc.add_argument("--single", action="store_true", help="single inversion (positive prompt only): the ablation")
    tc.add_argument("--attributes", action="store_true", help="add the authors' attribute class \"is\": objects' "
                    "\"attributes\" (boxes.json, GQA) give \"a {attribute} {object}\" rows")
    tc.add_argument("--epochs", type=int_in(1, 10 ** 5), default=150, help="maximum epochs (early stopping, "
                    "patience 10)")
    tc.add_argument("--lr", type=float_in(0.0, 10.0, above=True), default=3e-4, help="AdamW learning rate (default "
                    "3e-4; 1e-3 and 1e-4 gave the same validation accuracy within 0.005 in the shapes world)")
    tc.add_argument("--seed", type=int_in(0, SEED_MAX), default=0, help="seed of scenes, noise and initialisation "
                    "(default 0)")
    tc.add_argument("--device", type=torch_device, default="cpu", help="torch device of the pipeline (default cpu; "
                    "cuda under accelerate/torchrun: each process its own GPU)")
    return parser


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "generate":
        return _generate(args)
    if args.command == "judge":
        return _judge(args)
    if args.command == "eval":
        return _eval(args)
    if args.command == "train-model":
        from l2s_shapes.train import train
        final = train(args.out, steps=args.steps, batch=args.batch, lr=args.lr, n_scenes=args.scenes, seed=args.seed,
                      device=args.device, init_from=args.init_from, object_count_probs=args.object_mix,
                      relational_fraction=args.relational_fraction, line_fraction=args.line_fraction,
                      min_timestep=args.min_timestep, coords=args.coords,
                      text_encoder=args.text_encoder)
        print(f"pipeline saved to {final}")
        return 0
    if args.command == "train-text-encoder":
        from l2s_shapes.text_pretrain import pretrain_text_encoder
        if args.scenes <= 1000 + args.batch:
            parser.error(f"--scenes must exceed the 1000 validation scenes + --batch ({1000 + args.batch})")
        folder = pretrain_text_encoder(args.out, steps=args.steps, batch=args.batch, lr=args.lr, n_scenes=args.scenes,
                                       seed=args.seed, object_count_probs=args.object_mix,
                                       relational_fraction=args.relational_fraction)
        print(f"text encoder saved to {folder}")
        return 0
    if args.command == "train-classifier":
        return _train_classifier(args)
    if args.command == "app":
        return _app(args)
    if args.command == "convert-checkpoint":
        from .authors import convert_checkpoint
        out = convert_checkpoint(args.checkpoint, args.out, args.family)
        print(json.dumps({"saved": str(out), **json.loads((out / "config.json").read_text())["meta"]}, indent=2))
        return 0
    if args.command == "info":
        from . import _C
        print(json.dumps({"cuda_compiled": _C.cuda_compiled(), "cuda_available": _C.cuda_available(),
                          "cuda_devices": _C.cuda_device_count(), "cuda_status": _C.cuda_status(),
                          "gemm_backend": _C.gemm_backend()}, indent=2))
        return 0
    from .demo import run
    result = run(args.train_samples, args.epochs, args.batch, args.seed, args.steer_iters)
    print(json.dumps(result, indent=2))
    return 0


def _train_classifier(args) -> int:
    from pathlib import Path

    from .classifier_data import list_items, make_map_dataset
    from .inversion import ATTRIBUTE
    from .relations import RELATIONS
    from .distributed import distributed_rank
    from .data_spec import parse_data_spec
    from .train_classifier import accuracy, split_shards, train_classifier, train_transformer
    out, spec = Path(args.out), parse_data_spec(args.data)
    stack = args.kind == "transformer"
    if args.attributes and spec.kind == "shapes":
        raise ValueError("--attributes needs boxes: or gqa: data (shapes scenes carry no attribute words)")
    items = list_items(spec, args.examples, args.seed, attributes=args.attributes)   # checked before the model loads
    rank, world, barrier, device = distributed_rank(args.device)
    pipe, describe = load_pipeline(args.pipeline)
    # the shipped shapes model or a fine-tune of it (a ShapesPipeline folder): the shipped classifier's shape and
    # tuned steering schedule (without them a new classifier would steer with SteeringConfig's generic defaults)
    shapes_world = spec.kind == "shapes" and describe is not None and not stack
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)     # the probes' progress bars; the shards have their own
    steps = args.read_steps or list(range(1, args.inference_steps // 2 + 1))
    if max(steps) >= args.inference_steps:
        raise ValueError(f"--read-steps {max(steps)} is past the last step of --inference-steps {args.inference_steps}")
    data = make_map_dataset(pipe, out / ("stacks" if stack else "maps"), spec, steps, num_inference_steps=args.inference_steps, size=args.size,
                            max_items=args.examples, dual=True, mode=args.mode,
                            psnr_floor=args.psnr_floor if args.mode == "fixed-point" else None, seed=args.seed,
                            shard_size=args.shard_size, rank=rank, world=world, barrier=barrier, items=items,
                            stack=stack, relations=tuple(RELATIONS) + ((ATTRIBUTE,) if args.attributes else ()))
    if data is None:                               # not rank 0: its shards are made; rank 0 trains
        return 0
    if len(data) == 0:
        raise ValueError(f"no rows left to train on ({len(data.manifest['dropped_psnr'])} images dropped by the PSNR "
                         "floor): lower --psnr-floor or check the images")
    if shapes_world:                               # the shipped model's classifier shape and steering schedule
        from l2s_shapes.relation_classifier import train_shapes_classifier
        clf, hist, val = train_shapes_classifier(data.load(), dual=not args.single, seed=args.seed,
                                                 epochs=args.epochs, lr=args.lr)
        if args.pipeline is not None:
            clf.config.meta["pipeline"] = str(args.pipeline)
    else:                                          # streamed shard by shard: the maps need not fit in memory
        train, val = split_shards(data, 0.15, seed=args.seed, positive_only=args.single)
        trainer = train_transformer if stack else train_classifier
        clf, hist = trainer(train, val, epochs=args.epochs, lr=args.lr, seed=args.seed)
        meta = clf.meta if stack else clf.config.meta
        meta.update({"dual_inversion": not args.single, "pipeline": str(args.pipeline or "shapes")})
        if spec.kind == "shapes" and describe is not None:      # a shapes model: its tuned schedule
            from l2s_shapes.relation_classifier import SHAPES_STEERING
            meta["steering"] = dict(SHAPES_STEERING)
    path = out / (("transformer" if stack else "classifier") + ("-single" if args.single else ""))
    clf.save_pretrained(path)                      # a folder: config.json, model.safetensors, README.md
    print(json.dumps({"saved": str(path), "rows": len(data), "shards": data.n_shards,
                      "dropped_psnr": len(data.manifest["dropped_psnr"]), "val_accuracy": accuracy(clf, val),
                      "best_epoch": hist.best_epoch, "epochs_run": len(hist.val_accuracy)}, indent=2))
    return 0


def _eval(args) -> int:
    from l2s_shapes.benchmark import (load_arms, load_rows, markdown_table, paired_comparisons, paired_table, row_line,
                                   run_benchmark, seed_list)
    if args.compare:
        try:
            rows_a, rows_b = (load_rows(p) for p in args.compare)
        except (OSError, ValueError, KeyError) as exc:
            raise SystemExit(f"l2s eval: error: --compare: {exc}")
        print(paired_table(paired_comparisons(rows_a, rows_b)))
        return 0
    from l2s_shapes.pipeline import DEFAULT_GUIDANCE, load_shipped
    from l2s_shapes.relation_classifier import load_shipped_classifier
    from .steer import recommended_settings
    try:
        arms = load_arms(args.arms, args.grid)
        relations = [int(v) for v in args.relations.split(",")]
        if any(r < 0 or r > 3 for r in relations):
            raise ValueError(f"--relations takes counts from 0 to 3, got {args.relations!r}")
        seeds = seed_list(args.seeds, args.prompt_set)
        if args.prompts < 1:
            raise ValueError(f"--prompts must be at least 1, got {args.prompts}")
        if args.json and not os.access(os.path.dirname(os.path.abspath(args.json)), os.W_OK):
            raise ValueError(f"--json {args.json}: its folder does not exist or is not writable")
    except ValueError as exc:
        raise SystemExit(f"l2s eval: error: {exc}")
    from .distributed import distributed_gather, distributed_rank
    rank, world, _, _ = distributed_rank()
    pipe, clf = load_shipped(args.model), load_shipped_classifier(args.classifier)
    if rank == 0 and any(arm.get("arm") == "l2s" for arm in arms):
        _warn_without_schedule(clf)
    rows = run_benchmark(pipe, clf, arms, relations, args.prompts, seeds, args.prompt_set, args.steps,
                         args.guidance, report=lambda row: print(row_line(row), flush=True) if rank == 0 else None,
                         rank=rank, world=world, gather=distributed_gather)
    if rank != 0:                                  # under torchrun/accelerate: rank 0 reports
        return 0
    guidance = DEFAULT_GUIDANCE if args.guidance is None else args.guidance
    print(f"\nprompt set {args.prompt_set}, {args.prompts} prompts x seeds {_seed_text(seeds)}, steps={args.steps} "
          f"guidance={guidance}; classifier settings {json.dumps(recommended_settings(clf))}\n")
    print(markdown_table(rows))
    paired = paired_comparisons(rows)
    if paired:
        print("\nPaired on the same images (exact McNemar test; a difference is supported where p < 0.05):\n")
        print(paired_table(paired))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"prompt_set": args.prompt_set, "prompts": args.prompts, "seeds": seeds, "steps": args.steps,
                       "guidance": guidance, "rows": rows, "paired": paired}, fh, indent=1)
    return 0


def _seed_text(seeds: list[int]) -> str:
    """[0, 1, 2, 3] -> "0-3"; others as a list."""
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 1:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(str(s) for s in seeds)


def object_mix(text: str) -> tuple[float, float, float]:
    """An argparse type: three non-negative shares of 1-, 2- and 3-object scenes ("0.4,0.35,0.25")."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or not all(p >= 0 and p < float("inf") for p in parts) or sum(parts) <= 0:
        raise argparse.ArgumentTypeError(f"needs three non-negative shares such as 0.4,0.35,0.25, got {text!r}")
    return parts[0], parts[1], parts[2]


def _render(pipe, prompt: str, seed: int, steps: int, guidance: float | None = None, classifier=None, **knobs):
    """One image of ``prompt`` from ``seed``; steered by ``classifier`` when given (``knobs``: SteeringConfig
    fields). Returns the image, the Steerer (None when vanilla) and the wall time in seconds."""
    import time

    import torch
    kw = dict(num_inference_steps=steps, guidance_scale=guidance, generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    if classifier is None:
        return pipe(prompt, **kw).images[0], None, time.perf_counter() - t0
    from .steer import Steerer
    with Steerer(pipe, classifier, prompt, **knobs) as steer:
        image = steer.generate(pipe, prompt, **kw).images[0]
    return image, steer, time.perf_counter() - t0


def _generate(args) -> int:
    import numpy as np
    from PIL import Image

    from l2s_shapes.judge import describe_image
    from l2s_shapes.pipeline import load_shipped
    if args.plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit("l2s generate: error: --plots needs matplotlib (pip install l2s[plots])")
    knobs = {k: v for k, v in (("iterations", args.iterations), ("step_size", args.step_size),
                               ("loss_target", args.loss_target), ("list_prompt_from", args.list_prompt_from),
                               ("screen_noises", args.screen_noises),
                               ("restart", tuple(args.restart) if args.restart else None),
                               ("restart_steer", args.restart_steer), ("layout_weight", args.layout_weight),
                               ("layout_box_weight", args.layout_box_weight),
                               ("layout_box_side", args.layout_box_side),
                               ("layout_box_target", args.layout_box_target))
             if v is not None}
    if args.no_restart:
        if args.restart_steer:
            raise SystemExit("l2s generate: error: --restart-steer: steers the restart's replayed steps; "
                             "not allowed with --no-restart")
        knobs["restart"] = None
    if args.restart:
        from .restart import check_restart
        try:
            check_restart(tuple(args.restart), args.steps)
            from .steer import SteeringConfig
            SteeringConfig(restart=tuple(args.restart))
        except ValueError as exc:
            raise SystemExit(f"l2s generate: error: --restart: {exc}")
    pipe = load_shipped(args.model)
    _warn_unknown_words(pipe, args.prompt)
    if args.preset == "paper":
        from .presets import model_family
        from l2s_shapes.relation_classifier import load_shipped_classifier
        try:
            model_family(pipe.unet, load_shipped_classifier(args.classifier).meta.get("family"))
        except ValueError as exc:
            raise SystemExit(f"l2s generate: error: --preset paper: {exc}")
        knobs["preset"] = "paper"
    common = (pipe, args.prompt, args.seed, args.steps, args.guidance)
    runs, generated_from = {}, None
    if args.no_steer or args.compare:
        image, _, seconds = _render(*common)
        runs["vanilla"] = (image, seconds)
    if not args.no_steer:
        from l2s_shapes.relation_classifier import load_shipped_classifier
        clf = load_shipped_classifier(args.classifier)
        _warn_without_schedule(clf)
        image, steer, seconds = _render(*common, classifier=clf, **knobs)
        runs["steered"] = (image, seconds)
        generated_from = steer.prompt               # the object list, with --list-prompt-from
        if not steer.active:
            print("no spatial relation found in the prompt: generated without steering", file=sys.stderr)
        elif args.plots:
            from .plots import plot_attention, plot_curves
            trip = steer.parsed.triplets[0]
            names = (steer.parsed.objects[trip.subject].name, steer.parsed.objects[trip.object].name)
            plot_attention([r for r in steer.records if r.triplet == 0], image, names).savefig(f"{args.plots}-maps.png")
            plot_curves(steer.records).savefig(f"{args.plots}-curves.png")
    row = np.concatenate([im for im, _ in runs.values()], axis=1)
    Image.fromarray(np.repeat(np.repeat(row, args.upscale, 0), args.upscale, 1)).save(args.out)
    report = {"prompt": args.prompt, "seed": args.seed, "png": args.out,
              "panels": list(runs) if len(runs) > 1 else None}
    if generated_from is not None:
        report["steered_generated_from"] = generated_from
    for name, (image, seconds) in runs.items():
        report[name] = {"seconds": round(seconds, 2), **describe_image(args.prompt, image)}
    print(json.dumps(report, indent=2))
    return 0


def _judge(args) -> int:
    import numpy as np
    from PIL import Image

    from l2s_shapes.judge import describe_image, judge_relation
    from l2s_shapes.pipeline import load_shipped
    from l2s_shapes.relation_classifier import load_shipped_classifier
    img = None
    if args.image:
        try:
            with Image.open(args.image) as opened:
                img = opened.convert("RGB")          # decodes the whole file: a truncated one fails here
        except (OSError, SyntaxError, ValueError) as exc:
            raise SystemExit(f"l2s judge: error: {args.image} is not a readable image ({exc})")
    pipe, clf = load_shipped(args.model), load_shipped_classifier(args.classifier)
    _warn_unknown_words(pipe, args.prompt)
    size = pipe.unet.config.sample_size
    if img is not None:
        if img.size[0] % size or img.size != (img.size[0], img.size[0]):
            raise SystemExit(f"l2s judge: error: {args.image}: expected a square image whose side is a multiple of "
                             f"{size}, got {img.size[0]}x{img.size[1]}")
        image = np.asarray(img.resize((size, size), Image.NEAREST))
    else:
        image = _render(pipe, args.prompt, args.seed, args.steps, classifier=None if args.no_steer else clf)[0]
    try:
        verdict = judge_relation(pipe, clf, args.prompt, image, seed=args.seed)
    except ValueError as exc:
        raise SystemExit(f"l2s judge: error: {exc}")
    evaluator = describe_image(args.prompt, image)
    if not evaluator["detected"]:
        print("l2s: warning: the evaluator finds no object in the image: the classifier reads maps of objects that "
              "are not there, so its relation probabilities mean little", file=sys.stderr)
    print(json.dumps({"prompt": args.prompt, **verdict, "evaluator": evaluator}, indent=2))
    return 0


def _app(args) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SystemExit("l2s app: error: the app needs gradio (pip install l2s[app])")
    from .app import build_app
    from l2s_shapes.relation_classifier import load_shipped_classifier
    pipe, describe = load_pipeline(args.model)
    app = build_app(pipe, load_shipped_classifier(args.classifier), describe, steps=args.steps)
    app.launch(server_name=args.host, server_port=args.port)
    return 0


def load_pipeline(folder: str | None):
    """(pipeline, evaluator or None): the shapes world's model (with its exact evaluator) by default
    or for a shapes pipeline folder; any other folder through DiffusionPipeline, without one."""
    import json as _json
    from pathlib import Path
    index = Path(folder) / "model_index.json" if folder else None
    if folder is None or _json.loads(index.read_text()).get("_class_name") == "ShapesPipeline":
        from l2s_shapes.judge import describe_image
        from l2s_shapes.pipeline import load_shipped
        return load_shipped(folder), describe_image
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging
    diffusers_logging.disable_progress_bar()       # loading bars and notes would bury a one-line error
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    return DiffusionPipeline.from_pretrained(folder, local_files_only=True), None


def schedule_warning(classifier) -> str | None:
    """The warning for a classifier that records no steering schedule (``meta["steering"]``): steering it
    in the shapes world falls back to ``SteeringConfig``'s generic defaults, which fuse objects there
    (0.240 against 0.656 with the tuned schedule on the tuning prompts, docs/results.md, stop 23)."""
    from .steer import recommended_settings
    if recommended_settings(classifier):
        return None
    return ("l2s: warning: the classifier records no steering schedule, so steered arms use SteeringConfig's "
            "defaults, not the shapes world's tuned one (l2s_shapes.relation_classifier.SHAPES_STEERING): retrain "
            "it with `train-classifier --model FOLDER`, or pass those settings (an `l2s eval --grid` arm, or SteeringConfig)")


def _warn_without_schedule(classifier) -> None:
    """Print ``schedule_warning``'s line, if any, to stderr."""
    warning = schedule_warning(classifier)
    if warning:
        print(warning, file=sys.stderr)


def _warn_unknown_words(pipe, prompt: str) -> None:
    """Words the model's tokenizer does not know become its unknown token: say so before generating."""
    unknown = unknown_words(pipe.tokenizer, prompt)
    if unknown:
        print(f"l2s: warning: the model does not know {', '.join(repr(w) for w in unknown)}: they reach it as its "
              "unknown token (objects named by them are steered on that token)", file=sys.stderr)

if __name__ == "__main__":
    sys.exit(main())
