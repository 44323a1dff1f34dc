"""l2s/shapes/benchmark.py and ``l2s eval``: arms, prompt sets, the table."""
import json

import pytest
from test_evaluate import PaintingPipe

from l2s.__main__ import main
from l2s.baselines import CentroidLoss
from l2s.shapes.benchmark import (arm_label, arm_steering, benchmark_prompts, load_arms, markdown_table,
                                  run_benchmark)


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
    import l2s.shapes.benchmark as bench
    made = []
    monkeypatch.setattr(bench, "Steerer", lambda pipe, loss, text, **knobs: made.append((loss, knobs)))
    from l2s.shapes.relation_classifier import load_shipped_classifier
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
    assert rows[0]["n_images"] == 35 * 2 and rows[1]["n_images"] == 3 * 2
    assert all(r["accuracy"] == 1.0 for r in rows)                     # a perfect painter is judged perfect
    table = markdown_table(rows).splitlines()
    assert len(table) == 4 and table[3].startswith("| 1 | vanilla | 6 | 1.000 |")
    tuning = benchmark_prompts(1, 3, "tuning")
    assert [p.text for p in tuning] != [p.text for p in benchmark_prompts(1, 3)]


def test_eval_cli_on_the_shipped_model(tmp_path, capsys):
    """Two held-out prompts x seeds 0-1: vanilla misplaces 3 of 4, L2S gets all 4 (measured)."""
    out = tmp_path / "rows.json"
    assert main(["eval", "--prompts", "2", "--seeds", "2", "--relations", "1", "--arms", "vanilla,l2s",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| relations | arm | images |" in text and "| 1 | l2s | 4 |" in text
    rows = json.loads(out.read_text())
    acc = {r["arm"]: r["accuracy"] for r in rows}
    assert acc["l2s"] > acc["vanilla"] and len(rows[1]["results"]) == 4
    with pytest.raises(SystemExit, match="unknown arm"):
        main(["eval", "--arms", "best"])
