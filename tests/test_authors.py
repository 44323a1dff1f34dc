"""l2s/authors.py: the authors' checkpoint layout, its safe conversion, and their network.

The reference here is built from torch's own modules (nn.TransformerEncoderLayer with norm_first,
nn.MultiheadAttention, ...) named exactly as the authors' state dict (authors-format.md §2), so
l2s's equation-by-equation network is checked against an independent implementation."""
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from l2s import load_classifier
from l2s.__main__ import main
from l2s.authors import AuthorsClassifier, CheckpointError, convert_checkpoint, step_rows
from l2s.relations import PHRASES

CONFIGS = {  # extractor (heads, layers, ff, pool heads), classifier (heads, layers, ff), embedding rows, steps
    "sd14": ((2, 2, 128, 2), (4, 2, 128), 50, [5, 10, 15, 20, 25, 49]),
    "sd2": ((2, 2, 128, 2), (4, 2, 128), 50, [5, 10, 15, 20, 25, 49]),
    "flux_dev": ((4, 4, 512, 4), (8, 4, 512), 50, [5, 10, 15, 20, 25, 49]),
    "flux_schnell": ((4, 4, 512, 4), (8, 4, 512), 4, [1, 3]),
}
FIVE = ["above", "below", "is", "to the left of", "to the right of"]
DIAGONAL = ["above", "above_left", "above_right", "below", "below_left", "below_right", "is", "to the left of",
            "to the right of"]


def _pe(rows: int, d: int) -> torch.Tensor:
    pos = torch.arange(rows, dtype=torch.float32)[:, None]
    w = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-np.log(10000.0) / d))
    pe = torch.zeros(rows, d)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * w), torch.cos(pos * w)
    return pe[None]


class _PE(nn.Module):
    def __init__(self, rows, d):
        super().__init__()
        self.register_buffer("pe", _pe(rows, d))


