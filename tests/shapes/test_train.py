"""shapes/l2s_shapes/train.py: a tiny run trains, checkpoints without pickle, and resumes."""
import json

import numpy as np

from conftest import TINY_UNET
from l2s_shapes.train import EMA, make_dataset, train


def test_dataset_is_seeded_and_mostly_plain_captions():
    a_img, a_cap = make_dataset(60, seed=5)
    b_img, b_cap = make_dataset(60, seed=5)
    assert np.array_equal(a_img, b_img) and a_cap == b_cap
    relational = sum(any(r in c for r in ("left of", "right of", "above", "below")) for c in a_cap)
    assert relational < 20 and all(" and " in c for c in a_cap if not any(r in c for r in ("left of", "right of", "above", "below")) and c.count(" a ") > 1)


def test_relational_fraction_sets_the_share_of_relational_captions():
    """The leakage world trains on many relational captions; held-out pairs still never get one."""
    from l2s_shapes.scenes import heldout_pairs
    _, plain = make_dataset(200, seed=3, relational_fraction=0.0)
    _, many = make_dataset(200, seed=3, relational_fraction=1.0, object_count_probs=(0.0, 1.0, 0.0))
    relational = lambda caps: [c for c in caps if any(r in c for r in ("left of", "right of", "above", "below"))]
    assert relational(plain) == []
    assert len(relational(many)) > 80        # two objects with no held-out pair: a relation always holds
    held = {f"{c} {s}" for c, s in heldout_pairs()}
    assert not any(name in c for c in relational(many) for name in held)


def test_line_fraction_lays_out_only_three_object_scenes_and_keeps_old_data():
    base_img, base_cap = make_dataset(80, seed=4)
    img, cap = make_dataset(80, seed=4, line_fraction=1.0)
    from l2s_shapes.scenes import COLOURS
    objects = lambda c: sum(c.split().count(colour) for colour in COLOURS)
    assert [objects(c) for c in cap] == [objects(c) for c in base_cap]      # same object-count draw
    three = np.array([objects(c) == 3 for c in base_cap])
    changed = np.array([not np.array_equal(a, b) for a, b in zip(img, base_img)])
    assert three.any() and (changed == three).all()           # every three-object scene redrawn, no other scene
    assert [c for c, t in zip(cap, three) if not t] == [c for c, t in zip(base_cap, three) if not t]


def test_tiny_run_checkpoints_and_resumes(tmp_path):
    final = train(tmp_path, steps=4, batch=2, n_scenes=16, checkpoint_every=2, probe_every=100, unet_overrides=TINY_UNET)
    assert (final / "model_index.json").exists()
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pkl"))
    train(tmp_path, steps=6, batch=2, n_scenes=16, checkpoint_every=2, probe_every=100, unet_overrides=TINY_UNET)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 6
    assert all(np.isfinite(r["loss"]) for r in log)


def test_ema_swap_is_an_involution():
    import torch
    p = [torch.nn.Parameter(torch.ones(3))]
    ema = EMA(p, 0.9)
    with torch.no_grad():
        p[0].fill_(2.0)
    ema.update(100)
    live = p[0].detach().clone()
    ema.swap()
    assert torch.allclose(p[0], torch.full((3,), 1.1))
    ema.swap()
    assert torch.equal(p[0], live)


def test_init_from_a_pipeline_folder(tmp_path):
    """A run started from a folder begins at ITS weights, not at the seed's fresh initialisation."""
    import torch
    from l2s_shapes.pipeline import build_pipeline, load_shipped
    start = build_pipeline(seed=7, **TINY_UNET)           # the run itself initialises with seed 0
    start.save_pretrained(tmp_path / "start")
    fresh = build_pipeline(seed=0, **TINY_UNET)
    final = train(tmp_path / "run", steps=1, batch=2, n_scenes=8, checkpoint_every=1, probe_every=100,
                  unet_overrides=TINY_UNET, init_from=tmp_path / "start")
    flat = lambda p: torch.cat([q.detach().flatten() for q in p.unet.parameters()])
    trained = flat(load_shipped(final))
    assert (trained - flat(start)).abs().max() < 0.05 < (trained - flat(fresh)).abs().max()


def test_min_timestep_trains_only_on_the_noisiest_steps(tmp_path, monkeypatch):
    from diffusers import DDPMScheduler
    seen = []
    add_noise = DDPMScheduler.add_noise

    def recording(self, x, noise, t):
        seen.extend(int(v) for v in t)
        return add_noise(self, x, noise, t)
    monkeypatch.setattr(DDPMScheduler, "add_noise", recording)
    train(tmp_path, steps=3, batch=4, n_scenes=8, checkpoint_every=3, probe_every=100, unet_overrides=TINY_UNET,
          min_timestep=900)
    assert len(seen) == 12 and min(seen) >= 900
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["min_timestep"] == 900


def test_coords_run_starts_from_a_plain_pipeline_and_records_it(tmp_path):
    """--coords from a plain --init-from model: the coordinate weights start at zero and train."""
    from l2s_shapes.coord_unet import CoordUNet2DConditionModel
    from l2s_shapes.pipeline import build_pipeline, load_shipped
    build_pipeline(seed=7, **TINY_UNET).save_pretrained(tmp_path / "start")
    final = train(tmp_path / "run", steps=2, batch=2, n_scenes=8, checkpoint_every=2, probe_every=100,
                  unet_overrides=TINY_UNET, init_from=tmp_path / "start", coords=True)
    unet = load_shipped(final).unet
    assert isinstance(unet, CoordUNet2DConditionModel)
    assert unet.conv_in.weight[:, 3:].abs().max() > 0       # moved off zero by training
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["coords"] is True


def test_a_frozen_text_encoder_stays_as_given(tmp_path):
    import torch
    from l2s_shapes.model import build_text_encoder, build_tokenizer
    from l2s_shapes.pipeline import load_shipped
    given = build_text_encoder(build_tokenizer(), seed=5)
    given.save_pretrained(tmp_path / "enc")
    final = train(tmp_path / "run", steps=2, batch=2, n_scenes=8, checkpoint_every=2, probe_every=100,
                  unet_overrides=TINY_UNET, text_encoder=tmp_path / "enc")
    back = load_shipped(final).text_encoder.state_dict()
    assert all(torch.equal(v, back[k]) for k, v in given.state_dict().items())
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["text_encoder"].endswith("enc")


def test_resuming_with_another_text_encoder_or_unet_kind_is_refused(tmp_path):
    import pytest
    from l2s_shapes.model import build_text_encoder, build_tokenizer
    build_text_encoder(build_tokenizer(), seed=5).save_pretrained(tmp_path / "enc")
    train(tmp_path / "run", steps=1, batch=2, n_scenes=8, checkpoint_every=1, probe_every=100,
          unet_overrides=TINY_UNET, text_encoder=tmp_path / "enc")
    with pytest.raises(ValueError, match="text_encoder"):
        train(tmp_path / "run", steps=2, batch=2, n_scenes=8, checkpoint_every=1, probe_every=100, unet_overrides=TINY_UNET)
    with pytest.raises(ValueError, match="coords"):
        train(tmp_path / "run", steps=2, batch=2, n_scenes=8, checkpoint_every=1, probe_every=100,
              unet_overrides=TINY_UNET, text_encoder=tmp_path / "enc", coords=True)
    # the same folder spelled another way resumes
    spelled = f"{tmp_path}/./enc/"
    train(tmp_path / "run", steps=2, batch=2, n_scenes=8, checkpoint_every=1, probe_every=100,
          unet_overrides=TINY_UNET, text_encoder=spelled)
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 2
