"""csrc/classifier.c and l2s/classifier.py: passes vs float64 torch, gradients, training, persistence."""
import json

import numpy as np
import pytest
import torch

from l2s import _C
import l2s
from l2s.classifier import ClassifierConfig, RelationClassifier, relation_index
from l2s.synthetic import relation_pairs
from reference import classifier_torch

CONFIGS = [ClassifierConfig(map_size=4, hidden1=12, hidden2=7, n_steps=5, step_dim=3),
           ClassifierConfig(map_size=3, hidden1=5, hidden2=9, step_dim=0, relations=("a", "b", "c")),
           ClassifierConfig()]


def _model_and_batch(rng, cfg, B=6):
    model = RelationClassifier(cfg, seed=int(rng.integers(1 << 30)))
    # perturb LayerNorm affine params off their 1/0 init so their gradients are exercised
    model.params += rng.normal(0, 0.05, model.params.shape).astype(np.float32)
    x = rng.random((B, cfg.n_maps, cfg.map_size, cfg.map_size)).astype(np.float32)
    steps = rng.integers(0, cfg.n_steps, B).astype(np.int32) if cfg.step_dim else None
    labels = rng.integers(0, len(cfg.relations), B).astype(np.int32)
    return model, x, steps, labels


def _torch_ref(model, x, steps, labels):
    p = torch.tensor(model.params, dtype=torch.float64, requires_grad=True)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    probs, losses = classifier_torch(p, model.layout, model.config.core_fields(), xt, steps, labels)
    losses.mean().backward()
    return probs.detach().numpy(), losses.detach().numpy(), xt.grad.numpy(), p.grad.numpy()


# B = 6 takes the plain loops; B = 13 the register tiles (12 rows) plus a one-row tail (classifier.c).
@pytest.mark.parametrize("B", [6, 13])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["small", "no-steps", "authors-size"])
def test_forward_and_gradients_match_float64_torch(rng, cfg, B):
    model, x, steps, labels = _model_and_batch(rng, cfg, B)
    probs, losses = model.forward(x, steps, labels)
    ref_probs, ref_losses, ref_dx, ref_dp = _torch_ref(model, x, steps, labels)
    np.testing.assert_allclose(probs, ref_probs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4, atol=1e-6)
    loss, dx, _ = model.loss_and_input_grad(x, labels, steps)
    assert dx.shape == x.shape
    np.testing.assert_allclose(loss, ref_losses.mean(), rtol=1e-5)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-3, atol=1e-6)
    grads = np.zeros_like(model.params)
    _C.classifier_backward(model._cfg, model.params, steps, labels, model._workspace(len(x)),
                             None, grads)
    np.testing.assert_allclose(grads, ref_dp, rtol=1e-3, atol=1e-6)


def test_input_gradient_matches_finite_differences(rng):
    cfg = CONFIGS[0]
    model, x, steps, labels = _model_and_batch(rng, cfg, B=3)
    _, dx, _ = model.loss_and_input_grad(x, labels, steps)
    for _ in range(3):
        u = rng.standard_normal(x.shape)
        h = 1e-3   # small: LeakyReLU kinks make wide central differences inexact
        f = lambda s: float(model.forward((x + s * u).astype(np.float32), steps, labels)[1].astype(np.float64).mean())
        fd = (f(h) - f(-h)) / (2 * h)
        assert abs(fd - float((dx * u).sum())) <= 5e-3 * max(1.0, abs(fd)), (fd, float((dx * u).sum()))


def test_weight_gradients_accumulate(rng):
    model, x, steps, labels = _model_and_batch(rng, CONFIGS[0])
    model.forward(x, steps, labels)
    g1 = np.zeros_like(model.params)
    cfg = model._cfg
    _C.classifier_backward(cfg, model.params, steps, labels, model._workspace(len(x)), None, g1)
    g2 = g1.copy()
    _C.classifier_backward(cfg, model.params, steps, labels, model._workspace(len(x)), None, g2)
    np.testing.assert_allclose(g2, 2 * g1, rtol=1e-4, atol=1e-9)


