"""l2s/inversion.py: maps of known images through a pipeline, dual-inversion datasets."""
import numpy as np
import pytest
import torch

from l2s.geneval import RELATIONS, relations_between
from l2s.inversion import MapDataset, MapInverter, RelationExample, build_dataset, relation_prompt, wrong_relation
l2s_shapes = pytest.importorskip("l2s_shapes", reason="the shapes world is not installed (pip install ./shapes)")
from l2s_shapes.scenes import heldout_pairs, relation_examples  # noqa: E402


@pytest.fixture(scope="module")
def tiny_pipe():
    from l2s_shapes.pipeline import build_pipeline
    return build_pipeline(seed=0, block_out_channels=(8, 8, 16, 16), attention_head_dim=4, norm_num_groups=4)


def test_relation_examples_hold_by_the_rule_and_skip_heldout_pairs():
    held = heldout_pairs()
    examples = relation_examples(30, seed=3)
    assert len(examples) == 30
    for ex in examples:
        assert ex.image.shape == (64, 64, 3) and ex.relation in RELATIONS
        assert tuple(ex.subject.split()) not in held and tuple(ex.object.split()) not in held
    assert len({ex.relation for ex in examples}) == 4


def test_wrong_relation_is_never_the_true_one():
    rng = np.random.default_rng(0)
    for rel in RELATIONS:
        assert {wrong_relation(rel, rng) for _ in range(40)} == set(RELATIONS) - {rel}


@pytest.mark.parametrize("mode", ["noise", "ddim"])
def test_inverter_reads_the_hook_maps(tiny_pipe, mode):
    """Maps per step: normalised, different at different noise levels, reproducible from the noise seed."""
    ex = relation_examples(1, seed=5)[0]
    with MapInverter(tiny_pipe, map_size=8, num_inference_steps=10, mode=mode) as inv:
        x0 = inv.encode(ex.image[None])
        assert x0.shape == (1, 3, 64, 64) and float(x0.min()) >= -1 and float(x0.max()) <= 1
        prompt = relation_prompt(ex.subject, ex.relation, ex.object)
        maps = inv.read(x0, prompt, [2, 4], generator=torch.Generator().manual_seed(0))
        assert maps.shape == (2, 2, 8, 8) and maps.dtype == np.float32
        np.testing.assert_allclose(maps.sum((-2, -1)), 1.0, rtol=1e-4)
        assert not np.allclose(maps[0], maps[1])                       # two different noise levels
        if mode == "noise":                                            # same noise, same step: same maps
            again = inv.read(x0, prompt, [4], generator=torch.Generator().manual_seed(0))
            np.testing.assert_allclose(again[0], maps[1], rtol=1e-5, atol=1e-7)
        assert inv.step_label(2) == 10 and inv.step_label(9) == 45


def test_dual_dataset_labels_both_inversions_with_the_truth(tiny_pipe, tmp_path):
    examples = relation_examples(3, seed=1)
    with MapInverter(tiny_pipe, map_size=8, num_inference_steps=10) as inv:
        dual = build_dataset(inv, examples, [1, 3], dual=True, progress=False)
        single = build_dataset(inv, examples, [1, 3], dual=False, progress=False)
    assert len(dual) == 12 and len(single) == 6
    assert (dual.inversion == 0).sum() == 6 and (dual.inversion == 1).sum() == 6
    truth = np.array([RELATIONS.index(e.relation) for e in examples])
    np.testing.assert_array_equal(dual.labels, truth[dual.image])
    np.testing.assert_allclose(dual.positive_only().maps, single.maps, rtol=1e-5, atol=1e-7)
    assert dual.meta["dual"] and dual.meta["map_size"] == 8 and dual.meta["layers"]
    path = dual.save(tmp_path / "maps")
    back = MapDataset.load(path)
    np.testing.assert_allclose(back.maps, dual.maps, rtol=1e-3, atol=1e-5)        # stored as float16
    np.testing.assert_array_equal(back.labels, dual.labels)
    assert back.meta == dual.meta


def test_inverter_rejects_prompts_without_two_objects(tiny_pipe):
    with MapInverter(tiny_pipe, map_size=8, num_inference_steps=10) as inv:
        x0 = inv.encode(relation_examples(1, seed=2)[0].image[None])
        with pytest.raises(ValueError, match="two objects"):
            inv.read(x0, "a red circle", [1])
    with pytest.raises(ValueError, match="mode"):
        MapInverter(tiny_pipe, mode="bogus")


def test_training_on_maps_learns_and_keeps_the_best_epoch():
    """train_classifier on synthetic relation maps (a stand-in dataset with the same layout)."""
    from l2s.synthetic import relation_pairs
    from l2s.train_classifier import accuracy, split_by_image, train_classifier
    from l2s.classifier import ClassifierConfig
    maps, labels, steps = relation_pairs(1200, 8, seed=0, n_steps=50, noise=0.5)
    n = len(labels)
    ds = MapDataset(maps, labels, steps, np.zeros(n, np.int8), np.arange(n) // 2, {"source": "synthetic"})
    train, val = split_by_image(ds, 0.2, seed=0)
    assert not set(train.image) & set(val.image) and len(train) + len(val) == n
    clf, hist = train_classifier(train, val, ClassifierConfig(map_size=8, hidden1=32, hidden2=16), epochs=6,
                                 progress=False)
    assert hist.val_accuracy[hist.best_epoch] == max(hist.val_accuracy) > 0.9
    assert accuracy(clf, val) == pytest.approx(max(hist.val_accuracy))
    assert clf.config.meta["source"] == "synthetic" and clf.config.meta["best_epoch"] == hist.best_epoch
    with pytest.raises(ValueError, match="8x8"):
        train_classifier(train, val, ClassifierConfig(map_size=16), epochs=1, progress=False)
