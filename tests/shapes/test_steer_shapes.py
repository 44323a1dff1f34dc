"""The steering hook on the shapes-world pipeline (v-prediction, trailing DDIM, pixel latents)."""
import numpy as np
import torch

from l2s.classifier import ClassifierConfig, RelationClassifier
from l2s.demo import train as train_classifier
from l2s.steer import Steerer


def test_steering_the_shipped_shapes_model():
    from l2s_shapes.pipeline import load_shipped
    pipe = load_shipped()
    clf = RelationClassifier(ClassifierConfig(map_size=16, hidden1=64, hidden2=32), seed=0)
    train_classifier(clf, 2048, 3, 64, seed=0)
    prompt = "a red circle to the left of a blue square"
    kw = dict(num_inference_steps=6, guidance_scale=4.0, generator=torch.Generator().manual_seed(0))
    with Steerer(pipe, clf, prompt, iterations=3, step_size=0.2, loss_target=0.0) as steer:
        assert steer.parsed.describe() == ["red circle | left of | blue square"]
        assert [l.side for l in steer.layers] == [8, 8, 16, 16]        # up blocks: two at 8x8, two at 16x16
        steered = steer.generate(pipe, prompt, **kw).images
    plain = pipe(prompt, **kw).images
    assert steered.shape == plain.shape == (1, 64, 64, 3) and steered.dtype == np.uint8
    assert not np.array_equal(steered, plain)
    assert sorted({r.step for r in steer.records}) == [0, 1, 2]
    first = [r.loss for r in steer.records if r.step == 0]
    assert first[-1] < first[0]
