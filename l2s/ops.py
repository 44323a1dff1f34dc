"""The ``l2s._C`` map ops as torch autograd functions: a loss on the maps back-propagates through
them to the queries and keys, and so to the latent.

Each ``Fn`` wraps one forward/backward pair of ``core.py`` (the typed ``l2s._C`` wrappers); the
relation loss is one too (``losses.RelationLossFn``).
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import core


class AttnMapsFn(torch.autograd.Function):
    """maps [B, T, N] = sum over each object's tokens of head-averaged softmax(q k^T * scale);
    ``stack``: [B, T, H, N], one map per head, the object's tokens averaged (the authors' maps)."""

    @staticmethod
    def forward(ctx, q, k, table, scale, stack=False):
        ctx.save_for_backward(q, k)
        ctx.table, ctx.scale, ctx.stack = table, scale, stack
        return core.attn_maps_forward(q, k, table, scale, per_head=stack, token_mean=stack)

    @staticmethod
    def backward(ctx, dmaps):
        q, k = ctx.saved_tensors
        dq, dk = core.attn_maps_backward(q, k, ctx.table, dmaps.contiguous(), ctx.scale, per_head=ctx.stack,
                                              token_mean=ctx.stack)
        return (dq if ctx.needs_input_grad[0] else None, dk if ctx.needs_input_grad[1] else None, None, None, None)


class ResizeMapsFn(torch.autograd.Function):
    """Bilinear resize of float32 maps [..., h, w] -> [..., S, S] (torch's align_corners=False)."""

    @staticmethod
    def forward(ctx, x, size):
        ctx.in_size = tuple(x.shape[-2:])
        return core.resize_maps_forward(x.contiguous(), size)

    @staticmethod
    def backward(ctx, dy):
        return core.resize_maps_backward(dy.contiguous(), ctx.in_size), None


class NormalizeMapsFn(torch.autograd.Function):
    """Each map [..., S, S] divided by its sum."""

    @staticmethod
    def forward(ctx, x):
        x = x.contiguous()
        ctx.save_for_backward(x)
        return core.normalize_maps_forward(x, "sum")

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return core.normalize_maps_backward(x, dy.contiguous(), "sum")


def combine_stacks(maps: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Per-head layer maps [B, T, H_l, h_l, w_l], already in the stack's channel order -> one stack
    [B, T, C, size, size] per object (C = sum of the heads). As the authors prepare them: when any
    map is not size x size, every map is resized (bilinear) and renormalised to sum 1 (eps 1e-8);
    when all are already size x size, they are used as they are (Flux-schnell's raw maps)."""
    if not maps:
        raise ValueError("no attention maps were captured: check the layer selection and token indices")
    if all(tuple(m.shape[-2:]) == (size, size) for m in maps):
        return torch.cat(list(maps), 2)
    resized = [m if tuple(m.shape[-2:]) == (size, size) else ResizeMapsFn.apply(m, size) for m in maps]
    return NormalizeMapsFn.apply(torch.cat(resized, 2))


def combine_maps(maps: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Layer maps [B, T, h_l, w_l] -> one [B, T, size, size] map per object: each resized, averaged
    over layers, normalised to sum 1 (the classifier's input)."""
    if not maps:
        raise ValueError("no attention maps were captured: check the layer selection and token indices")
    resized = [m if tuple(m.shape[-2:]) == (size, size) else ResizeMapsFn.apply(m, size) for m in maps]
    return NormalizeMapsFn.apply(torch.stack(resized).mean(0))
