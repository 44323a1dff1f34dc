"""l2s/authors_net.py and csrc/authors_net.c: the authors' transformer fused in l2s._C, against the
float64 torch reference written from the equations (authors.authors_logits): probabilities, input
gradients, every weight gradient with dropout on (the same masks, from their NumPy twin), one AdamW
step against torch's, and the boundary's errors. The converted-checkpoint tests (test_authors.py)
run the same C pass against torch's own nn.TransformerEncoderLayer modules."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from l2s import _C
from l2s.authors import AuthorsClassifier, authors_logits
from l2s.authors_net import FusedAuthorsNet, core_config, dropout_mask

# odd widths on purpose: heads of 20 and 10 columns, 37 and 5 channels cross every tile's edge
ODD = {"d_model": 40, "map_size": 4, "num_timesteps": 6,
       "extractor": {"num_layers": 2, "nhead": 2, "dim_feedforward": 24, "layer_attn_nheads": 4},
       "classifier": {"num_layers": 2, "nhead": 4, "dim_feedforward": 12, "timestep_embedding_dim": 5}}


def _network(config=ODD, channels=40, classes=4, seed=0):
    clf = AuthorsClassifier.new([f"r{i}" for i in range(classes)], channels, config["num_timesteps"], [1, 3],
                                config=config, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():                             # move the norms and biases off their 1 / 0 starts
        for k, v in clf.params.items():
            if "positional" not in k:
                v += 0.1 * torch.randn(v.shape, generator=g)
    return clf


def _inputs(B, C, S, T, K, seed=0):
    rng = np.random.default_rng(seed)
    maps = rng.random((B, 2, C, S, S)).astype(np.float32)
    maps /= maps.sum((-2, -1), keepdims=True)
    return maps, rng.integers(0, T, B), rng.integers(0, K, B)


def _reference(clf, maps, rows, labels, p=0.0, seed=0):
    """float64 logits, loss (batch mean) and the leaf tensors, with the C pass's dropout masks."""
    P = {k: v.detach().double().clone().requires_grad_("positional" not in k) for k, v in clf.params.items()}
    x = torch.tensor(maps, dtype=torch.float64, requires_grad=True)
    masks = (lambda site, shape: torch.from_numpy(dropout_mask(int(np.prod(shape)), p, seed, site)).double()
             .view(shape)) if p > 0 else None
    logits = authors_logits(P, clf.config, x, torch.as_tensor(rows), p, masks)
    return logits, F.cross_entropy(logits, torch.as_tensor(labels)), P, x


@pytest.mark.parametrize("B, C", [(1, 37), (3, 5), (2, 40)])
def test_probabilities_and_map_gradient_match_the_float64_reference(B, C):
    clf = _network()
    maps, rows, labels = _inputs(B, C, 4, 6, 4, seed=B)
    losses, dmaps, probs = clf.losses_and_grad(maps, labels, rows)
    logits, _, _, x = _reference(clf, maps, rows, labels)
    want = F.cross_entropy(logits, torch.as_tensor(labels), reduction="none")
    (dx,) = torch.autograd.grad(want.sum(), x)
    np.testing.assert_allclose(probs.numpy(), torch.softmax(logits, -1).detach().numpy(), atol=2e-6)
    np.testing.assert_allclose(losses.numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dmaps.numpy(), dx.numpy(), rtol=1e-4, atol=2e-6 * float(dx.abs().max()))


def test_map_gradient_matches_finite_differences():
    clf = _network(seed=3)
    maps, rows, labels = _inputs(2, 9, 4, 6, 4, seed=5)
    _, dmaps, _ = clf.losses_and_grad(maps, labels, rows)
    u = (0.05 * np.random.default_rng(6).standard_normal(maps.shape)).astype(np.float32)   # maps are ~1/16
    f = lambda s: float(clf.losses_and_grad(maps + s * u, labels, rows)[0].double().sum())
    h = 1e-2
    fd = (f(h) - f(-h)) / (2 * h)
    assert abs(fd - float((dmaps.numpy() * u).sum())) <= 1e-3 * max(1.0, abs(fd))


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_weight_gradients_match_the_reference_with_the_same_dropout_masks(p):
    clf = _network(seed=2)
    net = clf._net
    B, C = 3, 11
    maps, rows, labels = _inputs(B, C, 4, 6, 4, seed=7)
    m, r, lab = net._maps(maps), rows.astype(np.int32), labels.astype(np.int32)
    probs, losses = net._forward(m, r, lab, p, 1234)
    grads = np.zeros_like(net.flat)
    _C.authors_backward(net.cfg, net.flat, r, lab, net._workspace(B, C), C, None, grads, p, 1234)
    logits, loss, P, _ = _reference(clf, maps, rows, labels, p, 1234)
    np.testing.assert_allclose(probs, torch.softmax(logits, -1).detach().numpy(), atol=2e-6)
    loss.backward()
    for name, (off, n) in net.layout.items():
        got = grads[off:off + n]
        if "positional" in name:                      # fixed tables: no gradient
            assert not got.any(), name
            continue
        want = P[name].grad.reshape(-1).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1e-3, float(np.abs(want).max())), err_msg=name)


def test_dropout_masks_are_a_function_of_seed_and_site_only():
    a = dropout_mask(200_000, 0.3, seed=5, site=16)
    assert abs((a > 0).mean() - 0.7) < 0.005 and set(np.unique(a)) == {0.0, np.float32(1 / np.float32(0.7))}
    assert np.array_equal(a, dropout_mask(200_000, 0.3, seed=5, site=16))
    for other in (dropout_mask(200_000, 0.3, seed=6, site=16), dropout_mask(200_000, 0.3, seed=5, site=17)):
        assert abs(((a > 0) == (other > 0)).mean() - (0.7 ** 2 + 0.3 ** 2)) < 0.01      # independent draws
    assert (dropout_mask(1000, 0.0, 1, 16) == 1).all()                       # p = 0: the identity


