"""Typed wrappers over the ``l2s._C`` C/CUDA ops.

Each function accepts NumPy arrays, torch tensors (CPU or CUDA) or any ``__dlpack__`` object and
returns outputs of the same kind on the same device, allocated here unless ``out=`` arrays are
given (they are then written in place: no hidden copies). CUDA work runs on torch's current stream.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np

from . import _C

Array = Any  # numpy.ndarray | torch.Tensor | any object with __dlpack__

__all__ = [
    "attn_maps_forward", "attn_maps_backward", "resize_maps_forward", "resize_maps_backward",
    "normalize_maps_forward", "normalize_maps_backward", "latent_update", "adamw_update", "token_table",
    "cuda_available", "empty",
]


def cuda_available() -> bool:
    """True if ``l2s._C`` was built with CUDA and a device is usable (never initialises CUDA at import)."""
    return bool(_C.cuda_available())


def _torch():
    return sys.modules.get("torch")


def _is_torch(x: Array) -> bool:
    t = _torch()
    return t is not None and isinstance(x, t.Tensor)


def _prep(x: Array) -> Array:
    """torch refuses to export tensors that require grad through DLPack: pass the data only."""
    if _is_torch(x) and x.requires_grad:
        return x.detach()
    return x


def _stream(x: Array) -> int | None:
    """The caller's current CUDA stream for torch CUDA tensors, else None."""
    if _is_torch(x) and x.is_cuda:
        return _torch().cuda.current_stream(x.device).cuda_stream
    return None


_NP_DTYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int64}


def _dtype_name(x: Array) -> str:
    """'float32', 'float16', ... for NumPy, torch, CuPy arrays and l2s._C.Buffer alike."""
    return str(x.dtype).replace("torch.", "")


def empty(shape: Sequence[int], dtype: str = "float32", like: Array | None = None) -> Array:
    """Uninitialised array of ``shape``: a NumPy array, a torch tensor on ``like``'s device, or an
    ``l2s._C.Buffer`` (DLPack producer) for other array libraries."""
    shape = tuple(int(s) for s in shape)
    if like is None or isinstance(like, np.ndarray):
        return np.empty(shape, dtype=_NP_DTYPES[dtype])
    if _is_torch(like):
        torch = _torch()
        return torch.empty(shape, dtype=getattr(torch, dtype), device=like.device)
    kind, index = like.__dlpack_device__()
    return _C.empty(shape, dtype, "cuda" if kind == 2 else "cpu", index if kind == 2 else 0)


def token_table(tokens: Sequence[int | Sequence[int]]) -> np.ndarray:
    """[T, M] int32 table, padded with -1, from one token index (or a list of them) per object.

    >>> token_table([3, [5, 6]]).tolist()
    [[3, -1], [5, 6]]
    """
    if isinstance(tokens, np.ndarray) and tokens.dtype == np.int32 and tokens.ndim == 2:
        return np.ascontiguousarray(tokens)
    rows = [[int(t)] if np.isscalar(t) else [int(v) for v in t] for t in tokens]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("tokens: give at least one object, each with at least one token index")
    width = max(len(r) for r in rows)
    table = np.full((len(rows), width), -1, dtype=np.int32)
    for i, r in enumerate(rows):
        table[i, : len(r)] = r
    return table


def attn_maps_forward(q: Array, k: Array, tokens: Sequence, scale: float | None = None,
                   out: Array | None = None, per_head: bool = False, token_mean: bool = False) -> Array:
    """Head-averaged (or per-head) cross-attention maps of chosen tokens.

    Args:
        q: queries [B, heads, N, d] (float32/16/bf16, any strides: a transposed view is fine).
        k: keys [B, heads, L, d] of the text tokens.
        tokens: one token index or list of indices per object ("teddy", "bear" -> summed).
        scale: softmax scale, default 1/sqrt(d).
        out: optional float32 [B, T, N] ([B, T, heads, N] with per_head) written in place.
        per_head: one map per head instead of their mean (the authors' classifiers read stacks).
        token_mean: an object's map is the mean over its tokens instead of their sum.
    Returns:
        float32 maps [B, T, N] or [B, T, heads, N]: softmax over the L tokens, reduced over each
        object's tokens.
    """
    q, k = _prep(q), _prep(k)
    table = token_table(tokens)
    B, H, N, D = q.shape
    scale = float(D) ** -0.5 if scale is None else float(scale)
    if out is None:
        out = empty((B, table.shape[0], H, N) if per_head else (B, table.shape[0], N), "float32", like=q)
    _C.attn_maps_forward(q, k, table, out, scale, stream=_stream(q), per_head=bool(per_head),
                           token_mean=bool(token_mean))
    return out


