"""Spatial accuracy on held-out prompts: vanilla vs the hand-made centroid loss vs Learn-to-Steer.

    python benchmarks/bench_steering.py --prompts 25 --seeds 4        # the README's table
    python benchmarks/bench_steering.py --prompt-set tuning --relations 1 --prompts 24 --seeds 2 \\
        --grid benchmarks/grids/tuning.jsonl          # the runs the shipped settings were chosen from

The same as ``python -m l2s eval`` (all options: ``--help``); the logic is in
``shapes/l2s_shapes/benchmark.py``. Prompts use only the held-out (colour, shape) pairs (never in
relational training captions nor in the classifier's scenes); one- and two-relation chains; judged
by the exact evaluator with GenEval's rule. Each arm uses the same seeds, schedule and guidance;
only the loss differs. ``--prompt-set tuning`` draws other prompts and seeds, so settings tuned
there are not tuned on the benchmark.
"""
import sys

from l2s.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
