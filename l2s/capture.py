"""Cross-attention capture for diffusers denoisers (any family a ``models`` adapter knows: UNet,
Flux, SD3).

The model's own attention processors keep computing the layer outputs (SDPA, flash, xformers:
whatever is installed); on the chosen layers a wrapper (the family's ``CaptureProcessor``) also
recomputes the queries of the image tokens and the keys of the text tokens and hands them to the
``l2s._C`` extraction op, which returns head-averaged softmax maps of the chosen tokens without ever
storing the full attention matrix. Every step from Q/K to the classifier's input (extraction,
resize, layer average, normalisation) is a ``torch.autograd.Function`` over the C/CUDA op
(``ops.py``), so a loss on the maps back-propagates to the latent. Capture records only while
``MapCapture.active`` is set (the steering pass), so the pipeline's own denoising passes (and
gradient-checkpoint recomputation) never record. Once the last chosen layer has recorded, the
forward is stopped (``EarlyExit``): the rest of the denoiser is never run in the steering pass.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from . import core
from .models import CrossAttentionLayer, adapter_for
from .ops import AttnMapsFn, NormalizeMapsFn, ResizeMapsFn, combine_maps  # noqa: F401  (re-exported)


class EarlyExit(Exception):
    """Raised inside the denoiser once every chosen layer has been captured."""


def model_family(model: torch.nn.Module) -> str:
    """"unet", "flux", "sd3", ...: the family of the adapter that serves ``model``."""
    return adapter_for(model).family


def find_cross_attention_layers(model: torch.nn.Module) -> list[CrossAttentionLayer]:
    """Every text cross-attention layer of ``model``, in forward order (down, mid, up / double then
    single blocks / joint blocks)."""
    return adapter_for(model).find_layers(model)


def select_layers(model: torch.nn.Module, blocks: Sequence[str] | None = None, sides: Sequence[int] | None = None,
                  names: Sequence[str] | None = None) -> list[CrossAttentionLayer]:
    """Choose layers by block part, by map side at the default resolution, or by name; what is not
    chosen falls back to the family's defaults (``ModelAdapter.default_blocks``/``default_sides``:
    UNet: up blocks with side <= 32; Flux: double-stream blocks; SD3: every joint block)."""
    adapter = adapter_for(model)
    layers = adapter.find_layers(model)
    if not layers:
        raise TypeError(f"{type(model).__name__} has no cross-attention layer: l2s steers by the maps of text "
                        "tokens, and this model does not attend to text")
    if names is not None:
        known = {l.name: l for l in layers}
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"unknown cross-attention layers {missing}; known: {list(known)[:6]}...")
        return [known[n] for n in names]
    if blocks is None:
        blocks = adapter.default_blocks(layers)
    if sides is None:
        sides = adapter.default_sides(layers)
    chosen = [l for l in layers if l.block in blocks and (sides is None or l.side in sides)]
    if not chosen:
        raise ValueError(f"no cross-attention layer in blocks {tuple(blocks)} with sides {sides}; available: "
                         f"{sorted({(l.block, l.side) for l in layers})}")
    return chosen


def stack_layers(model: torch.nn.Module, names: Sequence[str] | None = None) -> list[CrossAttentionLayer]:
    """The layers of a map stack (the authors' classifier input) in the family's channel order:
    every cross-attention layer, or those ``names``."""
    adapter = adapter_for(model)
    found = select_layers(model, names=names) if names is not None else adapter.find_layers(model)
    return adapter.stack_order(found)


# ---------------------------------------------------------------------------------------------
# the capture context

class MapCapture:
    """Installs capture processors on ``layers`` of ``model`` for the life of a ``with`` block and
    restores the original processor objects on exit (even after an exception).

    Per pass: ``begin(tokens, latent_hw)`` arms it; run the model (``EarlyExit`` ends the forward
    once all layers have recorded when ``early_exit``); ``maps`` then holds name -> [B, T, h, w]
    (``stack``: [B, T, heads, h, w]).
    """

    def __init__(self, model: torch.nn.Module, layers: Sequence[CrossAttentionLayer], early_exit: bool = True,
                 stack: bool = False):
        if not layers:
            raise ValueError("MapCapture needs at least one layer")
        self.model, self.layers, self.early_exit = model, list(layers), early_exit
        self.stack = stack          # per-head maps [B, T, H, h, w], tokens averaged (the authors' stacks)
        self.processor = adapter_for(model).processor
        self.active = False
        self.replaying = False
        self.maps: dict[str, torch.Tensor] = {}
        self.table = None
        self.grid = (1, 1)
        self.n_text = 0
        self._saved: list[tuple[Any, Any]] = []

    def __enter__(self) -> "MapCapture":
        for layer in self.layers:
            self._saved.append((layer.module, layer.module.processor))
            layer.module.set_processor(self.processor(layer.module.processor, layer, self))
        return self

    def __exit__(self, *exc) -> None:
        for module, proc in reversed(self._saved):
            module.set_processor(proc)
        self._saved.clear()
        self.active = self.replaying = False

    def begin(self, tokens: Sequence[Sequence[int]], grid: tuple[int, int], n_text: int = 0) -> None:
        """Arm one capture pass. grid: the token grid (h, w) of the finest captured level (the
        latent's own for Flux's packed tokens; the UNet's input side); n_text: Flux text length."""
        self.table = core.token_table(tokens)
        self.grid, self.n_text = (int(grid[0]), int(grid[1])), int(n_text)
        self.maps = {}
        self.active, self.replaying = True, False

    def end(self) -> dict[str, torch.Tensor]:
        self.active = False
        return self.maps

    def grid_for(self, n_tokens: int) -> tuple[int, int]:
        """(h, w) of a layer with n_tokens image tokens: the base grid downsampled by a power of 2."""
        h, w = self.grid
        f = math.isqrt(max(1, (h * w) // n_tokens))
        if f * f * n_tokens != h * w or h % f or w % f:
            raise RuntimeError(f"{n_tokens} image tokens do not tile the {h}x{w} grid")
        return h // f, w // f

    def record(self, name: str, maps: torch.Tensor) -> None:
        self.maps[name] = maps
        if self.early_exit and len(self.maps) == len(self.layers):
            raise EarlyExit()
