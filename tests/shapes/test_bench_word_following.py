"""benchmarks/bench_word_following.py: the loss-gap test sees a word the UNet reads, and nothing where it reads none."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_word_following import word_loss_gap  # noqa: E402


def test_loss_gap_is_zero_for_a_text_blind_unet_and_not_for_a_reading_one(tiny_pipe, monkeypatch):
    reading = word_loss_gap(tiny_pipe, scenes=8, timesteps=(999, 500))
    assert all(abs(gap) > 0 and abs(control) > 0 for gap, _, _, control in reading)
    assert all(loss > 0 for _, _, loss, _ in reading)
    forward = tiny_pipe.unet.forward

    def text_blind(x, t, encoder_hidden_states):          # every caption replaced by zeros: words cannot matter
        return forward(x, t, encoder_hidden_states=torch.zeros_like(encoder_hidden_states))
    monkeypatch.setattr(tiny_pipe.unet, "forward", text_blind)
    blind = word_loss_gap(tiny_pipe, scenes=8, timesteps=(999, 500))
    assert all(gap == 0 and se == 0 and control == 0 for gap, se, _, control in blind)
