"""Exact-triplet rate of the prompt parser on prompts written in the benchmarks' styles.

    python benchmarks/bench_parser.py [--show-misses]

Two sets in ``tests/data/`` (GenEval position prompts, T2I-CompBench spatial phrasings, the
authors' multi-relation templates, what users write): ``parser_prompts.tsv`` was written together
with the parser; ``parser_prompts_heldout.tsv`` was written afterwards and never used to change it.
A prompt counts as right ("exact") only when its steerable triplets AND its unsupported relations
are exactly the expected ones (a parse error counts as wrong); "steerable triplets only" ignores
the unsupported column (the older parser had none). Runs against whatever ``l2s.prompts`` is importable, so an older
checkout can be measured with the same file.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from l2s.prompts import parse_prompt

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SETS = {"written with the parser": DATA / "parser_prompts.tsv", "held out": DATA / "parser_prompts_heldout.tsv"}


def load_set(path: Path) -> list[tuple[str, list[str], list[str]]]:
    """(prompt, expected "subject | relation | object" lines, expected unsupported lines) per row."""
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cols = (line.split("\t") + ["", ""])[:3]
        split = lambda c: [" | ".join(p.strip() for p in t.split("|")) for t in c.split(";") if t.strip()]
        rows.append((cols[0], split(cols[1]), split(cols[2])))
    return rows


def parse_lines(prompt: str) -> tuple[list[str], list[str]]:
    """The parser's triplets and unsupported relations as "subject | relation | object" lines."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = parse_prompt(prompt)
    names = [o.name for o in parsed.objects]
    unsupported = [f"{names[s]} | {p} | {names[o]}" for s, p, o in getattr(parsed, "unsupported", [])]
    return parsed.describe(), unsupported


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--show-misses", action="store_true", help="print every prompt parsed wrong")
    args = ap.parse_args()
    for label, path in SETS.items():
        rows = load_set(path)
        right = right_triplets = 0
        for prompt, want, want_unsup in rows:
            try:
                got = parse_lines(prompt)
            except ValueError as exc:
                got = ([f"error: {exc}"], [])
            right += got == (want, want_unsup)
            right_triplets += got[0] == want
            if got != (want, want_unsup) and args.show_misses:
                print(f"MISS {prompt!r}: got {got}, want {(want, want_unsup)}")
        print(f"{label} ({path.name}, {len(rows)} prompts): exact {right}/{len(rows)} = {right / len(rows):.3f}; "
              f"steerable triplets only {right_triplets}/{len(rows)} = {right_triplets / len(rows):.3f}")

if __name__ == "__main__":
    main()