def _encoder(d, heads, layers, ff):
    layer = nn.TransformerEncoderLayer(d, heads, ff, 0.3, activation="relu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class Extractor(nn.Module):
    def __init__(self, ex, T, channels, d=256):
        super().__init__()
        heads, layers, ff, pool = ex
        self.query_vector = nn.Parameter(torch.randn(1, 1, d))
        self.input_projection = nn.Linear(256, d)
        self.timestep_embedding = nn.Embedding(T, d)
        self.positional_encoding = _PE(channels, d)
        self.transformer = _encoder(d, heads, layers, ff)
        self.layer_attention = nn.MultiheadAttention(d, pool, batch_first=True)
        self.output_projection = nn.Linear(d, 256)

    def forward(self, M, t):
        B, C = M.shape[:2]
        X = self.input_projection(M.reshape(B, C, -1)) + self.positional_encoding.pe[:, :C]
        e = self.timestep_embedding(t)[:, None]
        for layer in self.transformer.layers:
            X = layer(X + e)
        a, _ = self.layer_attention(self.query_vector.expand(B, 1, -1), X, X)
        return self.output_projection(a[:, 0])


class Head(nn.Module):
    def __init__(self, cl, T, K, d=256):
        super().__init__()
        heads, layers, ff = cl
        self.timestep_embedding = nn.Embedding(T, 16)
        self.positional_encoding = _PE(d, d)
        self.projection = nn.Linear(512, d)
        self.transformer = _encoder(d, heads, layers, ff)
        self.fc = nn.Sequential(nn.Linear(d + 16, d), nn.LayerNorm(d), nn.LeakyReLU(0.1), nn.Dropout(0.3),
                                nn.Linear(d, d // 2), nn.LayerNorm(d // 2), nn.LeakyReLU(0.1), nn.Dropout(0.3),
                                nn.Linear(d // 2, K))

    def forward(self, a1, a2, t):
        h = self.projection(torch.cat([a1, a2], 1))[:, None] + self.positional_encoding.pe[:, :1]
        for layer in self.transformer.layers:
            h = layer(h)
        return self.fc(torch.cat([h[:, 0], self.timestep_embedding(t)], 1))


class Reference(nn.Module):
    def __init__(self, name, K, channels=1368):
        super().__init__()
        ex, cl, T, _ = CONFIGS[name]
        self.object_extractor = Extractor(ex, T, channels)
        self.relation_classifier = Head(cl, T, K)

    def forward(self, maps, t):
        return self.relation_classifier(self.object_extractor(maps[:, 0], t), self.object_extractor(maps[:, 1], t), t)


def _checkpoint(tmp_path, name, classes=FIVE, seed=0, shuffle=False):
    torch.manual_seed(seed)
    ref = Reference(name, len(classes)).eval()
    ex, cl, T, steps = CONFIGS[name]
    order = list(classes)
    if shuffle:
        order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    config = {"d_model": 256, "map_size": 16, "num_timesteps": T,
              "extractor": {"nhead": ex[0], "num_layers": ex[1], "dim_feedforward": ex[2], "layer_attn_nheads": ex[3],
                            "dropout": 0.3, "timestep_embedding": {"enable": True, "mode": "mid"}},
              "classifier": {"mode": "transformer", "timestep_embedding_dim": 16, "nhead": cl[0], "num_layers": cl[1],
                             "dim_feedforward": cl[2], "dropout": 0.3}}
    ckpt = {"model_state_dict": ref.state_dict(), "rel_name_to_idx": {r: i for i, r in enumerate(order)},
            "idx_to_rel_name": {i: r for i, r in enumerate(order)}, "input_channels": 1368, "config": config,
            "training_config": {"timesteps": steps, "orig_map_size": 32 if name == "flux_dev" else 16}}
    path = tmp_path / f"{name}.pth"
    torch.save(ckpt, path)
    return path, ref, order


@pytest.mark.parametrize("name, channels", [("sd14", 128), ("sd2", 195), ("flux_dev", 64), ("flux_schnell", 48)])
def test_converted_network_equals_the_reference(name, channels, tmp_path):
    path, ref, order = _checkpoint(tmp_path, name)
    folder = convert_checkpoint(path, tmp_path / "clf")
    clf = load_classifier(folder)
    assert isinstance(clf, AuthorsClassifier) and list(clf.relations) == [PHRASES.get(r, r) for r in order]
    assert clf.meta["class_names"] == order and clf.relations[3:] == ("left of", "right of")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    rng = np.random.default_rng(1)
    maps = rng.random((3, 2, channels, 16, 16)).astype(np.float32)
    maps /= maps.sum((-2, -1), keepdims=True)
    rows = step_rows([0, 2, 3] if name == "flux_schnell" else [0, 7, 30], CONFIGS[name][3])
    with torch.no_grad():
        want = torch.softmax(ref(torch.from_numpy(maps), torch.as_tensor(rows)), -1).numpy()
    got = clf.forward(maps, rows).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    meta = json.loads((folder / "config.json").read_text())["meta"]
    assert meta["step_mapping"] == CONFIGS[name][3] and len(meta["source_sha256"]) == 64


def test_step_rows_follow_the_intervals():
    assert step_rows(range(50), [5, 10, 15, 20, 25, 49]).tolist() == \
        [5] * 6 + [10] * 5 + [15] * 5 + [20] * 5 + [25] * 5 + [49] * 24
    assert step_rows([0, 1, 2, 3], [1, 3]).tolist() == [1, 1, 3, 3]
    assert step_rows([60], [5, 49]).tolist() == [60]                   # past the list: the step itself


def test_a_step_row_past_the_embedding_table_is_a_clear_error(tmp_path):
    path, _, _ = _checkpoint(tmp_path, "flux_schnell")
    clf = load_classifier(convert_checkpoint(path, tmp_path / "clf"))
    with pytest.raises(ValueError, match="embedding rows must lie in"):
        clf.forward(np.zeros((1, 2, 4, 16, 16), np.float32), [7])


@pytest.mark.parametrize("classes, shuffle", [(FIVE, True), (DIAGONAL, False)])
def test_class_order_is_the_checkpoint_own(classes, shuffle, tmp_path):
    path, ref, order = _checkpoint(tmp_path, "flux_schnell", classes, shuffle=shuffle)
    clf = load_classifier(convert_checkpoint(path, tmp_path / "clf"))
    assert list(clf.relations) == [PHRASES.get(r, r) for r in order] and len(order) == len(classes)
    maps = np.random.default_rng(2).random((2, 2, 16, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = torch.softmax(ref(torch.from_numpy(maps), torch.tensor([1, 3])), -1).numpy()
    np.testing.assert_allclose(clf.forward(maps, [1, 3]).numpy(), want, atol=1e-5)


def test_input_gradient_matches_finite_differences(tmp_path):
    path, _, _ = _checkpoint(tmp_path, "sd14")
    clf = load_classifier(convert_checkpoint(path, tmp_path / "clf"))
    rng = np.random.default_rng(3)
    maps = torch.tensor(rng.random((2, 2, 8, 16, 16)), dtype=torch.float32)
    labels, rows = np.array([0, 3]), np.array([5, 10])
    _, dx, probs = clf.losses_and_grad(maps, labels, rows)
    u = torch.tensor(rng.standard_normal(maps.shape), dtype=torch.float32)
    h = 1e-2
    f = lambda s: float(clf.losses_and_grad(maps + s * u, labels, rows)[0].double().sum())
    fd = (f(h) - f(-h)) / (2 * h)
    assert abs(fd - float((dx * u).sum())) <= 2e-2 * max(1.0, abs(fd)), (fd, float((dx * u).sum()))


def test_a_pickle_that_runs_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {}, "config": Evil()}, path)
    with pytest.raises(CheckpointError, match="not a checkpoint l2s can open safely"):
        convert_checkpoint(path, tmp_path / "out")
    assert not marker.exists()


def test_truncated_and_mismatched_checkpoints_name_the_problem(tmp_path, capsys):
    path, _, _ = _checkpoint(tmp_path, "sd14")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: 4000])
    with pytest.raises(CheckpointError, match="cut.pth: not a checkpoint l2s can open safely"):
        convert_checkpoint(cut, tmp_path / "a")
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_state_dict"]["relation_classifier.fc.8.weight"] = torch.zeros(3, 128)
    del ckpt["model_state_dict"]["object_extractor.query_vector"]
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"missing \['object_extractor.query_vector'\].*fc.8.weight: \(3, 128\)"):
        convert_checkpoint(tmp_path / "bad.pth", tmp_path / "b")
    # the command line: the same errors as one line, and a good file converts
    assert main(["convert-checkpoint", str(cut), "--out", str(tmp_path / "c")]) == 1
    assert "l2s convert-checkpoint: error: CheckpointError" in capsys.readouterr().err
    assert main(["convert-checkpoint", str(path), "--out", str(tmp_path / "d")]) == 0
    assert '"family": "sd"' in capsys.readouterr().out


def test_the_paper_preset_is_the_authors_schedule(sd, tmp_path):
    from l2s.steer import Steerer
    path, _, _ = _checkpoint(tmp_path, "sd14")
    clf = load_classifier(convert_checkpoint(path, tmp_path / "clf", family="sd14"))
    with Steerer(sd, clf, "a dog to the left of a cat", preset="paper") as st:
        c = st.config
        assert (c.iterations, c.step_size, c.normalize, c.steps) == (16, 7.5, False, list(range(25)))
        assert [c.target_at(i) for i in (0, 1, 2, 3, 24)] == [1e-5, 3e-5, 5e-5, 7e-5, 7e-5]
    from l2s.presets import paper_settings
    assert paper_settings("flux-schnell")["steps"] == [0] and paper_settings("sd21")["step_size"] == 5.0
    with pytest.raises(ValueError, match="preset must be"):
        Steerer(sd, clf, "a dog to the left of a cat", preset="fast")


def test_paper_preset_on_a_model_that_is_not_theirs_is_a_clear_error():
    pytest.importorskip("l2s_shapes")                    # the shapes model is the model that is not theirs
    with pytest.raises(SystemExit, match="--preset paper: the paper preset exists for sd14, sd21, flux-dev"):
        main(["generate", "a red circle to the left of a blue square", "--preset", "paper"])
