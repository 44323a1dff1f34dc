"""Steering arms on tuning prompts of one chain kind only (e.g. the straight chains "A above B above C").

    python benchmarks/bench_chain_kind.py --kind straight --prompts 12 --seeds 204-207 --grid benchmarks/grids/straight_chains.jsonl

The prompts are the tuning set's two-relation prompts (never the benchmark's first 100) of that
kind, in the tuning set's order; arms run interleaved prompt by prompt, as ``l2s eval`` runs them.
Prints `l2s eval`'s tables (accuracy and failure kinds per arm; arms paired on the same images);
``--json`` writes its rows, which `l2s eval --compare` reads.
"""
from __future__ import annotations

import argparse
import json

from bench_prompt_groups import GROUPS, tuning_prompts_of_kind
from l2s_shapes.benchmark import (arm_label, arm_steering, load_arms, markdown_table, paired_comparisons, paired_table,
                                  seed_list)
from l2s_shapes.evaluate import evaluate, summarize
from l2s_shapes.pipeline import load_shipped
from l2s_shapes.relation_classifier import load_shipped_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="straight", choices=GROUPS["chain"][1:])
    ap.add_argument("--relations", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--skip", type=int, default=0, help="leave out the kind's first SKIP tuning prompts (a second "
                    "tuning batch, to check a setting picked on the first)")
    ap.add_argument("--seeds", default="204-207")
    ap.add_argument("--grid", required=True, help="JSON-lines arms, as `l2s eval --grid` reads them")
    ap.add_argument("--json", default=None, help="write the rows (as `l2s eval --json` does) here")
    ap.add_argument("--model", default=None, help="pipeline folder (default: the shipped model)")
    ap.add_argument("--classifier", default=None, help="relation classifier folder (default: the shipped one)")
    args = ap.parse_args()
    arms = load_arms(grid=args.grid)
    specs = tuning_prompts_of_kind(args.kind, args.skip + args.prompts, args.relations)[args.skip:]
    seeds = seed_list(args.seeds, "tuning")
    pipe, clf = load_shipped(args.model), load_shipped_classifier(args.classifier)
    steerings = [arm_steering(a, clf) for a in arms]
    results: list[list[dict]] = [[] for _ in arms]
    for spec in specs:
        for a, steering in enumerate(steerings):
            results[a] += evaluate(pipe, [spec], seeds, batch=len(seeds), steering=steering)["results"]
    rows = []
    for arm, res in zip(arms, results):
        for r in res:
            r["arm"] = arm_label(arm)
        rows.append({"relations": args.relations, "arm": arm_label(arm), "seeds": seeds, **summarize(res), "results": res})
    paired = paired_comparisons(rows)
    print(f"{len(specs)} {args.kind} tuning prompts (after the first {args.skip}) x seeds {args.seeds}\n\n{markdown_table(rows)}\n\n{paired_table(paired)}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"prompt_set": "tuning", "kind": args.kind, "skip": args.skip, "model": args.model, "classifier": args.classifier,
                       "prompts": [s.text for s in specs], "seeds": seeds, "rows": rows, "paired": paired}, fh, indent=1)


if __name__ == "__main__":
    main()
