"""Accuracy and failure kinds of a shapes-world run, split by whether the prompt's objects share a word.

    python benchmarks/bench_shared_words.py docs/runs/eval-target01-r2-seeds0-3.json docs/runs/eval-target01-r2-seeds40-43.json

The held-out pairs repeat colours and shapes (three orange objects, two greens, two circles...),
so about half of the multi-object prompts name two objects with the same colour ("an orange
diamond ... an orange cross") or the same shape. Groups: every colour and shape distinct; a colour
shared; a shape shared; both. Runs given together are pooled per (relation count, arm).
"""
from __future__ import annotations

import argparse
from collections import Counter, defaultdict

from bench_missing_objects import rows_with_objects

FAILURES = ("missing", "fused", "misplaced")
GROUPS = ("all distinct", "a colour shared", "a shape shared", "colour and shape shared")


def group_of(objects: list[tuple[str, str]]) -> str:
    colour = len({c for c, _ in objects}) < len(objects)
    shape = len({s for _, s in objects}) < len(objects)
    return GROUPS[int(colour) + 2 * int(shape)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="JSON files written by `python -m l2s eval --json`")
    ap.add_argument("--prompt-set", default="heldout", choices=["heldout", "tuning"])
    args = ap.parse_args()
    pooled: dict[tuple[int, str, str], Counter] = defaultdict(Counter)
    prompts: dict[tuple[int, str, str], set] = defaultdict(set)
    for path in args.runs:
        for row, objects_of in rows_with_objects(path, args.prompt_set):
            for r in row["results"]:
                key = (row["relations"], row["arm"], group_of(objects_of[r["prompt"]]))
                pooled[key][r["failure"]] += 1
                prompts[key].add(r["prompt"])
    print("| relations | arm | prompts | group | images | accuracy | " + " | ".join(FAILURES) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(FAILURES))
    for (rel, arm, group), c in sorted(pooled.items(), key=lambda kv: (kv[0][0], kv[0][1], GROUPS.index(kv[0][2]))):
        n = sum(c.values())
        cells = " | ".join(f"{c[k] / n:.2f}" for k in FAILURES)
        print(f"| {rel} | {arm} | {len(prompts[(rel, arm, group)])} | {group} | {n} | {c['correct'] / n:.3f} | {cells} |")


if __name__ == "__main__":
    main()
