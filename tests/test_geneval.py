"""l2s/geneval.py: GenEval's position rule on hand-made boxes."""
import numpy as np
import pytest

from l2s.geneval import OPPOSITE, RELATIONS, relation_holds, relations_between


def box(cx, cy, w=0.1, h=0.1):
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


@pytest.mark.parametrize("a,b,want", [
    (box(0.2, 0.5), box(0.7, 0.5), {"left of"}),
    (box(0.8, 0.5), box(0.2, 0.55), {"right of"}),
    (box(0.5, 0.1), box(0.5, 0.8), {"above"}),            # y points down: smaller y is above
    (box(0.5, 0.9), box(0.45, 0.2), {"below"}),
    (box(0.2, 0.2), box(0.5, 0.5), {"left of", "above"}),  # 45-degree diagonal: both hold
    (box(0.5, 0.5), box(0.52, 0.5), set()),               # offset inside the 0.1*(wA+wB) margin
    (box(0.5, 0.5, 0.6, 0.6), box(0.6, 0.5, 0.6, 0.6), set()),   # big boxes swallow a small offset
    # o = (-0.5, -0.45), r = (-0.48, -0.43), |o| = 0.673: dx = -0.71, dy = -0.64 -> both
    (box(0.2, 0.5), box(0.7, 0.95), {"left of", "above"}),
    # o = (-0.3, -0.2) with boxes 0.5 wide/high: r = (-0.2, -0.1), |o| = 0.361: dx = -0.55, dy = -0.28
    (box(0.3, 0.3, 0.5, 0.5), box(0.6, 0.5, 0.5, 0.5), {"left of"}),
    # same offset, boxes 0.8: r = (-0.14, -0.04): dx = -0.39, dy = -0.11 -> neither dominates, yet r != 0
    (box(0.3, 0.3, 0.8, 0.8), box(0.6, 0.5, 0.8, 0.8), set()),
])
def test_rule_on_hand_made_boxes(a, b, want):
    assert relations_between(a, b) == want


def test_margin_uses_box_sizes():
    # centres 0.25 apart horizontally; dx = (0.25 - 0.1 * (wA + wB)) / 0.25 must exceed 0.5 in size:
    # w = 0.1 -> 0.92, w = 0.5 -> 0.6 (holds), w = 0.8 -> 0.36 (fails)
    assert relation_holds(box(0.3, 0.5), box(0.55, 0.5), "left of")
    assert relation_holds(box(0.3, 0.5, 0.5, 0.1), box(0.55, 0.5, 0.5, 0.1), "left of")
    assert not relation_holds(box(0.3, 0.5, 0.8, 0.1), box(0.55, 0.5, 0.8, 0.1), "left of")


def test_swapping_subject_and_object_gives_opposites():
    rng = np.random.default_rng(0)
    for _ in range(500):
        a = box(*rng.uniform(0.1, 0.9, 2), *rng.uniform(0.02, 0.3, 2))
        b = box(*rng.uniform(0.1, 0.9, 2), *rng.uniform(0.02, 0.3, 2))
        assert relations_between(b, a) == {OPPOSITE[r] for r in relations_between(a, b)}
        assert len(relations_between(a, b)) <= 2


def test_unknown_relation():
    with pytest.raises(ValueError, match="unknown relation"):
        relation_holds(box(0, 0), box(1, 1), "behind")
    assert set(OPPOSITE) == set(RELATIONS)
