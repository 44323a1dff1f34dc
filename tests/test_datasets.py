"""l2s/datasets.py on small GQA-format and box-folder fixtures written here."""
import json

import numpy as np
import pytest
from PIL import Image

from l2s.datasets import box_folder_examples, gqa_examples, pairs_from_boxes


def _image(path, size=(120, 80)):
    Image.fromarray(np.full((size[1], size[0], 3), 200, np.uint8)).save(path)


@pytest.fixture
def gqa(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    graphs = {
        "1001": {"width": 120, "height": 80, "objects": {
            "a": {"name": "dog", "x": 5, "y": 30, "w": 20, "h": 20, "relations": [{"name": "near", "object": "b"}]},
            "b": {"name": "teddy bear", "x": 90, "y": 30, "w": 25, "h": 25, "relations": []},
            "c": {"name": "speck", "x": 60, "y": 5, "w": 2, "h": 2, "relations": []}}},        # too small: ignored
        "1002": {"width": 120, "height": 80, "objects": {
            "a": {"name": "cat", "x": 50, "y": 2, "w": 20, "h": 15, "relations": []},
            "b": {"name": "mat", "x": 45, "y": 55, "w": 30, "h": 20, "relations": []}}},
        "1003": {"width": 120, "height": 80, "objects": {                                      # same names: ambiguous
            "a": {"name": "cup", "x": 5, "y": 5, "w": 20, "h": 20, "relations": []},
            "b": {"name": "cup", "x": 90, "y": 50, "w": 20, "h": 20, "relations": []}}},
    }
    (tmp_path / "scene_graphs.json").write_text(json.dumps(graphs))
    for k in graphs:
        _image(images / f"{k}.jpg")
    return tmp_path


def test_gqa_loader_derives_relations_from_boxes(gqa):
    ex = gqa_examples(gqa / "scene_graphs.json", gqa / "images", size=32, max_per_image=5)
    got = sorted((e.subject, e.relation, e.object) for e in ex)
    assert got == [("cat", "above", "mat"), ("dog", "left of", "teddy bear"), ("mat", "below", "cat"),
                   ("teddy bear", "right of", "dog")]
    assert all(e.image.shape == (32, 32, 3) and e.image.dtype == np.uint8 for e in ex)
    assert len(gqa_examples(gqa / "scene_graphs.json", gqa / "images", max_per_image=1)) == 2


def test_gqa_loader_missing_image_is_a_clear_error(gqa):
    (gqa / "images" / "1002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1002"):
        gqa_examples(gqa / "scene_graphs.json", gqa / "images")


def test_box_folder(tmp_path):
    _image(tmp_path / "a.png", (100, 100))
    (tmp_path / "boxes.json").write_text(json.dumps([{"image": "a.png", "objects": [
        {"name": "ball", "box": [10, 10, 30, 30]}, {"name": "box", "box": [60, 60, 90, 90]}]}]))
    ex = box_folder_examples(tmp_path, size=16)
    assert {(e.subject, e.relation, e.object) for e in ex} == set()      # a 45-degree diagonal: two relations hold
    (tmp_path / "boxes.json").write_text(json.dumps([{"image": "a.png", "objects": [
        {"name": "ball", "box": [10, 40, 30, 60]}, {"name": "box", "box": [60, 45, 90, 75]}]}]))
    ex = box_folder_examples(tmp_path, size=16)
    assert {(e.subject, e.relation, e.object) for e in ex} == {("ball", "left of", "box"), ("box", "right of", "ball")}


def test_pairs_need_exactly_one_relation():
    assert list(pairs_from_boxes([("a", (0.1, 0.1, 0.3, 0.3)), ("b", (0.6, 0.1, 0.8, 0.3))])) == [
        ("a", "left of", "b"), ("b", "right of", "a")]
