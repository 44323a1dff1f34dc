"""Do objects go missing because of the relation words or because the model cannot draw them all?

    python benchmarks/bench_phrasing_presence.py --models shapes/l2s_shapes/weights/shapes-pipeline runs/three/pipeline

Generates the same held-out object triples (tuning-side prompts: a prompt seed and noise seeds the
benchmark never uses) twice, unsteered: as the two-relation chain "a A r1 a B r2 a C" and as the
plain list "a A, a B and a C" (``l2s.prompts.object_list``, what ``SteeringConfig.list_prompt_from``
makes the denoiser read). Both are judged on the chain's objects; "all drawn" is the share of images
with every object present (not missing, not fused). Prints a markdown table.
"""
from __future__ import annotations

import argparse

from l2s.prompts import object_list, parse_prompt
from l2s_shapes.evaluate import PromptSpec, evaluate, heldout_prompts
from l2s_shapes.pipeline import load_shipped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=[None], help="pipeline folders (default: the shipped model)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--prompt-seed", type=int, default=777, help="seed of the prompt draw (the benchmark's is 2, tuning's 23)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[300, 301, 302])
    args = ap.parse_args()
    chains = heldout_prompts(2, args.prompts, seed=args.prompt_seed)
    lists = [PromptSpec(object_list(parse_prompt(p.text)).prompt, p.objects, []) for p in chains]
    print(f"{args.prompts} two-relation held-out triples x seeds {args.seeds}, unsteered")
    print("| model | phrasing | images | all drawn | missing | fused |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        pipe = load_shipped(model)
        for phrasing, specs in (("chain", chains), ("list", lists)):
            r = evaluate(pipe, specs, args.seeds)
            f = r["failures"]
            print(f"| {model or 'shipped'} | {phrasing} | {r['n_images']} | {1 - f['missing'] - f['fused']:.3f} | "
                  f"{f['missing']:.3f} | {f['fused']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
