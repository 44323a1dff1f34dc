"""FluxTransformer2DModel (FLUX.1): 19 double-stream blocks, then 38 single-stream blocks.

Joint attention over [text, image] tokens; the text->image map is image queries x text keys with
a softmax over the text keys only (as the L2S authors read it), rotary embedding applied to both.
Latents are packed 2x2 into tokens: the grid comes from the image ids. Objects are named by the
T5 tokenizer (``tokenizer_2``), whose positions index the text sequence.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .base import CaptureProcessor, CrossAttentionLayer, ModelAdapter


class FluxCaptureProcessor(CaptureProcessor):
    """Image-query x text-key logits of the joint attention, softmax over the text keys only."""

    def queries_keys(self, attn, hidden_states, encoder_hidden_states, image_rotary_emb=None, *args, **kwargs):
        from diffusers.models.embeddings import apply_rotary_emb
        n_text = self.capture.n_text
        if encoder_hidden_states is not None:            # double-stream block: text arrives separately
            image, text = hidden_states, encoder_hidden_states
            if attn.fused_projections:
                q = attn.to_qkv(image).chunk(3, dim=-1)[0]
                k = attn.to_added_qkv(text).chunk(3, dim=-1)[1]
            else:
                q, k = attn.to_q(image), attn.add_k_proj(text)
            q = attn.norm_q(q.unflatten(-1, (-1, attn.head_dim)))
            k = attn.norm_added_k(k.unflatten(-1, (-1, attn.head_dim)))
        else:                                            # single-stream block: [text, image] in one sequence
            text, image = hidden_states[:, :n_text], hidden_states[:, n_text:]
            if attn.fused_projections:                   # projections are per token: slice first
                q, k = attn.to_qkv(image).chunk(3, dim=-1)[0], attn.to_qkv(text).chunk(3, dim=-1)[1]
            else:
                q, k = attn.to_q(image), attn.to_k(text)
            q = attn.norm_q(q.unflatten(-1, (-1, attn.head_dim)))
            k = attn.norm_k(k.unflatten(-1, (-1, attn.head_dim)))
        if image_rotary_emb is not None:                 # rotary tables cover [text, image] positions
            cos, sin = image_rotary_emb
            k = apply_rotary_emb(k, (cos[:n_text], sin[:n_text]), sequence_dim=1)
            q = apply_rotary_emb(q, (cos[n_text:], sin[n_text:]), sequence_dim=1)
        return q.transpose(1, 2), k.transpose(1, 2), self.capture.grid_for(q.shape[1])


class FluxAdapter(ModelAdapter):
    """Default layers: the double-stream blocks (the pass then skips every single-stream block)."""

    family = "flux"
    processor = FluxCaptureProcessor

    def detects(self, denoiser: torch.nn.Module) -> bool:
        return hasattr(denoiser, "single_transformer_blocks") and hasattr(denoiser, "transformer_blocks")

    def find_layers(self, denoiser: torch.nn.Module) -> list[CrossAttentionLayer]:
        cfg = denoiser.config
        side = int(cfg["sample_size"]) // 2 if "sample_size" in cfg else 64
        layers = []
        for part, prefix, blocks in (("double", "transformer_blocks", denoiser.transformer_blocks),
                                     ("single", "single_transformer_blocks", denoiser.single_transformer_blocks)):
            layers.extend(CrossAttentionLayer(f"{prefix}.{i}.attn", blk.attn, part, side) for i, blk in enumerate(blocks))
        return layers

    def default_blocks(self, layers: Sequence[CrossAttentionLayer]) -> tuple[str, ...]:
        return ("double",)

    def bind_sample(self, denoiser, call, z, t, scheduler):
        call = dict(call)
        call["hidden_states"] = z
        ids = call["img_ids"]                            # packed 2x2 latents: the grid is in the ids
        return call, (int(ids[..., 1].max()) + 1, int(ids[..., 2].max()) + 1), call["encoder_hidden_states"].shape[1]

    def modular_call(self, block_state: Any, t: Any) -> dict:
        """Flux's loop (``FluxLoopDenoiser``): one pass, the timestep divided by 1000."""
        return {"hidden_states": block_state.latents, "timestep": torch.as_tensor(t).flatten() / 1000,
                "guidance": getattr(block_state, "guidance", None), "encoder_hidden_states": block_state.prompt_embeds,
                "pooled_projections": block_state.pooled_prompt_embeds, "txt_ids": block_state.txt_ids,
                "img_ids": block_state.img_ids}

    def initial_latents(self, pipe: Any, denoiser, n: int, kwargs: dict, device: Any) -> torch.Tensor:
        height = kwargs.get("height") or pipe.default_sample_size * pipe.vae_scale_factor
        width = kwargs.get("width") or pipe.default_sample_size * pipe.vae_scale_factor
        latents, _ = pipe.prepare_latents(n, denoiser.config.in_channels // 4, height, width, denoiser.dtype, device,
                                          kwargs.get("generator"))
        return latents

    def object_tokenizer(self, pipe: Any) -> Any:
        return pipe.tokenizer_2

    def pack_latents(self, pipe: Any, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape                             # 2x2 patches of the latent as tokens
        return pipe._pack_latents(z, b, c, h, w)
