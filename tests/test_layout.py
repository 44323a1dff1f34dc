"""l2s/layout.py: planned layouts checked with GenEval's rule, the term against a float64 reference
and finite differences, and its place in the steering gradient."""
import numpy as np
import pytest
import torch

from l2s.geneval import relation_holds
from l2s.layout import (SIDE, SIZES, box_side, box_term, centroids, feasible_layouts, layout_term, plan_layout,
                        shares_an_axis)
from l2s.prompts import make_triplets
from l2s.steer import Steerer, SteeringConfig
from helpers import assert_term_linear_in_weight

CHAINS = [
    [(0, "left of", 1), (1, "left of", 2)],                       # straight: three in a row
    [(0, "above", 1), (1, "above", 2)],                           # straight: a column
    [(0, "above", 1), (1, "left of", 2)],                         # turns
    [(0, "above", 1), (1, "below", 2)],                           # folds back: 0 and 2 share a side of 1
    [(0, "left of", 1), (1, "below", 2), (2, "right of", 3)],     # four objects
    [(0, "left of", 1), (1, "left of", 2), (2, "left of", 3)],    # four in a row: only smaller boxes fit
]


def _boxes(centres, side):
    return [(x - side / 2, y - side / 2, x + side / 2, y + side / 2) for x, y in centres]


@pytest.mark.parametrize("rels", CHAINS)
def test_every_planned_layout_holds_its_relations_by_genevals_rule(rels, rng):
    n = max(max(s, o) for s, _, o in rels) + 1
    current = rng.random((n, 2))
    plan = plan_layout(n, rels, current)
    assert plan is not None and plan.shape == (n, 2)
    side, gap = next((s, g) for s, g in SIZES if len(feasible_layouts(n, tuple(rels), s, g)))
    boxes = _boxes(plan, side)
    for s, name, o in rels:
        assert relation_holds(boxes[s], boxes[o], name), (plan, s, name, o)
    for a in range(n):                 # inside the image, no two boxes touching
        assert side / 2 <= plan[a, 0] <= 1 - side / 2 and side / 2 <= plan[a, 1] <= 1 - side / 2
        for b in range(a + 1, n):
            assert np.abs(plan[a] - plan[b]).max() >= side + gap - 1e-12


@pytest.mark.parametrize("rels", CHAINS[:5])
def test_the_plan_is_the_feasible_layout_nearest_to_the_current_one(rels, rng):
    n = max(max(s, o) for s, _, o in rels) + 1
    every = feasible_layouts(n, tuple(rels))
    current = rng.random((n, 2))
    cost = ((every - current) ** 2).sum((1, 2))
    np.testing.assert_allclose(((plan_layout(n, rels, current) - current) ** 2).sum(), cost.min(), rtol=1e-12)
    # a feasible layout given as the current one is kept as it is
    pick = every[int(rng.integers(len(every)))]
    np.testing.assert_array_equal(plan_layout(n, rels, pick), pick)


def test_only_relations_sharing_an_axis_get_a_plan(sd, classifier):
    assert [shares_an_axis(r) for r in CHAINS[:4]] == [True, True, False, True]
    assert not shares_an_axis([(0, "left of", 1)])
    steer = Steerer(sd, classifier, "a dog above a cat left of a bird",
                    layout_weight=1.0)
    assert len(steer.parsed.objects) == 3 and steer.layout_groups == []
    steer.close()
    for prompt, n in (("a dog above a cat left of a bird", 3), ("a dog above a cat", 2)):
        steer = Steerer(sd, classifier, prompt, layout_box_weight=1.0, layout_every_prompt=True)
        assert len(steer.layout_groups) == n                 # asked for: every prompt with a relation
        steer.close()


def test_a_plan_is_the_callers_to_change():
    plan = plan_layout(3, CHAINS[0])
    plan += 1.0                                       # the cached layouts stay as they were
    assert not np.array_equal(plan_layout(3, CHAINS[0]), plan)
    assert not feasible_layouts(3, tuple(CHAINS[0])).flags.writeable


def test_contradictions_have_no_plan():
    assert plan_layout(2, [(0, "left of", 1), (1, "left of", 0)]) is None
    assert plan_layout(3, [(0, "above", 1), (1, "above", 2), (2, "above", 0)]) is None
    assert plan_layout(0, []) is None


