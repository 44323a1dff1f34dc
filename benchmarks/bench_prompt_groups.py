"""Accuracy and failure kinds of a shapes-world run, split by what kind of prompt each image had.

    python benchmarks/bench_prompt_groups.py --by chain docs/runs/eval-restart-seeds0-3.json docs/runs/eval-restart-seeds40-43.json
    python benchmarks/bench_prompt_groups.py --by words docs/runs/eval-restart-seeds0-3.json

--by chain: the geometry the relations ask for. "straight": two consecutive relations in the same
direction ("A above B above C": three objects in one line, the middle one between the others);
"folds back": consecutive relations opposite ("A above B below C": B under both); "turns": the
rest ("A above B left of C"). --by words: whether two of the prompt's objects share a colour
("an orange diamond ... an orange cross") or a shape (the held-out pairs repeat both: three orange
pairs, two greens, two circles...). --by both: the two crossed. Runs given together are pooled per
(relation count, arm).
"""
from __future__ import annotations

import argparse
from collections import Counter, defaultdict

from bench_missing_objects import rows_with_specs
from l2s.relations import OPPOSITE

FAILURES = ("missing", "fused", "misplaced")
GROUPS = {"words": ("all distinct", "a colour shared", "a shape shared", "colour and shape shared"),
          "chain": ("one relation", "turns", "folds back", "straight")}


def words_group(spec) -> str:
    colour = len({c for c, _ in spec.objects}) < len(spec.objects)
    shape = len({s for _, s in spec.objects}) < len(spec.objects)
    return GROUPS["words"][int(colour) + 2 * int(shape)]


def chain_group(spec) -> str:
    rels = [r for _, r, _ in spec.relations]
    pairs = list(zip(rels[:-1], rels[1:]))
    if not pairs:
        return "one relation"
    if any(a == b for a, b in pairs):
        return "straight"
    if any(OPPOSITE[a] == b for a, b in pairs):
        return "folds back"
    return "turns"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="JSON files written by `python -m l2s eval --json`")
    ap.add_argument("--by", default="chain", choices=[*GROUPS, "both"])
    ap.add_argument("--prompt-set", default="heldout", choices=["heldout", "tuning"])
    args = ap.parse_args()
    group_of = {"chain": chain_group, "words": words_group,
                "both": lambda spec: f"{chain_group(spec)}, {words_group(spec)}"}[args.by]
    pooled: dict[tuple[int, str, str], Counter] = defaultdict(Counter)
    prompts: dict[tuple[int, str, str], set] = defaultdict(set)
    for path in args.runs:
        for row, specs in rows_with_specs(path, args.prompt_set):
            for r in row["results"]:
                key = (row["relations"], row["arm"], group_of(specs[r["prompt"]]))
                pooled[key][r["failure"]] += 1
                prompts[key].add(r["prompt"])
    order = GROUPS.get(args.by) or [f"{c}, {w}" for c in GROUPS["chain"] for w in GROUPS["words"]]
    print("| relations | arm | group | prompts | images | accuracy | " + " | ".join(FAILURES) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(FAILURES))
    for (rel, arm, group), c in sorted(pooled.items(), key=lambda kv: (kv[0][0], kv[0][1], order.index(kv[0][2]))):
        n = sum(c.values())
        cells = " | ".join(f"{c[k] / n:.2f}" for k in FAILURES)
        print(f"| {rel} | {arm} | {group} | {len(prompts[(rel, arm, group)])} | {n} | {c['correct'] / n:.3f} | {cells} |")


if __name__ == "__main__":
    main()
