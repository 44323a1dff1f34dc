"""l2s/baselines.py: the centroid heuristic's values, gradient and use inside the steering hook."""
import numpy as np
import pytest
import torch

from l2s.baselines import CentroidLoss
from l2s.synthetic import blob_maps


def _pair(subject_xy, object_xy, size=16):
    return torch.tensor(blob_maps(np.array([[subject_xy, object_xy]], float), size, 0.08))


@pytest.mark.parametrize("rel, good, bad", [
    ("left of", ((0.2, 0.5), (0.8, 0.5)), ((0.8, 0.5), (0.2, 0.5))),
    ("right of", ((0.8, 0.5), (0.2, 0.5)), ((0.2, 0.5), (0.8, 0.5))),
    ("above", ((0.5, 0.2), (0.5, 0.8)), ((0.5, 0.8), (0.5, 0.2))),
    ("below", ((0.5, 0.8), (0.5, 0.2)), ((0.5, 0.2), (0.5, 0.8))),
])
def test_hinge_is_zero_when_satisfied_and_probs_agree(rel, good, bad):
    loss = CentroidLoss()
    label = [loss.relations.index(rel)]
    ok, _, probs = loss.loss_and_input_grad(_pair(*good), label)
    wrong, dx, _ = loss.loss_and_input_grad(_pair(*bad), label)
    assert ok == 0.0 and wrong == pytest.approx(0.2 + 0.6, abs=0.02)
    assert int(probs.argmax()) == label[0] and dx.shape == (1, 2, 16, 16)


def test_gradient_matches_finite_differences(rng):
    loss = CentroidLoss(map_size=6, margin=0.5)
    x = torch.tensor(rng.random((3, 2, 6, 6)), dtype=torch.float64)
    labels = [0, 2, 3]
    _, dx, _ = loss.loss_and_input_grad(x, labels)
    eps = 1e-3
    for idx in [(0, 0, 1, 2), (1, 1, 4, 0), (2, 0, 5, 5)]:
        xp, xm = x.clone(), x.clone()
        xp[idx] += eps
        xm[idx] -= eps
        fd = (loss.loss_and_input_grad(xp, labels)[0] - loss.loss_and_input_grad(xm, labels)[0]) / (2 * eps)
        assert float(dx[idx]) == pytest.approx(fd, rel=1e-2, abs=1e-5)


def test_centroid_loss_steers_a_pipeline(tmp_path):
    from l2s.steer import Steerer
    from l2s.testing import tiny_sd_pipeline
    pipe = tiny_sd_pipeline(tmp_path)
    prompt = "a dog to the left of a cat"
    with Steerer(pipe, CentroidLoss(map_size=8, margin=0.3), prompt, iterations=4, step_size=0.3,
                 loss_target=0.0) as steer:
        steer.generate(pipe, prompt, num_inference_steps=2, guidance_scale=3.0, output_type="np",
                       generator=torch.Generator().manual_seed(0))
    losses = [r.loss for r in steer.records if r.step == 0]
    assert losses[-1] < losses[0], losses
