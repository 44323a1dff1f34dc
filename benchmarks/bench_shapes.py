"""Vanilla quality of the shipped shapes model: single objects and held-out relation prompts.

    python benchmarks/bench_shapes.py --seeds 4 --prompts 25

Prints a markdown table: relations 0 = all 35 single-object prompts (right colour and shape), then
GenEval-rule accuracy on one- and two-relation prompts built from held-out (colour, shape) pairs,
with failure kinds and wall time per image. The same as
``python -m l2s eval --arms vanilla --relations 0,1,2`` (other options pass through).
"""
import sys

from l2s.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["eval", "--arms", "vanilla", "--relations", "0,1,2", *sys.argv[1:]]))
