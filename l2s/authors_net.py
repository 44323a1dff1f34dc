"""The authors' relation classifier fused in ``l2s._C`` (csrc/authors_net.c): one flat float32
buffer of parameters (the state-dict tensors are views of it), a workspace per batch shape, and the
passes steering and training need: probabilities, per-sample losses, the gradient w.r.t. the map
stacks, and an AdamW step with dropout. ``authors.authors_logits`` is the torch reference it matches.

Dropout masks are a function of (seed, site, element index) alone (``dropout_mask`` is their NumPy
twin), so a training step is reproducible and its backward applies exactly the forward's masks.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from . import _C
from .core import _stream, adamw_update, empty

# the sites of the C core (authors_net.c): extractor layer l drops at 16 + 4l + {0 attention, 1 hidden,
# 2 feed-forward}, relation-head layer l at 128 + 4l + {...}, the two fc layers at 250 and 251
SITE_EXTRACTOR, SITE_HEAD, SITE_FC0, SITE_FC4 = 16, 128, 250, 251


def core_config(config: dict, input_channels: int, n_classes: int) -> Any:
    """The validated ``_C.authors_config`` of an authors' config dict (authors-format.md §2)."""
    ex, cl = config["extractor"], config["classifier"]
    return _C.authors_config(
        d=int(config.get("d_model", 256)), map_pixels=int(config.get("map_size", 16)) ** 2,
        max_channels=int(input_channels), n_steps=int(config.get("num_timesteps", 50)),
        ex_layers=int(ex["num_layers"]), ex_heads=int(ex["nhead"]), ex_ff=int(ex["dim_feedforward"]),
        pool_heads=int(ex["layer_attn_nheads"]), cl_layers=int(cl["num_layers"]), cl_heads=int(cl["nhead"]),
        cl_ff=int(cl["dim_feedforward"]), step_dim=int(cl.get("timestep_embedding_dim", 16)), n_relations=int(n_classes))


def dropout_mask(n: int, p: float, seed: int, site: int) -> np.ndarray:
    """The factors (0 or 1/(1-p)) ``l2s._C`` multiplies the n elements of a dropout site by
    (csrc/numeric.h's masks, written again in NumPy)."""
    def splitmix64(z: np.uint64) -> np.uint64:
        with np.errstate(over="ignore"):
            z = np.uint64(z) + np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            return z ^ (z >> np.uint64(31))
    cut = int(float(np.float32(p)) * (1 << 24))
    out = np.empty(n, np.float32)
    for block in range(0, max(n, 1), 1 << 30):
        key = splitmix64(np.uint64(seed & (2**64 - 1)) ^ np.uint64(site << 40) ^ splitmix64(np.uint64(block >> 30)))
        add, mix = np.uint32(int(key) & 0xFFFFFFFF), np.uint32(int(key) >> 32)
        i = np.arange(0, min(n - block, 1 << 30), dtype=np.uint32)
        with np.errstate(over="ignore"):
            h = (i * np.uint32(0x9E3779B1) + add) ^ mix
            h ^= h >> np.uint32(16)
            h *= np.uint32(0x85EBCA6B)
            h ^= h >> np.uint32(13)
            h *= np.uint32(0xC2B2AE35)
            h ^= h >> np.uint32(16)
        out[block:block + len(i)] = np.where((h >> np.uint32(8)) >= cut, np.float32(1 / np.float32(1 - np.float32(p))), 0)
    return out


