"""Cross-attention capture for diffusers denoisers (UNet2DConditionModel, FluxTransformer2DModel,
SD3Transformer2DModel).

The model's own attention processors keep computing the layer outputs (SDPA, flash, xformers:
whatever is installed); on the chosen layers a wrapper also recomputes the queries of the image
tokens and the keys of the text tokens and hands them to the ``_l2s`` extraction op, which returns
head-averaged softmax maps of the chosen tokens without ever storing the full attention matrix.
Every step from Q/K to the classifier's input (extraction, resize, layer average, normalisation)
is a ``torch.autograd.Function`` over the C/CUDA op, so a loss on the maps back-propagates to the
latent. Capture records only while ``MapCapture.active`` is set (the steering pass), so the
pipeline's own denoising passes (and gradient-checkpoint recomputation) never record.
Once the last chosen layer has recorded, the forward is stopped (``EarlyExit``): the rest of
the denoiser is never run in the steering pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from . import core


class EarlyExit(Exception):
    """Raised inside the denoiser once every chosen layer has been captured."""


# ---------------------------------------------------------------------------------------------
# autograd over the C/CUDA ops

class AttentionMapsFn(torch.autograd.Function):
    """maps [B, T, N] = sum over each object's tokens of head-averaged softmax(q k^T * scale)."""

    @staticmethod
    def forward(ctx, q, k, table, scale):
        ctx.save_for_backward(q, k)
        ctx.table, ctx.scale = table, scale
        return core.attention_maps(q, k, table, scale)

    @staticmethod
    def backward(ctx, dmaps):
        q, k = ctx.saved_tensors
        dq, dk = core.attention_maps_backward(q, k, ctx.table, dmaps.contiguous(), ctx.scale)
        return (dq if ctx.needs_input_grad[0] else None, dk if ctx.needs_input_grad[1] else None, None, None)


class ResizeMapsFn(torch.autograd.Function):
    """Bilinear resize of float32 maps [..., h, w] -> [..., S, S] (torch's align_corners=False)."""

    @staticmethod
    def forward(ctx, x, size):
        ctx.in_size = tuple(x.shape[-2:])
        return core.resize_maps(x.contiguous(), size)

    @staticmethod
    def backward(ctx, dy):
        return core.resize_maps_backward(dy.contiguous(), ctx.in_size), None


class NormalizeMapsFn(torch.autograd.Function):
    """Each map [..., S, S] divided by its sum."""

    @staticmethod
    def forward(ctx, x):
        x = x.contiguous()
        ctx.save_for_backward(x)
        return core.normalize_maps(x, "sum")

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return core.normalize_maps_backward(x, dy.contiguous(), "sum")