def attn_maps_backward(q: Array, k: Array, tokens: Sequence, dmaps: Array,
                            scale: float | None = None, dq: Array | None = None,
                            dk: Array | None = None, per_head: bool = False,
                            token_mean: bool = False) -> tuple[Array, Array]:
    """Gradients (dq, dk) of ``attn_maps_forward`` given dmaps [B, T, N] ([B, T, heads, N] with
    per_head; recomputes softmax rows)."""
    q, k, dmaps = _prep(q), _prep(k), _prep(dmaps)
    table = token_table(tokens)
    scale = float(q.shape[3]) ** -0.5 if scale is None else float(scale)
    dt = _dtype_name(q)
    dq = empty(tuple(q.shape), dt, like=q) if dq is None else dq
    dk = empty(tuple(k.shape), dt, like=k) if dk is None else dk
    on_gpu = not isinstance(q, np.ndarray) and q.__dlpack_device__()[0] == 2         # kDLCUDA
    scratch = empty(tuple(k.shape), "float32", like=k) if on_gpu and dt != "float32" else None   # dK is summed there
    _C.attn_maps_backward(q, k, table, dmaps, dq, dk, scale, stream=_stream(q), per_head=bool(per_head),
                            token_mean=bool(token_mean), scratch=scratch)
    return dq, dk


def resize_maps_forward(x: Array, size: int | tuple[int, int], mode: str = "bilinear", out: Array | None = None,
                weight: float = 1.0, accumulate: bool = False) -> Array:
    """Resize float32 maps [..., h, w] to [..., H, W]; with out= and accumulate=True, add into out
    (weight=1/L over L layers averages them)."""
    x = _prep(x)
    H, W = (size, size) if isinstance(size, int) else size
    if out is None:
        out = empty(tuple(x.shape[:-2]) + (H, W), "float32", like=x)
    _C.resize_maps_forward(x, out, mode, float(weight), bool(accumulate), stream=_stream(x))
    return out


def resize_maps_backward(dout: Array, in_size: tuple[int, int], mode: str = "bilinear",
                         din: Array | None = None, weight: float = 1.0, accumulate: bool = False) -> Array:
    """Gradient of ``resize_maps_forward``: maps dout [..., H, W] back to [..., h, w]."""
    dout = _prep(dout)
    if din is None:
        din = empty(tuple(dout.shape[:-2]) + tuple(in_size), "float32", like=dout)
    _C.resize_maps_backward(dout, din, mode, float(weight), bool(accumulate), stream=_stream(dout))
    return din


def _flat_maps(x: Array, map_dims: int) -> Array:
    lead = tuple(x.shape[: x.ndim - map_dims])
    return x.reshape(lead + (-1,))


def normalize_maps_forward(x: Array, mode: str = "sum", eps: float = 1e-8, map_dims: int = 2,
                   out: Array | None = None) -> Array:
    """Normalise each map (the last ``map_dims`` dims) to sum 1 (``mode='sum'``) or max 1 (``'max'``)."""
    x = _prep(x)
    if out is None:
        out = empty(tuple(x.shape), "float32", like=x)
    _C.normalize_maps_forward(_flat_maps(x, map_dims), _flat_maps(out, map_dims), mode, float(eps), stream=_stream(x))
    return out


def normalize_maps_backward(x: Array, dy: Array, mode: str = "sum", eps: float = 1e-8, map_dims: int = 2,
                            dx: Array | None = None) -> Array:
    """Gradient of ``normalize_maps_forward`` at x given dy."""
    x, dy = _prep(x), _prep(dy)
    if dx is None:
        dx = empty(tuple(x.shape), "float32", like=x)
    _C.normalize_maps_backward(_flat_maps(x, map_dims), _flat_maps(dy, map_dims), _flat_maps(dx, map_dims),
                                 mode, float(eps), stream=_stream(x))
    return dx


def latent_update(z: Array, g: Array, step: float, normalize: bool = True) -> Array:
    """In place, per sample: ``z[b] -= step * g[b] / ||g[b]||`` (or ``step * g[b]``).

    Returns the per-sample gradient norms (float32 [B]); a NaN marks a sample whose gradient was
    not finite and whose latent was therefore left untouched.
    """
    g = _prep(g)
    if _is_torch(z) and z.requires_grad:
        raise ValueError("z: update a latent that does not require grad (use z.detach() or torch.no_grad)")
    norms = empty((z.shape[0],), "float32", like=z)
    _C.latent_update(z, g, norms, float(step), bool(normalize), stream=_stream(z))
    return norms


def adamw_update(params: Array, grads: Array, m: Array, v: Array, lr: float, step: int,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0) -> None:
    """One in-place AdamW update of flat float32 ``params`` (``step`` counts from 1)."""
    _C.adamw_update(params, _prep(grads), m, v, float(lr), float(betas[0]), float(betas[1]), float(eps),
                      float(weight_decay), int(step), stream=_stream(params))
