"""l2s/plots.py: heat maps and curves from a real steering run on the shipped shapes model."""
import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run():
    pytest.importorskip("l2s_shapes")
    from l2s_shapes.pipeline import load_shipped
    from l2s_shapes.relation_classifier import load_shipped_classifier
    from l2s.steer import Steerer
    pipe = load_shipped()
    prompt = "a red circle to the left of a blue square"
    with Steerer(pipe, load_shipped_classifier(), prompt, steps=[1, 2, 3], loss_target=0.0) as steer:
        image = steer.generate(pipe, prompt, num_inference_steps=8, generator=torch.Generator().manual_seed(0)).images[0]
    return steer.records, image


def test_attention_figure_has_a_column_per_steered_step(run, tmp_path):
    from l2s.plots import plot_attention
    records, image = run
    fig = plot_attention(records, image, names=("red circle", "blue square"))
    assert len(fig.axes) == 2 * 3
    assert fig.axes[0].get_title().startswith("step 1\nleft of: p=")
    fig.savefig(tmp_path / "maps.png")
    assert (tmp_path / "maps.png").stat().st_size > 1000


def test_curves_plot_every_iteration_and_the_requested_probability(run):
    from l2s.plots import plot_curves
    records, _ = run
    fig = plot_curves(records)
    loss_line = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(loss_line.get_ydata(), [r.loss for r in records])
    prob = fig.axes[1].get_lines()[0].get_ydata()
    assert len(prob) == 3 and all(0 <= p <= 1 for p in prob)
    assert prob[0] == pytest.approx(records[0].probs[0][records[0].label])


def test_no_records_is_a_clear_error():
    from l2s.plots import plot_attention, plot_curves
    with pytest.raises(ValueError, match="keep_maps"):
        plot_attention([])
    with pytest.raises(ValueError, match="relational"):
        plot_curves([])
