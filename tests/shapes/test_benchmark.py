"""shapes/l2s_shapes/benchmark.py and ``l2s eval``: arms, prompt sets, the table."""
import json

import pytest
from test_evaluate import PaintingPipe

from l2s.__main__ import main
from l2s.baselines import CentroidLoss
from l2s_shapes.benchmark import (RESERVED, arm_label, arm_steering, benchmark_prompts, load_arms, markdown_table,
                                  paired_comparisons, paired_table, run_benchmark, seed_list)
from l2s_shapes.evaluate import distinct_prompt_count, heldout_prompts


def test_arms_by_name_and_from_a_grid(tmp_path):
    assert [a["arm"] for a in load_arms("vanilla,l2s")] == ["vanilla", "l2s"]
    with pytest.raises(ValueError, match="unknown arm"):
        load_arms("vanilla,steer")
    grid = tmp_path / "grid.jsonl"
    grid.write_text('{"arm": "l2s", "step_size": 0.1}\n\n{"arm": "centroid", "margin": 0.3}\n')
    arms = load_arms(grid=grid)
    assert arm_label(arms[0]) == 'l2s {"step_size": 0.1}' and arms[1]["margin"] == 0.3
    grid.write_text('{"arm": "magic"}\n')
    with pytest.raises(ValueError, match="'arm' must be"):
        load_arms(grid=grid)


def test_arm_steering_builds_the_arm_loss_over_the_recommended_settings(monkeypatch):
    import l2s_shapes.benchmark as bench
    made = []
    monkeypatch.setattr(bench, "Steerer", lambda pipe, loss, text, **knobs: made.append((loss, knobs)))
    from l2s_shapes.relation_classifier import load_shipped_classifier
    clf = load_shipped_classifier()
    assert arm_steering({"arm": "vanilla"}, clf) is None
    arm_steering({"arm": "l2s", "step_size": 0.5}, clf)(None, "p")
    arm_steering({"arm": "centroid", "margin": 0.3}, clf)(None, "p")
    (loss_l2s, knobs_l2s), (loss_c, knobs_c) = made
    assert loss_l2s is clf and knobs_l2s["step_size"] == 0.5 and knobs_l2s["steps"] == clf.config.meta["steering"]["steps"]
    assert isinstance(loss_c, CentroidLoss) and "margin" not in knobs_c
    assert knobs_c["step_size"] == clf.config.meta["steering"]["step_size"]


def test_run_benchmark_rows_on_a_painting_generator():
    specs = benchmark_prompts(1, 3) + benchmark_prompts(0, 0)
    seen = []
    rows = run_benchmark(PaintingPipe(specs), None, [{"arm": "vanilla"}], relations=[0, 1], prompts=3, seeds=2,
                         report=seen.append)
    assert [r["relations"] for r in rows] == [0, 1] and seen == rows
    assert rows[0]["n_images"] == 35 * 2 and rows[1]["n_images"] == 3 * 2 and rows[1]["seeds"] == [0, 1]
    assert all(r["accuracy"] == 1.0 for r in rows)                     # a perfect painter is judged perfect
    image = rows[1]["results"][0]
    assert image["arm"] == "vanilla" and image["seconds"] >= 0 and image["failure"] == "correct"
    assert {d["colour"] + " " + d["shape"] for d in image["detections"]} == {" ".join(o) for o in specs[0].objects}
    table = markdown_table(rows).splitlines()
    assert len(table) == 4 and table[3].startswith("| 1 | vanilla | 6 | 1.000 | 0.61-1.00 |")
    assert table[3].endswith("| 1.00 |")                               # time ratio to vanilla


def test_prompt_sets_are_distinct_and_tuning_never_meets_the_benchmark():
    for n in (1, 2, 3):
        bench = [p.text for p in benchmark_prompts(n, 120)]
        assert len(set(bench)) == 120
        assert [p.text for p in benchmark_prompts(n, 25)] == bench[:25]         # a prefix of a longer set
        tuning = [p.text for p in benchmark_prompts(n, 24, "tuning")]
        assert len(set(tuning)) == 24 and not set(tuning) & set(bench[:RESERVED])
    assert distinct_prompt_count(1) == 8 * 7 * 4
    assert len({p.text for p in heldout_prompts(1, 224)}) == 224                  # every one of them
    with pytest.raises(ValueError, match="only 224 different"):
        heldout_prompts(1, 225)


def test_seed_lists():
    assert seed_list(4) == seed_list("4") == [0, 1, 2, 3]
    assert seed_list("2", "tuning") == [200, 201]
    assert seed_list("40-43") == [40, 41, 42, 43] and seed_list("0,7,9") == [0, 7, 9]
    for bad in ("0", "3-1", "1,1", "x"):
        with pytest.raises(ValueError):
            seed_list(bad)


