"""l2s/shapes/relation_classifier.py and `l2s train-classifier`: data, training, persistence."""
import json

import numpy as np

from l2s.__main__ import main
from l2s.classifier import RelationClassifier


def test_train_classifier_cli_end_to_end(tmp_path, capsys):
    assert main(["train-classifier", "--out", str(tmp_path), "--examples", "8", "--epochs", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 8 * 2 * 5                       # examples x (positive, negative) x steps
    clf = RelationClassifier.load(tmp_path / "classifier")
    meta = clf.config.meta
    assert meta["dual_inversion"] and meta["map_size"] == 16 and meta["step_indices"] == [0, 3, 6, 9, 12]
    assert meta["layers"] and meta["inversion_mode"] == "noise"
    # the map dataset was cached; the single-inversion ablation reuses it and keeps positive rows only
    assert main(["train-classifier", "--out", str(tmp_path), "--examples", "8", "--epochs", "1", "--single"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 80
    single = RelationClassifier.load(tmp_path / "classifier-single")
    assert not single.config.meta["dual_inversion"] and single.config.meta["train_rows"] < 40
    assert not np.array_equal(single.params, clf.params)
