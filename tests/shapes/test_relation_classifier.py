"""l2s/shapes/relation_classifier.py and `l2s train-classifier`: data, training, persistence."""
import json

import numpy as np

from l2s.__main__ import main
from l2s.classifier import RelationClassifier


def test_train_classifier_cli_end_to_end(tmp_path, capsys):
    assert main(["train-classifier", "--out", str(tmp_path), "--examples", "8", "--epochs", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 8 * 2 * 12                      # examples x (positive, negative) x steps 1..12
    clf = RelationClassifier.load(tmp_path / "classifier")
    meta = clf.config.meta
    assert meta["dual_inversion"] and meta["map_size"] == 16 and meta["step_indices"] == list(range(1, 13))
    assert meta["steering"]["steps"][0] == 1               # the recommended schedule travels with the weights
    assert meta["layers"] and meta["inversion_mode"] == "noise"
    # the map dataset was cached; the single-inversion ablation reuses it and keeps positive rows only
    assert main(["train-classifier", "--out", str(tmp_path), "--examples", "8", "--epochs", "1", "--single"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 8 * 2 * 12
    single = RelationClassifier.load(tmp_path / "classifier-single")
    assert not single.config.meta["dual_inversion"] and single.config.meta["train_rows"] < 8 * 12
    assert not np.array_equal(single.params, clf.params)