def _reference_term(maps, targets):
    """float64 NumPy: mean over objects of |centroid - target|^2, centroids at pixel centres (i + 0.5) / S."""
    B, N, S, _ = maps.shape
    grid = (np.arange(S) + 0.5) / S
    out = np.zeros(B)
    for b in range(B):
        for i in range(N):
            m = maps[b, i] / maps[b, i].sum()
            c = np.array([(m.sum(0) * grid).sum(), (m.sum(1) * grid).sum()])      # rows are y
            out[b] += ((c - targets[b, i]) ** 2).sum() / N
    return out


def test_term_matches_a_float64_reference(rng):
    maps, targets = rng.random((3, 4, 7, 7)), rng.random((3, 4, 2))
    got = layout_term(torch.tensor(maps), torch.tensor(targets))
    np.testing.assert_allclose(got.numpy(), _reference_term(maps, targets), rtol=1e-12)


def test_centroids_read_rows_as_y():
    m = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    m[0, 0, 3, 0] = 1.0                                  # bottom-left pixel
    np.testing.assert_allclose(centroids(m)[0, 0].numpy(), [0.125, 0.875])


def test_gradient_matches_finite_differences(rng):
    maps = torch.tensor(rng.random((2, 3, 5, 5)) + 0.1, requires_grad=True)
    targets = torch.tensor(rng.random((2, 3, 2)))
    assert torch.autograd.gradcheck(lambda m: layout_term(m, targets), (maps,), eps=1e-6, atol=1e-7)


def _reference_box_term(maps, targets, sides):
    B, N, S, _ = maps.shape
    out = np.zeros(B)
    for b in range(B):
        half = sides[b] / 2
        for i in range(N):
            x, y = targets[b, i]
            inside = sum(maps[b, i, r, c] for r in range(S) for c in range(S)
                         if abs((c + 0.5) / S - x) <= half and abs((r + 0.5) / S - y) <= half)
            out[b] += (1 - inside) ** 2 / N
    return out


def test_box_term_matches_a_float64_reference(rng):
    maps, targets = rng.random((3, 4, 9, 9)), rng.random((3, 4, 2))
    maps /= maps.sum((-2, -1), keepdims=True)
    got = box_term(torch.tensor(maps), torch.tensor(targets), 0.3)
    np.testing.assert_allclose(got.numpy(), _reference_box_term(maps, targets, [0.3] * 3), rtol=1e-12)
    sides = np.array([0.2, 0.3, 0.45])                                  # one side per sample
    got = box_term(torch.tensor(maps), torch.tensor(targets), torch.tensor(sides))
    np.testing.assert_allclose(got.numpy(), _reference_box_term(maps, targets, sides), rtol=1e-12)


def test_box_term_is_zero_when_each_map_lies_in_its_box():
    m = torch.zeros(1, 2, 8, 8, dtype=torch.float64)
    m[0, 0, 1, 1] = m[0, 1, 6, 5] = 1.0                 # (x, y) centres (0.1875, 0.1875) and (0.6875, 0.8125)
    targets = torch.tensor([[[0.2, 0.2], [0.7, 0.8]]], dtype=torch.float64)
    assert box_term(m, targets, 0.26).item() == 0.0
    assert box_term(m, targets.flip(1), 0.26).item() == 1.0                  # each in the other's box


def test_box_term_gradient_matches_finite_differences(rng):
    maps = torch.tensor(rng.random((2, 3, 6, 6)) + 0.1, requires_grad=True)
    targets = torch.tensor(rng.random((2, 3, 2)))
    assert torch.autograd.gradcheck(lambda m: box_term(m, targets, 0.4), (maps,), eps=1e-6, atol=1e-7)