def combine_maps(maps: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Layer maps [B, T, h_l, w_l] -> one [B, T, size, size] map per object: each resized, averaged
    over layers, normalised to sum 1 (the classifier's input)."""
    if not maps:
        raise ValueError("no attention maps were captured: check the layer selection and token indices")
    resized = [m if tuple(m.shape[-2:]) == (size, size) else ResizeMapsFn.apply(m, size) for m in maps]
    return NormalizeMapsFn.apply(torch.stack(resized).mean(0))


# ---------------------------------------------------------------------------------------------
# layers

@dataclass(frozen=True)
class CrossAttentionLayer:
    """A cross-attention module: its dotted name, the block part it sits in ("down", "mid", "up"
    for UNets; "double", "single" for Flux; "joint" for SD3) and its map side at the model's
    default resolution."""
    name: str
    module: Any
    block: str
    side: int


def model_family(model: torch.nn.Module) -> str:
    """"unet", "flux" or "sd3": which capture processor and replay conventions a denoiser needs."""
    if hasattr(model, "single_transformer_blocks"):
        return "flux"
    if hasattr(model, "transformer_blocks") and hasattr(model, "pos_embed"):
        return "sd3"
    if hasattr(model, "down_blocks"):
        return "unet"
    raise TypeError(f"{type(model).__name__}: expected a UNet2DConditionModel, FluxTransformer2DModel or "
                    "SD3Transformer2DModel")


def find_cross_attention_layers(model: torch.nn.Module) -> list[CrossAttentionLayer]:
    """Every text cross-attention layer of a UNet2DConditionModel, FluxTransformer2DModel or
    SD3Transformer2DModel, in forward order (down, mid, up / double then single blocks / joint blocks)."""
    cfg = getattr(model, "config", {})
    family = model_family(model)
    if family == "sd3":
        side = int(cfg["sample_size"]) // int(cfg["patch_size"])
        return [CrossAttentionLayer(f"transformer_blocks.{i}.attn", blk.attn, "joint", side)
                for i, blk in enumerate(model.transformer_blocks)]
    layers = []
    if family == "flux":
        side = int(cfg.get("sample_size", 128)) // 2 if "sample_size" in cfg else 64
        for part, blocks in (("double", model.transformer_blocks), ("single", model.single_transformer_blocks)):
            prefix = "transformer_blocks" if part == "double" else "single_transformer_blocks"
            for i, blk in enumerate(blocks):
                layers.append(CrossAttentionLayer(f"{prefix}.{i}.attn", blk.attn, part, side))
        return layers
    sample = cfg.get("sample_size", 64)
    sample = sample[0] if isinstance(sample, (tuple, list)) else int(sample)
    n_levels = len(model.down_blocks)
    for name, mod in model.named_modules():
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


def select_layers(model: torch.nn.Module, blocks: Sequence[str] | None = None, sides: Sequence[int] | None = None,
                  names: Sequence[str] | None = None) -> list[CrossAttentionLayer]:
    """Choose layers by block part, by map side at the default resolution, or by name.

    UNet default: the up (decoder) blocks at every side up to 32 (SD 1.x at 512 px: 16 and 32);
    the pass stops after the last of them, skipping the finest up blocks. Measured on the shapes
    model (``python benchmarks/bench_layers.py``): a dual-inversion classifier reached validation
    accuracy 0.63 on down+mid maps, 0.86 on up maps, 0.82 on all (300 scenes, steps 6/9/12 of 25).
    Flux default: the double-stream blocks (the
    pass skips all single-stream blocks). SD3 default: every joint block.
    """
    layers = find_cross_attention_layers(model)
    if names is not None:
        known = {l.name: l for l in layers}
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"unknown cross-attention layers {missing}; known: {list(known)[:6]}...")
        return [known[n] for n in names]
    is_unet = layers[0].block in ("down", "mid", "up")
    if blocks is None:
        blocks = ("up",) if is_unet else ("joint",) if layers[0].block == "joint" else ("double",)
    if sides is None and is_unet:
        sides = [s for s in {l.side for l in layers} if s <= 32] or [min(l.side for l in layers)]
    chosen = [l for l in layers if l.block in blocks and (sides is None or l.side in sides)]
    if not chosen:
        raise ValueError(f"no cross-attention layer in blocks {tuple(blocks)} with sides {sides}; available: "
                         f"{sorted({(l.block, l.side) for l in layers})}")
    return chosen


# ---------------------------------------------------------------------------------------------
# processors

class _CaptureProcessor:
    """Wraps a layer's processor: output unchanged; while capturing, records this layer's maps."""

    def __init__(self, inner: Any, layer: CrossAttentionLayer, capture: "MapCapture"):
        self.inner, self.layer, self.capture = inner, layer, capture

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        cap = self.capture
        recording = cap.active and self.layer.name not in cap.maps
        if recording or cap.replaying:      # replaying: gradient checkpointing re-runs this block
            q, k, grid = self._queries_keys(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
            # SDPA's default scale unless the module states its own (UNet Attention has .scale)
            scale = float(getattr(attn, "scale", None) or q.shape[-1] ** -0.5)
            maps = AttentionMapsFn.apply(q, k, cap.table, scale)
            if recording:
                cap.record(self.layer.name, maps.reshape(maps.shape[0], maps.shape[1], *grid))
        return out


class UNetCaptureProcessor(_CaptureProcessor):
    def _queries_keys(self, attn, hidden_states, encoder_hidden_states, temb=None, *args, **kwargs):
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


class FluxCaptureProcessor(_CaptureProcessor):
    """Image-query x text-key logits of the joint attention, softmax over the text keys only."""

    def _queries_keys(self, attn, hidden_states, encoder_hidden_states, image_rotary_emb=None, *args, **kwargs):
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


class SD3CaptureProcessor(_CaptureProcessor):
    """SD3 joint attention ([image, text]): image queries x text keys, softmax over text keys only."""

    def _queries_keys(self, attn, hidden_states, encoder_hidden_states, *args, **kwargs):
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


# ---------------------------------------------------------------------------------------------
# the capture context

class MapCapture:
    """Installs capture processors on ``layers`` of ``model`` for the life of a ``with`` block and
    restores the original processor objects on exit (even after an exception).

    Per pass: ``begin(tokens, latent_hw)`` arms it; run the model (``EarlyExit`` ends the forward
    once all layers have recorded when ``early_exit``); ``maps`` then holds name -> [B, T, h, w].
    """

    def __init__(self, model: torch.nn.Module, layers: Sequence[CrossAttentionLayer], early_exit: bool = True):
        if not layers:
            raise ValueError("MapCapture needs at least one layer")
        self.model, self.layers, self.early_exit = model, list(layers), early_exit
        self.family = {"double": "flux", "single": "flux", "joint": "sd3"}.get(layers[0].block, "unet")
        self.active = False
        self.replaying = False
        self.maps: dict[str, torch.Tensor] = {}
        self.table = None
        self.grid = (1, 1)
        self.n_text = 0
        self._saved: list[tuple[Any, Any]] = []

    def __enter__(self) -> "MapCapture":
        cls = {"flux": FluxCaptureProcessor, "sd3": SD3CaptureProcessor, "unet": UNetCaptureProcessor}[self.family]
        for layer in self.layers:
            self._saved.append((layer.module, layer.module.processor))
            layer.module.set_processor(cls(layer.module.processor, layer, self))
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