class FusedAuthorsNet:
    """The network's parameters in one flat buffer, and its passes in ``l2s._C``: on the CPU (NumPy
    buffers), or on a GPU (torch CUDA buffers, torch's current stream; the CUDA twin)."""

    def __init__(self, config: dict, input_channels: int, n_classes: int, params: dict[str, torch.Tensor],
                 device: Any = "cpu"):
        self.cfg = core_config(config, input_channels, n_classes)
        self.layout = _C.authors_layout(self.cfg)                  # {name: (offset, numel)}, buffer order
        n_params, self.n_trained, _ = _C.authors_sizes(self.cfg, 1, 1)
        flat = np.zeros(n_params, np.float32)
        for name, (off, n) in self.layout.items():
            t = params[name].detach().to("cpu", torch.float32).reshape(-1)
            if t.numel() != n:
                raise ValueError(f"{name}: {t.numel()} values, the network needs {n}")
            flat[off:off + n] = t.numpy()
        self.device = torch.device(device)
        self.flat = flat if self.device.type == "cpu" else torch.from_numpy(flat).to(self.device)
        self.n_classes = int(n_classes)
        self._ws: tuple[tuple[int, int], Any] | None = None
        self._adam: tuple[Any, Any] | None = None
        self.adam_step = 0
        self.lock = threading.Lock()          # one workspace: a backward reads its forward's activations

    def views(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        """The state-dict tensors as torch views of the flat buffer (writes go both ways)."""
        flat = torch.from_numpy(self.flat) if isinstance(self.flat, np.ndarray) else self.flat
        return {name: flat[off:off + n].view(shapes[name]) for name, (off, n) in self.layout.items()}

    def _workspace(self, B: int, C: int) -> Any:
        if self._ws is None or self._ws[0] != (B, C):
            self._ws = ((B, C), empty((_C.authors_sizes(self.cfg, B, C)[2],), "float32", like=self.flat))
        return self._ws[1]                                         # keep the last shape's

    def _maps(self, maps: Any) -> Any:
        """Stacks as contiguous float32 on the buffer's device (NumPy on the CPU, torch on a GPU),
        [B, 2, C, S, S] viewed as [B, 2, C, S*S]; anything else goes to the core, which names it."""
        if self.device.type != "cpu":
            m = torch.as_tensor(maps).detach().to(self.device, torch.float32).contiguous()
        else:
            m = np.ascontiguousarray(maps.detach().to("cpu", torch.float32).numpy() if isinstance(maps, torch.Tensor)
                                     else maps, dtype=np.float32)
        return m.reshape(m.shape[0], 2, m.shape[2], -1) if m.ndim == 5 and m.shape[1] == 2 else m

    @staticmethod
    def _ints(v: Any, B: int, name: str) -> np.ndarray:
        a = np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v).reshape(-1)
        if a.size != B or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"{name}: {B} integers expected, got {a.size} of {a.dtype}")
        return np.ascontiguousarray(a, dtype=np.int32)

    def _forward(self, maps: Any, rows: np.ndarray, labels: np.ndarray | None, dropout: float, seed: int):
        B, C = int(maps.shape[0]), int(maps.shape[2])
        probs = empty((B, self.n_classes), "float32", like=self.flat)
        losses = empty((B,), "float32", like=self.flat) if labels is not None else None
        _C.authors_forward(self.cfg, self.flat, maps, rows, labels, self._workspace(B, C), probs, losses,
                           float(dropout), int(seed), stream=_stream(self.flat))
        return probs, losses

    def forward(self, maps: Any, rows: Any) -> Any:
        """Probabilities [B, K] of stacks [B, 2, C, S, S] and embedding rows [B] (eval mode)."""
        m = self._maps(maps)
        with self.lock:
            return self._forward(m, self._ints(rows, m.shape[0], "steps"), None, 0.0, 0)[0]

    def losses_and_grad(self, maps: Any, labels: Any, rows: Any) -> tuple[Any, Any, Any]:
        """Per-sample cross-entropy [B], d(sum of them)/d(maps) in maps' shape, probabilities."""
        shape = tuple(maps.shape)
        m = self._maps(maps)
        B, C = int(m.shape[0]), int(m.shape[2])
        lab, r = self._ints(labels, B, "labels"), self._ints(rows, B, "steps")
        with self.lock:
            probs, losses = self._forward(m, r, lab, 0.0, 0)
            dmaps = empty(tuple(m.shape), "float32", like=self.flat)
            _C.authors_backward(self.cfg, self.flat, r, lab, self._workspace(B, C), C, dmaps, None,
                                stream=_stream(self.flat))
        return losses, (dmaps * B).reshape(shape), probs                # the core differentiates the mean

    def train_step(self, maps: Any, labels: Any, rows: Any, lr: float, weight_decay: float, dropout: float,
                   betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> float:
        """One AdamW step over the trained parameters (not the positional tables), dropout masks
        drawn from the step count; the batch's mean loss before the step."""
        m = self._maps(maps)
        B, C = int(m.shape[0]), int(m.shape[2])
        lab, r = self._ints(labels, B, "labels"), self._ints(rows, B, "steps")
        n = self.n_trained
        with self.lock:
            self.adam_step += 1
            seed = self.adam_step
            _, losses = self._forward(m, r, lab, dropout, seed)
            grads = _zeros_like(self.flat)
            _C.authors_backward(self.cfg, self.flat, r, lab, self._workspace(B, C), C, None, grads, float(dropout), seed,
                                stream=_stream(self.flat))
            if self._adam is None:
                self._adam = (_zeros_like(self.flat[:n]), _zeros_like(self.flat[:n]))
            adamw_update(self.flat[:n], grads[:n], *self._adam, lr=float(lr), step=self.adam_step, betas=betas,
                         eps=float(eps), weight_decay=float(weight_decay))
        return float(losses.mean())


def _zeros_like(a: Any) -> Any:
    return torch.zeros_like(a) if isinstance(a, torch.Tensor) else np.zeros_like(a)
