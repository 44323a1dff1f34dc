"""Steering arms on tuning prompts of one chain kind only (e.g. the straight chains "A above B above C").

    python benchmarks/bench_chain_kind.py --kind straight --prompts 12 --seeds 204-207 --grid benchmarks/grids/straight_chains.jsonl

The prompts are the tuning set's two-relation prompts (never the benchmark's first 100) of that
kind, in the tuning set's order; arms run interleaved prompt by prompt, as ``l2s eval`` runs them.
Prints each arm's accuracy and failure kinds, and each arm against the first on the same images.
"""
from __future__ import annotations

import argparse
import json

from bench_prompt_groups import GROUPS, chain_group
from l2s.stats import ci_text, paired_counts, wilson_interval
from l2s_shapes.benchmark import arm_label, arm_steering, benchmark_prompts, load_arms, seed_list
from l2s_shapes.evaluate import evaluate, summarize
from l2s_shapes.pipeline import load_shipped
from l2s_shapes.relation_classifier import load_shipped_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="straight", choices=GROUPS["chain"][1:])
    ap.add_argument("--relations", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--seeds", default="204-207")
    ap.add_argument("--grid", required=True, help="JSON-lines arms, as `l2s eval --grid` reads them")
    ap.add_argument("--json", default=None, help="write every image's result here")
    args = ap.parse_args()
    arms = load_arms(grid=args.grid)
    specs = [s for s in benchmark_prompts(args.relations, 400, "tuning") if chain_group(s) == args.kind][:args.prompts]
    seeds = seed_list(args.seeds, "tuning")
    pipe, clf = load_shipped(), load_shipped_classifier()
    steerings = [arm_steering(a, clf) for a in arms]
    results: list[list[dict]] = [[] for _ in arms]
    for spec in specs:
        for a, steering in enumerate(steerings):
            results[a] += evaluate(pipe, [spec], seeds, batch=len(seeds), steering=steering)["results"]
    print(f"{len(specs)} {args.kind} tuning prompts x seeds {args.seeds}\n")
    print("| arm | images | accuracy | 95% CI | missing | fused | misplaced | s/image | only this right / only first right | McNemar p |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    right = [{(r["prompt"], r["seed"]): r["failure"] == "correct" for r in res} for res in results]
    for a, (arm, res) in enumerate(zip(arms, results)):
        s = summarize(res)
        k = sum(r["failure"] == "correct" for r in res)
        pc = paired_counts(right[a], right[0]) if a else None
        vs = f"{pc['only_a']} / {pc['only_b']} | {pc['p']:.2g}" if pc else " | "
        f = s["failures"]
        print(f"| {arm_label(arm)} | {s['n_images']} | {s['accuracy']:.3f} | {ci_text(wilson_interval(k, len(res)))} | "
              f"{f['missing']:.3f} | {f['fused']:.3f} | {f['misplaced']:.3f} | {s['seconds_per_image']:.2f} | {vs} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"kind": args.kind, "seeds": seeds, "arms": [arm_label(a) for a in arms], "results": results}, fh)


if __name__ == "__main__":
    main()