def test_box_sides_shrink_so_planned_boxes_never_overlap():
    three = torch.as_tensor(plan_layout(3, CHAINS[0]))
    four = torch.as_tensor(plan_layout(4, CHAINS[-1]))             # four in a row: planned closer together
    assert box_side(three[None]).tolist() == [SIDE]
    side = float(box_side(four[None])[0])
    assert side < SIDE
    for a in range(4):
        for b in range(a + 1, 4):
            assert (four[a] - four[b]).abs().max() >= side - 1e-12
    wide = torch.stack([four, four * 0 + torch.tensor([[0.1, 0.1], [0.5, 0.1], [0.9, 0.1], [0.5, 0.9]])])
    assert float(box_side(wide)[1]) == SIDE                        # each sample its own side
    assert box_side(torch.zeros(2, 1, 2)).tolist() == [SIDE, SIDE]  # one object: nothing to overlap
    assert box_side(three[None], 0.2).tolist() == [0.2]             # a smaller nominal side, kept
    assert box_side(four[None], 0.9).tolist() == [side]             # a larger one, still shrunk


def test_config_refuses_a_bad_weight():
    for name in ("layout_weight", "layout_box_weight", "layout_box_target", "layout_box_side"):
        for bad in (-1.0, float("nan"), "1"):
            with pytest.raises(ValueError, match=name):
                SteeringConfig(**{name: bad})


def test_the_term_enters_the_steering_gradient_with_its_weight(sd, classifier, rng):
    """Linear in layout_weight beside a binding term (whose map slice it must not shift); the plan is
    made on the first maps, one per sample, and is a layout that holds the relations."""
    def check(steer, w):
        assert len(steer.layout_groups) == (3 if w else 0)
        if w:
            planned = steer._layout_targets
            assert planned.shape == (1, 3, 2)
            np.testing.assert_array_equal(planned[0].numpy(), plan_layout(3, steer.layout_relations, planned[0].numpy()))
    assert_term_linear_in_weight(sd, classifier, "a red dog left of a blue cat left of a bird", rng, "layout_weight",
                                 check, binding_weight=0.5)


def test_the_box_term_enters_the_steering_gradient_with_its_weight(sd, classifier, rng):
    """The box term alone makes the plan too, and is linear in its weight beside the centroid term."""
    def check(steer, w):
        assert len(steer.layout_groups) == 3
        assert steer._layout_targets.shape == (1, 3, 2)
    assert_term_linear_in_weight(sd, classifier, "a red dog left of a blue cat left of a bird", rng,
                                 "layout_box_weight", check, layout_weight=2.0)


def test_a_contradictory_prompt_warns_that_there_is_no_term(sd, classifier):
    with pytest.warns(UserWarning, match="no layout term"):
        steer = Steerer(sd, classifier, parsed=make_triplets([[2], [5]], [(0, "left of", 1), (1, "left of", 0)]),
                        layout_weight=1.0)
    assert steer.layout_groups == []


def test_stack_classifiers_are_refused(sd, tmp_path):
    from test_authors import _checkpoint
    from l2s import load_classifier
    from l2s.authors import convert_checkpoint
    path, _, _ = _checkpoint(tmp_path, "sd14")
    clf = load_classifier(convert_checkpoint(path, tmp_path / "clf"))
    with pytest.raises(ValueError, match="layout_weight"):
        Steerer(sd, clf, "a dog left of a cat left of a bird", layout_weight=1.0)


@pytest.mark.parametrize("route", ["generate", "callback"])
def test_each_image_gets_its_own_plan_on_either_route(sd, classifier, route):
    """A steerer reused for a second image plans again on that image's first steered maps (the callback
    route never sees step 0, so the reset cannot wait for it), and keeps one plan through an image's steps."""
    prompt = "a dog left of a cat left of a bird"
    steer = Steerer(sd, classifier, prompt, layout_weight=1.0, steps=[0, 1, 2], iterations=1, loss_target=-1.0,
                    screen_noises=1, restart=None)
    plans = []
    real_plan = steer.plan
    steer.plan = lambda maps: plans.append(real_plan(maps)) or plans[-1]
    for seed in (0, 1):
        kw = dict(num_inference_steps=4, guidance_scale=3.0, output_type="np", generator=torch.Generator().manual_seed(seed))
        if route == "generate":
            steer.generate(sd, prompt, **kw)
        else:
            sd(prompt, callback_on_step_end=steer.callback(), **kw)
    steer.close()
    assert len(plans) == 2 and all(p.shape == (1, 3, 2) for p in plans)
