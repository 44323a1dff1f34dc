"""Model adapters: one file per denoiser family, one registry, one detection function.

    adapter = adapter_for(pipe.unet)         # or pipe.transformer
    adapter.family                           # "unet", "flux", "sd3"

Adding a family (a new DiT, say) = one file here defining a ``ModelAdapter`` subclass and its
``CaptureProcessor`` + one line in ``ADAPTERS`` (or ``register`` at run time). See
``docs/architecture.md``.
"""
from __future__ import annotations

import torch

from .base import CaptureProcessor, CrossAttentionLayer, ModelAdapter
from .flux import FluxAdapter
from .sd3 import SD3Adapter
from .unet import UNetAdapter

# asked in order: the first that detects a denoiser serves it (Flux before SD3: both have
# transformer_blocks)
ADAPTERS: list[ModelAdapter] = [FluxAdapter(), SD3Adapter(), UNetAdapter()]


def adapter_for(denoiser: torch.nn.Module) -> ModelAdapter:
    """The adapter of ``denoiser``'s family; a clear error for a model no adapter knows."""
    for adapter in ADAPTERS:
        if adapter.detects(denoiser):
            return adapter
    raise TypeError(f"{type(denoiser).__name__}: no l2s model adapter recognises it (known families: "
                    f"{', '.join(a.family for a in ADAPTERS)}); expected a UNet2DConditionModel, "
                    "FluxTransformer2DModel or SD3Transformer2DModel, or register a ModelAdapter")


def register(adapter: ModelAdapter) -> None:
    """Add an adapter, asked before the built-in ones."""
    ADAPTERS.insert(0, adapter)


__all__ = ["ADAPTERS", "adapter_for", "register", "ModelAdapter", "CaptureProcessor", "CrossAttentionLayer",
           "UNetAdapter", "FluxAdapter", "SD3Adapter"]