def test_a_training_step_equals_torch_autograd_and_adamw():
    clf = _network(seed=4)
    ref = {k: v.detach().clone() for k, v in clf.params.items()}
    maps, rows, labels = _inputs(8, 7, 4, 6, 4, seed=8)
    loss = clf.train_step(maps, labels, rows, lr=1e-3, weight_decay=0.05, dropout=0.0)
    trained = [v.requires_grad_() for k, v in ref.items() if "positional" not in k]
    opt = torch.optim.AdamW(trained, lr=1e-3, weight_decay=0.05)
    want = F.cross_entropy(authors_logits(ref, clf.config, torch.from_numpy(maps), torch.as_tensor(rows)),
                           torch.as_tensor(labels))
    want.backward()
    opt.step()
    assert abs(loss - float(want.detach())) < 1e-5
    d = ODD["d_model"]
    for k, v in clf.params.items():
        got, exp = v.numpy().copy(), ref[k].detach().numpy().copy()
        if k.endswith("in_proj_bias"):      # the key bias: its gradient is 0 up to rounding, which Adam's
            got[d:2 * d] = exp[d:2 * d]     # g / sqrt(v) turns into +-lr of either sign
        np.testing.assert_allclose(got, exp, rtol=1e-4, atol=2e-6, err_msg=k)


def test_training_separates_toy_stacks():
    """Class k puts the subject's mass in quadrant k: a few fused steps (dropout on) learn it."""
    cfg = {**ODD, "map_size": 4}
    clf = AuthorsClassifier.new(["a", "b", "c", "d"], 8, 6, [1, 3], config=cfg, seed=0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 64)
    maps = rng.random((64, 2, 8, 4, 4)).astype(np.float32) * 0.2
    for i, k in enumerate(labels):
        maps[i, 0, :, (k // 2) * 2:(k // 2) * 2 + 2, (k % 2) * 2:(k % 2) * 2 + 2] += 1.0
    maps /= maps.sum((-2, -1), keepdims=True)
    rows = rng.integers(0, 6, 64)
    first = clf.train_step(maps, labels, rows, lr=3e-3, dropout=0.1)
    for _ in range(40):
        last = clf.train_step(maps, labels, rows, lr=3e-3, dropout=0.1)
    acc = (clf.forward(maps, rows).numpy().argmax(1) == labels).mean()
    assert last < 0.5 * first and acc >= 0.9, (first, last, acc)


def test_the_boundary_names_what_is_wrong():
    clf = _network()
    net = clf._net
    maps, rows, labels = _inputs(2, 5, 4, 6, 4)
    m, r, lab = net._maps(maps), rows.astype(np.int32), labels.astype(np.int32)
    ws, probs, losses = net._workspace(2, 5), np.zeros((2, 4), np.float32), np.zeros(2, np.float32)
    call = lambda **kw: _C.authors_forward(**{"config": net.cfg, "params": net.flat, "maps": m, "steps": r,
                                              "labels": lab, "workspace": ws, "probs": probs, "losses": losses, **kw})
    call()
    cases = [
        (dict(maps=np.zeros((2, 2, 41, 16), np.float32)), ValueError, "channels must be in"),
        (dict(maps=np.zeros((2, 2, 5, 9), np.float32)), ValueError, "S\\*S = 16"),
        (dict(maps=m.astype(np.float64)), (TypeError, ValueError), "dtype"),
        (dict(steps=np.array([0, 6], np.int32)), ValueError, "n_steps"),
        (dict(labels=np.array([0, 4], np.int32)), ValueError, "n_relations"),
        (dict(workspace=ws[:-1]), ValueError, "authors_sizes"),
        (dict(params=net.flat[:-1]), ValueError, "params"),
        (dict(dropout=1.0), ValueError, "dropout"),
        (dict(config=_C.classifier_config(n_maps=2, map_pixels=16, n_steps=6, step_dim=4, hidden1=8, hidden2=8,
                                          n_relations=4)), TypeError, "authors_config"),
    ]
    for kw, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            call(**kw)
    with pytest.raises(ValueError, match="dmaps"):
        _C.authors_backward(net.cfg, net.flat, r, lab, ws, 5, np.zeros((2, 2, 6, 16), np.float32), None)
    with pytest.raises(ValueError, match="divide"):
        core_config({**ODD, "extractor": {**ODD["extractor"], "nhead": 3}}, 8, 4)
    with pytest.raises(TypeError, match="missing"):
        _C.authors_config(d=8)
    with pytest.raises(ValueError, match="maps must be"):            # the Python layer's own message
        clf.forward(np.zeros((1, 2, 41, 4, 4), np.float32), [0])


def test_state_dict_tensors_are_views_of_the_fused_buffer(tmp_path):
    clf = _network()
    assert isinstance(clf._net, FusedAuthorsNet)
    name = "relation_classifier.fc.8.bias"
    off, n = clf._net.layout[name]
    with torch.no_grad():
        clf.params[name][:] = torch.arange(n, dtype=torch.float32)
    assert np.array_equal(clf._net.flat[off:off + n], np.arange(n, dtype=np.float32))
    back = AuthorsClassifier(clf.save_pretrained(tmp_path / "clf"))
    maps, rows, _ = _inputs(2, 6, 4, 6, 4)
    np.testing.assert_array_equal(back.forward(maps, rows).numpy(), clf.forward(maps, rows).numpy())
