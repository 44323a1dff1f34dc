"""l2s/shapes/evaluate.py: prompt sets and the judging loop, driven by a stub that paints exact layouts."""
from types import SimpleNamespace

import numpy as np

from l2s.geneval import OPPOSITE
from l2s.shapes.evaluate import evaluate, heldout_prompts, single_object_prompts, spec_from_chain
from l2s.shapes.scenes import COLOURS, heldout_pairs, render_shape_mask

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


def test_perfect_and_flipped_generators():
    for n in (1, 2):
        specs = heldout_prompts(n, 10, seed=3)
        good = evaluate(PaintingPipe(specs), specs, seeds=[0, 1], batch=4)
        assert good["accuracy"] == 1.0 and good["n_images"] == 20
        bad = evaluate(PaintingPipe(specs, flip=True), specs, seeds=[0], batch=4)
        assert bad["accuracy"] == 0.0 and bad["failures"]["misplaced"] == 1.0
