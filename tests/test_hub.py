"""l2s/hub.py: classifier folders in the Hub layout, offline, and the older STEM pair."""
import time

import numpy as np
import pytest

from l2s import load_classifier
from l2s.classifier import ClassifierConfig, RelationClassifier


def _model():
    clf = RelationClassifier(ClassifierConfig(map_size=4, hidden1=8, hidden2=4, n_steps=5, step_dim=2), seed=2)
    clf.config.meta.update({"base_model": "tiny/sd", "val_accuracy": 0.75, "steering": {"iterations": 2},
                            "layers": ["up_blocks.0.attn2"], "license": "apache-2.0"})
    return clf


def test_folder_round_trip_with_a_model_card(tmp_path):
    clf = _model()
    clf.save_pretrained(tmp_path / "clf")
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (tmp_path / "clf" / "README.md").read_text()
    assert 'base_model: "tiny/sd"' in card and 'license: "apache-2.0"' in card and "| validation accuracy | 0.750 |" in card
    assert '{"iterations": 2}' in card and "left of, right of, above, below" in card
    for back in (RelationClassifier.from_pretrained(tmp_path / "clf"), load_classifier(tmp_path / "clf")):
        np.testing.assert_array_equal(back.params, clf.params)
        assert back.config == clf.config
    assert callable(getattr(RelationClassifier, "push_to_hub"))          # for users with network (not run here)


def test_the_older_stem_pair_still_loads(tmp_path):
    clf = _model()
    stem = clf.save(tmp_path / "old")
    for given in (stem, stem.with_suffix(".json"), stem.with_suffix(".safetensors")):
        np.testing.assert_array_equal(load_classifier(given).params, clf.params)


def test_a_repo_id_without_network_fails_fast_and_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="no classifier folder at 'someone/l2s-classifier'.*cannot be reached"):
        load_classifier("someone/l2s-classifier")
    assert time.perf_counter() - t0 < 5


def test_a_repo_id_when_the_hub_host_does_not_resolve(monkeypatch):
    import l2s.hub as hub
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "HUB_HOST", "l2s-no-such-host.invalid")
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="cannot be reached"):
        load_classifier("someone/l2s-classifier")
    assert time.perf_counter() - t0 < 10


def test_a_folder_without_weights_names_what_is_missing(tmp_path):
    _model().save_pretrained(tmp_path / "clf")
    (tmp_path / "clf" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lacks model.safetensors"):
        load_classifier(tmp_path / "clf")


def test_the_shipped_classifier_is_a_folder():
    pytest.importorskip("l2s_shapes")
    from l2s_shapes.relation_classifier import SHIPPED_CLASSIFIER, load_shipped_classifier
    assert (SHIPPED_CLASSIFIER / "config.json").is_file() and (SHIPPED_CLASSIFIER / "README.md").is_file()
    clf = load_shipped_classifier()
    assert clf.config.meta["val_accuracy"] > 0.8 and clf.relations == ("left of", "right of", "above", "below")
