"""What l2s must know of a denoiser family, in one place: the ``ModelAdapter`` interface, the
cross-attention layer record and the capture processor every family specialises.

A family file (``unet.py``, ``flux.py``, ``sd3.py``) declares: how to recognise its denoiser, where
its text cross-attention layers are and which to read by default, how to recompute a layer's
image queries and text keys (``CaptureProcessor.queries_keys``), how a recorded denoiser call is
bound to a new latent for a replay (grid, text length, timestep convention), how the pipeline
draws initial latents, and which tokenizer names the prompt's objects.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..ops import AttnMapsFn


@dataclass(frozen=True)
class CrossAttentionLayer:
    """A cross-attention module: its dotted name, the block part it sits in ("down", "mid", "up"
    for UNets; "double", "single" for Flux; "joint" for SD3) and its map side at the model's
    default resolution."""
    name: str
    module: Any
    block: str
    side: int


class CaptureProcessor:
    """Wraps a layer's processor: output unchanged; while its capture is active, also records this
    layer's maps of the capture's tokens (``queries_keys`` -> ``l2s._C`` extraction)."""

    def __init__(self, inner: Any, layer: CrossAttentionLayer, capture: Any):
        self.inner, self.layer, self.capture = inner, layer, capture

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        cap = self.capture
        recording = cap.active and self.layer.name not in cap.maps
        if recording or cap.replaying:      # replaying: gradient checkpointing re-runs this block
            q, k, grid = self.queries_keys(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
            # SDPA's default scale unless the module states its own (UNet Attention has .scale)
            scale = float(getattr(attn, "scale", None) or q.shape[-1] ** -0.5)
            maps = AttnMapsFn.apply(q, k, cap.table, scale, cap.stack)
            if recording:
                cap.record(self.layer.name, maps.reshape(*maps.shape[:-1], *grid))
        return out

    def queries_keys(self, attn, hidden_states, encoder_hidden_states, *args, **kwargs):
        """Image queries [B, H, N, d], text keys [B, H, L, d] (views are fine) and the (h, w) grid."""
        raise NotImplementedError


class ModelAdapter:
    """One denoiser family. Subclasses set ``family`` and ``processor`` and define the methods."""

    family: str = ""
    processor: type[CaptureProcessor] = CaptureProcessor

    def detects(self, denoiser: torch.nn.Module) -> bool:
        """True if ``denoiser`` belongs to this family."""
        raise NotImplementedError

    def find_layers(self, denoiser: torch.nn.Module) -> list[CrossAttentionLayer]:
        """Every text cross-attention layer, in forward order."""
        raise NotImplementedError

    def default_blocks(self, layers: Sequence[CrossAttentionLayer]) -> tuple[str, ...]:
        """The block parts read when the user names none."""
        raise NotImplementedError

    def default_sides(self, layers: Sequence[CrossAttentionLayer]) -> list[int] | None:
        """The map sides read when the user names none (None: every side)."""
        return None

    def stack_order(self, layers: Sequence[CrossAttentionLayer]) -> list[CrossAttentionLayer]:
        """The layers in the channel order of the authors' map stacks (default: forward order, as
        Flux's 19 double then 38 single blocks)."""
        return list(layers)

    def default_layers(self, layers: Sequence[CrossAttentionLayer]) -> list[CrossAttentionLayer]:
        """The layers read when the user chooses none."""
        blocks, sides = self.default_blocks(layers), self.default_sides(layers)
        return [l for l in layers if l.block in blocks and (sides is None or l.side in sides)]

    def bind_sample(self, denoiser: torch.nn.Module, call: dict, z: torch.Tensor, t: Any,
                    scheduler: Any) -> tuple[dict, tuple[int, int], int]:
        """``call`` (a recorded denoiser call bound to parameter names) with latent z as the input,
        plus the image-token grid (h, w) and the text length the capture needs (0: not joint)."""
        raise NotImplementedError

    def initial_latents(self, pipe: Any, denoiser: torch.nn.Module, n: int, kwargs: dict,
                        device: Any) -> torch.Tensor:
        """Initial noise for ``n`` images, drawn as the pipeline draws it (generator, shape, dtype)."""
        raise NotImplementedError

    def object_tokenizer(self, pipe: Any) -> Any:
        """The tokenizer whose token positions index the captured text keys."""
        return pipe.tokenizer

    def pack_latents(self, pipe: Any, z: torch.Tensor) -> torch.Tensor:
        """Clean VAE latents [B, C, h, w] in the layout the denoiser takes (inversion encodes images
        to them): as they are, except where a family packs them (Flux)."""
        return z

    def modular_call(self, block_state: Any, t: Any) -> dict:
        """The denoiser's conditional call (keyword arguments) as a Modular Diffusers denoise loop
        would make it at timestep t, read from the loop's ``block_state`` (``l2s.modular``)."""
        raise NotImplementedError(f"no Modular Diffusers support for the {self.family} family")
