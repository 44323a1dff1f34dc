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

--reweight N: also print each (relation count, arm)'s accuracy with its groups weighted as the
benchmark's first N held-out prompts mix them (the tuning set's mix differs: 2 straight chains in its
first 24 two-relation prompts, the benchmark's first 25 hold 10), an estimate of the held-out row
from a tuning run:

    python benchmarks/bench_prompt_groups.py --prompt-set tuning --reweight 25 docs/runs/tuning-distinct-tokens-r2.json
"""
from __future__ import annotations

import argparse
from collections import Counter, defaultdict

from bench_missing_objects import rows_with_specs
from l2s.relations import OPPOSITE
from l2s_shapes.benchmark import benchmark_prompts

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


def tuning_prompts_of_kind(kind: str, count: int, relations: int = 2) -> list:
    """The tuning set's first ``count`` prompts with ``relations`` relations whose chain is ``kind``."""
    return [s for s in benchmark_prompts(relations, 400, "tuning") if chain_group(s) == kind][:count]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="JSON files written by `python -m l2s eval --json`")
    ap.add_argument("--by", default="chain", choices=[*GROUPS, "both"])
    ap.add_argument("--prompt-set", default="heldout", choices=["heldout", "tuning"])
    ap.add_argument("--reweight", type=int, default=0, metavar="N",
                    help="also print accuracy reweighted to the group mix of the benchmark's first N held-out prompts")
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
    if args.reweight:
        print(f"\n{reweighted_table(pooled, group_of, args.reweight)}")


def reweighted_table(pooled: dict[tuple[int, str, str], Counter], group_of, count: int) -> str:
    """Per (relation count, arm): accuracy as run, and with each group weighted by its share of the
    benchmark's first ``count`` held-out prompts (n/a when the run lacks a group the benchmark has)."""
    lines = [f"| relations | arm | accuracy as run | reweighted to the first {count} held-out prompts' mix |",
             "|---|---|---|---|"]
    for rel, arm in sorted({(k[0], k[1]) for k in pooled}):
        mix = Counter(group_of(spec) for spec in benchmark_prompts(rel, count, "heldout"))
        groups = {k[2]: c for k, c in pooled.items() if k[:2] == (rel, arm)}
        total = sum(sum(c.values()) for c in groups.values())
        as_run = sum(c["correct"] for c in groups.values()) / total
        if set(mix) <= set(groups):
            estimate = sum(mix[g] / count * groups[g]["correct"] / sum(groups[g].values()) for g in mix)
            cell = f"{estimate:.3f} (" + ", ".join(f"{g} {mix[g]}" for g in sorted(mix)) + ")"
        else:
            cell = "n/a: the run lacks " + ", ".join(sorted(set(mix) - set(groups)))
        lines.append(f"| {rel} | {arm} | {as_run:.3f} | {cell} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