def test_training_learns_relations_from_maps():
    cfg = ClassifierConfig(hidden1=64, hidden2=32)
    model = RelationClassifier(cfg, seed=1)
    x, y, t = relation_pairs(1024, seed=3, noise=0.5)
    xv, yv, tv = relation_pairs(256, seed=4, noise=0.5)
    before = (np.asarray(model.forward(xv, tv)[0]).argmax(1) == yv).mean()
    losses = [model.train_step(x[i: i + 64], y[i: i + 64], t[i: i + 64], lr=2e-3) for _ in range(3) for i in range(0, 1024, 64)]
    after = (np.asarray(model.forward(xv, tv)[0]).argmax(1) == yv).mean()
    assert np.mean(losses[-8:]) < 0.25 * np.mean(losses[:4])
    assert before < 0.5 and after > 0.95, (before, after)
    assert model.predict(xv[:3], tv[:3]) == [cfg.relations[i] for i in yv[:3]]


def test_train_step_matches_torch_adamw(rng):
    """One train_step == torch.optim.AdamW on the float64 reference loss."""
    model, x, steps, labels = _model_and_batch(rng, CONFIGS[0])
    p0 = model.params.copy()
    model.train_step(x, labels, steps, lr=1e-2, weight_decay=0.05)
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.AdamW([p], lr=1e-2, weight_decay=0.05, eps=1e-8)
    _, losses = classifier_torch(p, model.layout, model.config.core_fields(), torch.tensor(x, dtype=torch.float64), steps, labels)
    losses.mean().backward()
    opt.step()
    np.testing.assert_allclose(model.params, p.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_save_load_roundtrip(tmp_path, rng):
    cfg = ClassifierConfig(map_size=4, hidden1=12, hidden2=7, n_steps=5, step_dim=3, meta={"model": "shapes", "layers": [1, 2]})
    model, x, steps, _ = _model_and_batch(rng, cfg)
    stem = model.save(tmp_path / "clf")
    assert (tmp_path / "clf.safetensors").exists() and json.loads((tmp_path / "clf.json").read_text())["meta"]["model"] == "shapes"
    loaded = RelationClassifier.load(stem)
    for name, value in model.parameters().items():     # tensors by name: the flat buffer pads between them
        np.testing.assert_array_equal(loaded.parameters()[name], value, err_msg=name)
    np.testing.assert_array_equal(loaded.forward(x, steps)[0], model.forward(x, steps)[0])
    from safetensors.numpy import load_file
    assert set(load_file(str(tmp_path / "clf.safetensors"))) == set(model.layout)


def test_load_rejects_mismatched_file(tmp_path, rng):
    model, *_ = _model_and_batch(rng, CONFIGS[0])
    stem = model.save(tmp_path / "clf")
    cfg = json.loads((tmp_path / "clf.json").read_text())
    cfg["hidden1"] = 13
    (tmp_path / "clf.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="fc1.weight"):
        RelationClassifier.load(stem)


def test_parameters_are_views():
    model = RelationClassifier(CONFIGS[0])
    model.parameters()["fc3.bias"][:] = 7.0
    off, shape = model.layout["fc3.bias"]
    assert (model.params[off: off + shape[0]] == 7.0).all()


def test_torch_cpu_params_and_inputs(rng):
    model, x, steps, labels = _model_and_batch(rng, CONFIGS[0])
    probs_np, _ = model.forward(x, steps)
    model.params = torch.from_numpy(model.params.copy())
    model._workspaces.clear()
    probs_t, losses_t = model.forward(torch.from_numpy(x), torch.from_numpy(steps), torch.from_numpy(labels).long())
    assert isinstance(probs_t, torch.Tensor)
    np.testing.assert_array_equal(probs_t.numpy(), probs_np)


def test_relation_index():
    cfg = ClassifierConfig()
    assert relation_index(cfg, ["below", "left of"]).tolist() == [3, 0]
    with pytest.raises(ValueError, match="unknown relation"):
        relation_index(cfg, ["behind"])


def test_every_tensor_and_activation_starts_on_a_256_byte_boundary():
    """cuBLASLt assumes 256-byte aligned operands and bias vectors unless told otherwise: the flat
    buffers pad between tensors so B = 1 slices are aligned too (issue: they were 8-byte aligned)."""
    from l2s import _C
    cfg = _C.classifier_config(n_maps=2, map_pixels=9, n_steps=5, step_dim=3, hidden1=13, hidden2=7, n_relations=5)
    assert all(off % 64 == 0 for off, *_ in _C.classifier_layout(cfg).values())
