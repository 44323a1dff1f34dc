"""A UNet2DConditionModel that also reads where each pixel is.

A convolutional UNet knows position only through zero padding, and at t = 999 its input is pure
noise, so a relation word ("left of") has nothing to tie itself to: the shipped shapes model ignores
relation words entirely (docs/results.md, "why neither world leaks"). This variant appends two
coordinate channels (x and y in [-1, 1]) inside its first convolution, so every caller still passes
the image alone and the steering code sees an ordinary UNet. A saved pipeline names this module in
its model_index.json; diffusers imports it from there (which is why ModelMixin is imported here).
"""
from __future__ import annotations

import inspect

import torch
from diffusers import ModelMixin, UNet2DConditionModel  # noqa: F401  (diffusers' loader looks ModelMixin up here)


class CoordConv2d(torch.nn.Conv2d):
    """A Conv2d over its input with x, y coordinate channels appended (their weights come last)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
        return super().forward(torch.cat([x, xs, ys], dim=1))


class CoordUNet2DConditionModel(UNet2DConditionModel):
    """UNet2DConditionModel with the same config; only ``conv_in`` differs (two more input channels)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        old = self.conv_in
        self.conv_in = CoordConv2d(old.in_channels + 2, old.out_channels, old.kernel_size, padding=old.padding)

    # diffusers reads a model's config keys off its __init__ signature: keep the parent's
    __init__.__signature__ = inspect.signature(UNet2DConditionModel.__init__)


def load_into(unet: torch.nn.Module, state: dict) -> None:
    """Load a UNet state dict into ``unet``, padding ``conv_in`` with zero weights for coordinate
    channels the source lacks, so a plain model starts a CoordUNet exactly where it was."""
    w = state.get("conv_in.weight")
    mine = unet.conv_in.weight
    if w is not None and w.shape[1] < mine.shape[1]:
        pad = torch.zeros(w.shape[0], mine.shape[1] - w.shape[1], *w.shape[2:], dtype=w.dtype)
        state = {**state, "conv_in.weight": torch.cat([w, pad], dim=1)}
    unet.load_state_dict(state)
