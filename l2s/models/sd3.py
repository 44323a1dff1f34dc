"""SD3Transformer2DModel (Stable Diffusion 3): joint blocks over [image, text] tokens.

Maps are image queries x text keys of the joint attention, softmax over the text keys only. The
text sequence starts with the first CLIP encoder's 77 tokens, so that tokenizer names the objects.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .base import CaptureProcessor, CrossAttentionLayer, ModelAdapter


class SD3CaptureProcessor(CaptureProcessor):
    """SD3 joint attention ([image, text]): image queries x text keys, softmax over text keys only."""

    def queries_keys(self, attn, hidden_states, encoder_hidden_states, *args, **kwargs):
        if encoder_hidden_states is None:
            raise RuntimeError(f"{self.layer.name}: no text stream in this joint block")
        heads = attn.heads
        q = attn.to_q(hidden_states).unflatten(-1, (heads, -1)).transpose(1, 2)          # [B, H, N, d]
        k = attn.add_k_proj(encoder_hidden_states).unflatten(-1, (heads, -1)).transpose(1, 2)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_added_k is not None:
            k = attn.norm_added_k(k)
        return q, k, self.capture.grid_for(q.shape[2])


class SD3Adapter(ModelAdapter):
    """Default layers: every joint block."""

    family = "sd3"
    processor = SD3CaptureProcessor

    def detects(self, denoiser: torch.nn.Module) -> bool:
        return hasattr(denoiser, "transformer_blocks") and hasattr(denoiser, "pos_embed") \
            and not hasattr(denoiser, "single_transformer_blocks")

    def find_layers(self, denoiser: torch.nn.Module) -> list[CrossAttentionLayer]:
        cfg = denoiser.config
        side = int(cfg["sample_size"]) // int(cfg["patch_size"])
        return [CrossAttentionLayer(f"transformer_blocks.{i}.attn", blk.attn, "joint", side)
                for i, blk in enumerate(denoiser.transformer_blocks)]

    def default_blocks(self, layers: Sequence[CrossAttentionLayer]) -> tuple[str, ...]:
        return ("joint",)

    def bind_sample(self, denoiser, call, z, t, scheduler):
        call = dict(call)
        call["hidden_states"] = z
        p = denoiser.config.patch_size                   # patches of the latent
        return call, (z.shape[-2] // p, z.shape[-1] // p), 0

    def initial_latents(self, pipe: Any, denoiser, n: int, kwargs: dict, device: Any) -> torch.Tensor:
        from diffusers.utils.torch_utils import randn_tensor
        cfg = denoiser.config
        vsf = getattr(pipe, "vae_scale_factor", 1)
        height = kwargs.get("height") or cfg.sample_size * vsf
        width = kwargs.get("width") or cfg.sample_size * vsf
        shape = (n, cfg.in_channels, height // vsf, width // vsf)
        return randn_tensor(shape, generator=kwargs.get("generator"), device=device, dtype=denoiser.dtype)
