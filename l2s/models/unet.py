"""UNet2DConditionModel: Stable Diffusion 1.x/2.x, SDXL and the shapes-world model.

Cross-attention is each transformer block's ``attn2``; queries are the image tokens of the
block's input, keys the prompt embeddings (all 77 CLIP positions, so token positions index them
directly). Replays scale the latent with ``scheduler.scale_model_input``, as the pipelines do.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .base import CaptureProcessor, CrossAttentionLayer, ModelAdapter


class UNetCaptureProcessor(CaptureProcessor):
    def queries_keys(self, attn, hidden_states, encoder_hidden_states, temb=None, *args, **kwargs):
        if encoder_hidden_states is None:
            raise RuntimeError(f"{self.layer.name}: no encoder_hidden_states (not a cross-attention call)")
        x = hidden_states
        if getattr(attn, "spatial_norm", None) is not None:
            x = attn.spatial_norm(x, temb)
        if x.ndim == 4:
            B, C, h, w = x.shape
            x = x.reshape(B, C, h * w).transpose(1, 2)
            grid = (h, w)
        else:
            grid = self.capture.grid_for(x.shape[1])
        if getattr(attn, "group_norm", None) is not None:
            x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
        ctx = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
        q = attn.to_q(x)
        k = attn.to_k(ctx)
        head_dim = k.shape[-1] // attn.heads
        q = q.unflatten(-1, (attn.heads, head_dim)).transpose(1, 2)        # [B, H, N, d] view
        k = k.unflatten(-1, (attn.heads, head_dim)).transpose(1, 2)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        return q, k, grid


class UNetAdapter(ModelAdapter):
    """Default layers: the up (decoder) blocks at every map side up to 32 (SD 1.x at 512 px: 16 and
    32; the shapes model: 8 and 16); the pass then stops before the finest up blocks. Measured on
    the shapes model (``python benchmarks/bench_layers.py``): a dual-inversion classifier reached
    validation accuracy 0.63 on down+mid maps, 0.86 on up maps, 0.82 on all."""

    family = "unet"
    processor = UNetCaptureProcessor

    def detects(self, denoiser: torch.nn.Module) -> bool:
        return hasattr(denoiser, "down_blocks") and hasattr(denoiser, "up_blocks")

    def find_layers(self, denoiser: torch.nn.Module) -> list[CrossAttentionLayer]:
        sample = denoiser.config.get("sample_size", 64)
        sample = sample[0] if isinstance(sample, (tuple, list)) else int(sample)
        n_levels = len(denoiser.down_blocks)
        layers = []
        for name, mod in denoiser.named_modules():
            if not (name.endswith("attn2") and getattr(mod, "is_cross_attention", False)):
                continue
            part, idx = name.split(".")[0], name.split(".")[1]
            if part == "down_blocks":
                block, level = "down", int(idx)
            elif part == "up_blocks":
                block, level = "up", n_levels - 1 - int(idx)
            else:
                block, level = "mid", n_levels - 1
            layers.append(CrossAttentionLayer(name, mod, block, max(1, sample >> level)))
        order = {"down": 0, "mid": 1, "up": 2}
        return sorted(layers, key=lambda l: order[l.block])   # named_modules puts mid_block last

    def default_blocks(self, layers: Sequence[CrossAttentionLayer]) -> tuple[str, ...]:
        return ("up",)

    def stack_order(self, layers: Sequence[CrossAttentionLayer]) -> list[CrossAttentionLayer]:
        """Ascending map side; within a side, forward order (down before up): SD 1.4's 16 layers
        give mid (8x8), then down2 x2 + up1 x3 (16x16), ..., then down0 x2 + up3 x3 (64x64)."""
        return sorted(layers, key=lambda l: l.side)          # sorted() is stable: forward order within a side

    def default_sides(self, layers: Sequence[CrossAttentionLayer]) -> list[int]:
        return [s for s in {l.side for l in layers} if s <= 32] or [min(l.side for l in layers)]

    def bind_sample(self, denoiser, call, z, t, scheduler):
        call = dict(call)
        scale_input = getattr(scheduler, "scale_model_input", None)
        call["sample"] = scale_input(z, t) if scale_input is not None else z
        return call, tuple(z.shape[-2:]), 0

    def modular_call(self, block_state: Any, t: Any) -> dict:
        """SDXL's loop (``StableDiffusionXLLoopDenoiser``): the conditional embeddings and added
        conditions; the latent is scaled by the scheduler when the call is bound (``bind_sample``)."""
        added = {"text_embeds": getattr(block_state, "pooled_prompt_embeds", None),
                 "time_ids": getattr(block_state, "add_time_ids", None)}
        return {"sample": block_state.latents, "timestep": t, "encoder_hidden_states": block_state.prompt_embeds,
                "timestep_cond": getattr(block_state, "timestep_cond", None),
                "added_cond_kwargs": {k: v for k, v in added.items() if v is not None} or None}

    def initial_latents(self, pipe: Any, denoiser, n: int, kwargs: dict, device: Any) -> torch.Tensor:
        from diffusers.utils.torch_utils import randn_tensor
        cfg = denoiser.config
        vsf = getattr(pipe, "vae_scale_factor", 1)
        side = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        height = kwargs.get("height") or side * vsf
        width = kwargs.get("width") or side * vsf
        shape = (n, cfg.in_channels, height // vsf, width // vsf)
        return randn_tensor(shape, generator=kwargs.get("generator"), device=device, dtype=denoiser.dtype)
