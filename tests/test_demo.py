"""l2s/demo.py and l2s/__main__.py: the main job runs end to end and the CLI explains itself."""
import json
import subprocess
import sys

import pytest

from l2s.demo import run


def test_demo_trains_and_steers():
    out = run(n_train=1024, epochs=3, batch=64, seed=1, steer_iters=20)
    assert out["extraction"]["map_sums"] == [1.0, 1.0]
    first, last = out["train_loss_first_last"]
    assert last < 0.2 * first
    assert out["val_accuracy"] > 0.9
    before, after = out["steer_target_rate_before_after"]
    assert before < 0.1 and after > 0.9
    assert out["steer_loss_first_last"][1] < out["steer_loss_first_last"][0]


def test_cli_help_and_info():
    r = subprocess.run([sys.executable, "-m", "l2s", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "demo" in r.stdout and "info" in r.stdout
    r = subprocess.run([sys.executable, "-m", "l2s", "demo", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--steer-iters" in r.stdout
    r = subprocess.run([sys.executable, "-m", "l2s", "info"], capture_output=True, text=True, timeout=60)
    info = json.loads(r.stdout)
    assert set(info) == {"cuda_compiled", "cuda_available", "cuda_devices", "cuda_status", "gemm_backend"}


def test_generate_writes_a_png(tmp_path):
    """`l2s generate` on a (tiny, untrained) pipeline folder: a PNG of 64 * upscale pixels and a report."""
    from PIL import Image

    pytest.importorskip("l2s_shapes")
    from l2s_shapes.pipeline import build_pipeline
    build_pipeline(block_out_channels=(8, 8, 16, 16), attention_head_dim=4, norm_num_groups=4).save_pretrained(tmp_path / "m")
    out = tmp_path / "x.png"
    base = [sys.executable, "-m", "l2s", "generate", "a red circle above a blue square", "--model",
            str(tmp_path / "m"), "--steps", "4", "--upscale", "2", "--out", str(out)]
    r = subprocess.run(base, capture_output=True, text=True, timeout=300)      # steered by the shipped classifier
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout[r.stdout.index("{"):])
    assert report["png"] == str(out) and isinstance(report["steered"]["detected"], list)
    assert report["steered"]["verdict"] in ("correct", "missing", "fused", "misplaced") and "vanilla" not in report
    assert Image.open(out).size == (128, 128)
    r = subprocess.run(base + ["--compare", "--plots", str(tmp_path / "p")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p-maps.png").stat().st_size > 1000 and (tmp_path / "p-curves.png").stat().st_size > 1000
    report = json.loads(r.stdout[r.stdout.index("{"):])
    assert report["panels"] == ["vanilla", "steered"] and Image.open(out).size == (256, 128)
    r = subprocess.run(base + ["--no-steer"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and list(json.loads(r.stdout[r.stdout.index("{"):])) == ["prompt", "seed", "png", "panels",
                                                                                   "vanilla"]
