"""What a "missing" or "fused" object of a shapes-world run really is, from the run's JSON.

    python benchmarks/bench_missing_objects.py docs/runs/eval-screen8-list-r2-seeds0-3.json

For every prompted object the evaluator did not find (images judged "missing" or "fused"), the
image's detections of that object's colour tell why, checked in this order (a colour drawn twice
counts once, under the first kind that fits): the colour is absent; it was drawn with the
shape of ANOTHER object of the prompt (attribute binding failed: "a red circle, a blue square" ->
a red square); with a shape the prompt does not name; or as a blob of no known shape (deformed:
what the evaluator calls fused). Prints a markdown table per (run, relation count, arm).
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

from l2s_shapes.benchmark import benchmark_prompts

KINDS = ("colour absent", "another object's shape", "a shape not in the prompt", "no known shape (deformed)")


def object_failures(row: dict, objects_of: dict[str, list[tuple[str, str]]]) -> Counter:
    """Counts of ``KINDS`` over the objects not found in a result row's images."""
    out: Counter = Counter()
    for r in row["results"]:
        if r["failure"] not in ("missing", "fused"):
            continue
        objects = objects_of[r["prompt"]]
        for i, ((colour, shape), found) in enumerate(zip(objects, r["found"])):
            if found:
                continue
            drawn = {d["shape"] for d in r["detections"] if d["colour"] == colour}
            others = {s for j, (_, s) in enumerate(objects) if j != i}
            if not drawn:
                out[KINDS[0]] += 1
            elif drawn & others:
                out[KINDS[1]] += 1
            elif drawn - {"unknown"}:
                out[KINDS[2]] += 1
            else:
                out[KINDS[3]] += 1
    return out


def rows_with_specs(path: str, prompt_set: str):
    """(row, {prompt text: its PromptSpec}) for each relational row of an eval JSON."""
    with open(path) as fh:
        run = json.load(fh)
    for row in run["rows"]:
        if row["relations"] == 0:
            continue
        specs = benchmark_prompts(row["relations"], len({r["prompt"] for r in row["results"]}), prompt_set)
        by_text = {s.text: s for s in specs}
        if not all(r["prompt"] in by_text for r in row["results"]):
            raise SystemExit(f"{path}: prompts not in the {prompt_set} set (pass --prompt-set)")
        yield row, by_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="JSON files written by `python -m l2s eval --json`")
    ap.add_argument("--prompt-set", default="heldout", choices=["heldout", "tuning"])
    args = ap.parse_args()
    print("| run | relations | arm | images | objects not found | " + " | ".join(KINDS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(KINDS))
    for path in args.runs:
        for row, specs in rows_with_specs(path, args.prompt_set):
            c = object_failures(row, {text: spec.objects for text, spec in specs.items()})
            n = sum(c.values())
            cells = " | ".join(f"{c[k]} ({c[k] / n:.2f})" if n else "0" for k in KINDS)
            print(f"| {path.split('/')[-1]} | {row['relations']} | {row['arm']} | {len(row['results'])} | {n} | {cells} |")


if __name__ == "__main__":
    main()
