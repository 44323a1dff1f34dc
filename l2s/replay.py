"""Replaying a pipeline's own denoiser call: the one mechanism behind steering and map inversion.

A forward pre-hook remembers the arguments of the denoiser's latest call, whatever the pipeline
(the prompt embeddings, SDXL's added conditions, Flux's ids and guidance, SD3's pooled
projections). ``probe`` runs a pipeline only until that first call. ``arguments`` gives the call
back on the conditional half of the CFG batch at another timestep, and ``capture_maps`` runs it
on a given latent while ``MapCapture`` reads the chosen layers' attention maps.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Iterator, Sequence

import torch

from .capture import EarlyExit, MapCapture
from .models import CrossAttentionLayer, adapter_for
from .ops import combine_maps, combine_stacks


class ProbeDone(Exception):
    """Stops a probing pipeline call once the denoiser's first call has been recorded."""


def denoiser_of(pipe: Any) -> torch.nn.Module:
    for name in ("unet", "transformer"):
        if getattr(pipe, name, None) is not None:
            return getattr(pipe, name)
    raise TypeError(f"{type(pipe).__name__} has neither a unet nor a transformer")


def conditional_half(value: Any, batch: int) -> Any:
    """With classifier-free guidance the pipeline batches [negative, positive]: keep the positive."""
    if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == 2 * batch:
        return value[batch:]
    if isinstance(value, dict):
        return {k: conditional_half(v, batch) for k, v in value.items()}
    return value


class DenoiserCall:
    """Records the denoiser's calls (a forward pre-hook, removed by ``remove`` / ``with`` exit)."""

    def __init__(self, pipe: Any):
        self.denoiser = denoiser_of(pipe)
        self.adapter = adapter_for(self.denoiser)
        self.family = self.adapter.family
        self.last: tuple[tuple, dict] | None = None
        self._probing = False
        self._replaying = False          # our own replays must not overwrite the pipeline's call
        self._hook = self.denoiser.register_forward_pre_hook(self._remember, with_kwargs=True)

    def _remember(self, module, args, kwargs):
        if self._replaying:
            return
        self.last = (args, kwargs)
        if self._probing:
            raise ProbeDone()

    def remove(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.last = None

    def __enter__(self) -> "DenoiserCall":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def probe(self, pipe: Any, prompt: Any, **kwargs: Any) -> None:
        """Run ``pipe(prompt, **kwargs)`` up to the denoiser's first call (prompt encoding, latent
        preparation and scheduler set-up happen; no denoising step does)."""
        self._probing = True
        try:
            pipe(prompt, **kwargs)
        except ProbeDone:
            pass
        else:
            raise RuntimeError("the pipeline finished without calling its denoiser")
        finally:
            self._probing = False

    def arguments(self, batch: int, t: Any, recorded_t: Any, full: bool = False) -> dict:
        """The latest call bound to parameter names, on the conditional half (``full``: the whole
        batch, both halves of classifier-free guidance), at timestep t. ``recorded_t``: the
        scheduler timestep the recorded call was made at (the pipeline may pass a rescaled one, as
        Flux passes t / 1000: the ratio is kept)."""
        if self.last is None:
            raise RuntimeError("the denoiser has not been called yet: nothing to replay")
        args, kwargs = self.last
        bound = inspect.signature(self.denoiser.forward).bind(*args, **kwargs)
        out = {k: v if full else conditional_half(v, batch) for k, v in bound.arguments.items()}
        extra = out.pop("kwargs", None)
        if isinstance(extra, dict):
            out.update(extra)
        ts = torch.as_tensor(out["timestep"])
        rec, seen = float(torch.as_tensor(recorded_t).reshape(-1)[0]), float(ts.reshape(-1)[0])
        ratio = seen / rec if rec != 0 else 1.0
        new = torch.as_tensor(t, device=ts.device)
        new = (new if ratio == 1.0 else new.double() * ratio).to(ts.dtype)
        out["timestep"] = new.expand(ts.shape) if ts.ndim else new
        out["return_dict"] = False
        return out

    def with_sample(self, call: dict, z: torch.Tensor, t: Any, scheduler: Any) -> tuple[dict, tuple[int, int], int]:
        """``call`` with latent z as the denoiser input (as the family's adapter binds it), plus the
        image-token grid and the text length the capture needs."""
        return self.adapter.bind_sample(self.denoiser, call, z, t, scheduler)

    def run(self, call: dict) -> Any:
        """The denoiser on a replayed ``call`` (not recorded as the pipeline's latest call)."""
        self._replaying = True
        try:
            return self.denoiser(**call)
        finally:
            self._replaying = False

    @contextlib.contextmanager
    def capture_maps(self, call: dict, layers: Sequence[CrossAttentionLayer], tokens: Sequence[Sequence[int]],
                     grid: tuple[int, int], n_text: int, map_size: int, early_exit: bool = True,
                     stack: bool = False) -> Iterator[tuple[torch.Tensor, MapCapture]]:
        """Run the denoiser on ``call`` and yield the classifier input maps [B, T, S, S] (one per
        token group; ``stack``: [B, T, C, S, S], every layer's heads in ``layers`` order) and the
        live capture. Back-propagate inside the ``with`` block after setting ``capture.replaying`` so
        that gradient checkpointing recomputes the capture's ops."""
        with MapCapture(self.denoiser, layers, early_exit, stack) as cap:
            cap.begin(tokens, grid, n_text)
            try:
                self.run(call)
            except EarlyExit:
                pass
            maps = cap.end()
            combine = combine_stacks if stack else combine_maps
            yield combine([maps[l.name] for l in layers if l.name in maps], map_size), cap

    def initial_latents(self, pipe: Any, prompt: Any, kwargs: dict) -> torch.Tensor:
        """Initial noise drawn as the pipeline draws it (same generator use, shape and dtype)."""
        n = (1 if isinstance(prompt, str) else len(prompt)) * kwargs.get("num_images_per_prompt", 1)
        device = getattr(pipe, "_execution_device", None) or self.denoiser.device
        return self.adapter.initial_latents(pipe, self.denoiser, n, kwargs, device)