def _row(relations, arm, correct):
    return {"relations": relations, "arm": arm, "results": [{"prompt": f"p{i // 4}", "seed": i % 4,
                                                           "failure": "correct" if ok else "misplaced"}
                                                          for i, ok in enumerate(correct)]}


def test_paired_comparisons_steered_arm_first_and_across_runs():
    rows = [_row(1, "vanilla", [1, 0, 0, 0, 0, 0, 0, 0]), _row(1, "l2s", [1, 1, 1, 1, 1, 1, 1, 0]),
            _row(1, "centroid", [0, 1, 1, 1, 1, 1, 1, 1]), _row(2, "vanilla", [0] * 8)]
    pairs = paired_comparisons(rows)
    assert [(c["a"], c["b"]) for c in pairs] == [("l2s", "vanilla"), ("centroid", "vanilla"), ("l2s", "centroid")]
    assert pairs[0]["only_a"] == 6 and pairs[0]["only_b"] == 0 and pairs[0]["p"] == pytest.approx(2 / 64)
    assert pairs[2]["only_a"] == 1 and pairs[2]["only_b"] == 1 and pairs[2]["p"] == 1.0
    across = paired_comparisons(rows[:2], rows[1:2])
    assert [(c["a"], c["b"]) for c in across] == [("A: vanilla", "B: l2s"), ("A: l2s", "B: l2s")]
    assert across[1]["only_a"] == across[1]["only_b"] == 0 and across[1]["both"] == 7
    assert "| 1 | l2s | vanilla | 8 | 1 | 6 | 0 | 0.0312 |" in paired_table(pairs)


def test_eval_compare_cli(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"rows": [_row(1, "l2s", [1] * 8)]}))
    b.write_text(json.dumps([_row(1, "l2s", [0] * 8)]))                   # an older file: the row list only
    assert main(["eval", "--compare", str(a), str(b)]) == 0
    assert "| 1 | A: l2s | B: l2s | 8 | 0 | 8 | 0 | 0.00781 |" in capsys.readouterr().out
    b.write_text("[{}]")
    with pytest.raises(SystemExit, match="no per-image results"):
        main(["eval", "--compare", str(a), str(b)])


def test_eval_cli_on_the_shipped_model(tmp_path, capsys):
    """Two held-out prompts x seeds 0-1: vanilla misplaces 3 of 4, L2S gets all 4 (measured)."""
    out = tmp_path / "rows.json"
    assert main(["eval", "--prompts", "2", "--seeds", "2", "--relations", "1", "--arms", "vanilla,l2s",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| relations | arm | images |" in text and "| 1 | l2s | 4 |" in text
    assert "| 1 | l2s | vanilla | 4 |" in text and "seeds 0-1" in text           # the paired table, the seeds
    run = json.loads(out.read_text())
    acc = {r["arm"]: r["accuracy"] for r in run["rows"]}
    assert acc["l2s"] > acc["vanilla"] and len(run["rows"][1]["results"]) == 4 and run["seeds"] == [0, 1]
    assert run["paired"][0]["a"] == "l2s" and run["paired"][0]["pairs"] == 4
    with pytest.raises(SystemExit, match="unknown arm"):
        main(["eval", "--arms", "best"])
    with pytest.raises(SystemExit, match="repeats"):
        main(["eval", "--seeds", "1,1"])
    with pytest.raises(SystemExit):
        main(["eval", "--json", str(tmp_path / "missing" / "x.json")])
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_on_two_processes_gives_the_single_process_table(tmp_path):
    """`torchrun --nproc_per_node 2 -m l2s eval ...`: each process makes every other prompt's
    images, results are gathered in prompt order: the same per-image verdicts and table."""
    pytest.importorskip("accelerate")
    import os
    import subprocess
    import sys
    args = ["eval", "--relations", "1", "--prompts", "3", "--seeds", "2", "--steps", "6", "--arms", "vanilla,l2s"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "l2s", *args, "--json", str(tmp_path / "one.json")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29527", "-m", "l2s", *args, "--json", str(tmp_path / "two.json")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("| relations | arm |") == 1               # rank 0 alone prints the table
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["rows"] for n in ("one", "two"))
    key = lambda rows: [(r["arm"], x["prompt"], x["seed"], x["failure"], x["relations_hold"])
                        for r in rows for x in r["results"]]
    assert key(a) == key(b) and len(key(a)) == 2 * 3 * 2
    assert [r["accuracy"] for r in a] == [r["accuracy"] for r in b]
