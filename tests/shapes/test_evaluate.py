"""shapes/l2s_shapes/evaluate.py: prompt sets and the judging loop, driven by a stub that paints exact layouts."""
from types import SimpleNamespace

import numpy as np

from l2s.geneval import OPPOSITE
from l2s.relations import RELATIONS
from l2s_shapes.evaluate import distinct_prompt_count, evaluate, heldout_prompts, seen_pairs, single_object_prompts, \
    spec_from_chain
from l2s_shapes.scenes import COLOURS, heldout_pairs, render_shape_mask

STEP = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1), "below": (0, 1)}


class PaintingPipe:
    """Draws the prompt's objects laid out along its relations (or their opposites): a perfect or a
    perfectly wrong generator."""

    def __init__(self, specs, flip=False):
        self.specs = {s.text: s for s in specs}
        self.flip = flip

    def __call__(self, prompts, **kw):
        images = []
        for text in prompts:
            spec = self.specs[text]
            pos = [np.array([0.5, 0.5])]
            for _, rel, _ in spec.relations:
                rel = OPPOSITE[rel] if self.flip else rel
                step = np.array(STEP[rel], float)
                nxt = pos[-1] - 0.3 * step                          # subject rel object: object opposite
                if any(np.abs(nxt - p).max() < 0.2 for p in pos):   # "A left of B right of C": C must not sit on A
                    nxt = nxt + 0.3 * step[::-1]                    # side-step: a diagonal still satisfies rel
                pos.append(nxt)
            pos = np.array(pos) - np.mean(pos, 0) + 0.5
            img = np.full((64, 64, 3), 230.0)
            for (colour, shape), (x, y) in zip(spec.objects, pos):
                cover = render_shape_mask(shape, (x - 0.11, y - 0.11, x + 0.11, y + 0.11), 64)[..., None]
                img = img * (1 - cover) + np.array(COLOURS[colour]) * cover
            images.append(img.astype(np.uint8))
        return SimpleNamespace(images=np.array(images))


def test_prompt_sets_use_only_heldout_pairs():
    held = heldout_pairs()
    for n in (1, 2):
        specs = heldout_prompts(n, 30, seed=n)
        assert all(len(s.relations) == n and set(s.objects) <= held and len(set(s.objects)) == n + 1 for s in specs)
    assert len(single_object_prompts()) == 35
    assert spec_from_chain([("red", "circle"), ("blue", "square")], ["above"]).text == "a red circle above a blue square"


def test_prompt_sets_over_seen_pairs():
    """The pairs relational captions use: disjoint from the held-out ones, together every pair."""
    seen = seen_pairs()
    assert not seen & heldout_pairs() and len(seen | heldout_pairs()) == 35
    specs = heldout_prompts(1, 40, seed=11, pairs=seen)
    assert len({s.text for s in specs}) == 40 and all(set(s.objects) <= seen for s in specs)
    assert distinct_prompt_count(1, seen) == len(seen) * (len(seen) - 1) * len(RELATIONS)


def test_perfect_and_flipped_generators():
    for n in (1, 2):
        specs = heldout_prompts(n, 10, seed=3)
        good = evaluate(PaintingPipe(specs), specs, seeds=[0, 1], batch=4)
        assert good["accuracy"] == 1.0 and good["n_images"] == 20
        bad = evaluate(PaintingPipe(specs, flip=True), specs, seeds=[0], batch=4)
        assert bad["accuracy"] == 0.0 and bad["failures"]["misplaced"] == 1.0


class _Flipper:
    """A stand-in Steerer: generate() paints the layout the prompt asks for."""

    def __init__(self, specs):
        self.good = PaintingPipe(specs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def generate(self, pipe, prompts, **kw):
        return self.good(prompts)


def test_steering_column_goes_through_the_steerer():
    specs = heldout_prompts(1, 6, seed=4)
    made = []

    def steering(pipe, text):
        made.append(text)
        return _Flipper(specs)
    res = evaluate(PaintingPipe(specs, flip=True), specs, seeds=[0, 1, 2], batch=2, steering=steering)
    assert res["accuracy"] == 1.0 and res["n_images"] == 18
    assert made == [s.text for s in specs for _ in range(2)]           # one steerer per prompt chunk


def test_generation_maps_label_the_measured_layout(tiny_pipe):
    """Maps come from the hook's capture during generation; labels from the evaluator's measurement."""
    from l2s_shapes.evaluate import generation_maps
    specs = heldout_prompts(1, 3, seed=5)
    ds = generation_maps(tiny_pipe, specs, seeds=[0, 1], step_indices=[0, 1], map_size=8, steps=3)
    # a random-weight model draws no recognisable objects: every image is dropped, cleanly
    assert len(ds) == 0 and ds.maps.shape == (0, 2, 8, 8) and ds.meta["images"] == 0


def test_generation_maps_on_the_shipped_model():
    from l2s_shapes.evaluate import generation_maps
    from l2s_shapes.pipeline import load_shipped
    pipe = load_shipped()
    specs = heldout_prompts(1, 6, seed=6)
    ds = generation_maps(pipe, specs, seeds=[0, 1, 2, 3], step_indices=[0, 3], map_size=16, steps=8, guidance=2.0)
    assert ds.meta["images"] > 0 and len(ds) == 2 * ds.meta["images"]
    np.testing.assert_allclose(ds.maps.sum((-2, -1)), 1.0, rtol=1e-4)
    assert set(np.unique(ds.steps)) <= {0, 19}                     # steps 0 and 3 of 8 -> indices of 50
    assert ((ds.labels >= 0) & (ds.labels < 4)).all()
    prompted = {RELATIONS.index(s.relations[0][1]) for s in specs}     # the prompts' own relation words
    assert len(ds.meta["prompt_labels"]) == len(ds) and set(ds.meta["prompt_labels"]) <= prompted
