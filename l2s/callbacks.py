"""Acting on the latent between denoising steps: the base of ``Steerer`` and ``MapRecorder``, and
the diffusers-native callback that carries either into a pipeline call.

diffusers calls ``callback_on_step_end`` after ``scheduler.step``: the latent it hands over is the
one the NEXT step denoises, so the callback at step i acts on step i + 1; ``StepHook.generate``
also acts on step 0 (before handing the latent to the pipeline). A forward pre-hook on the
denoiser (``replay.DenoiserCall``) remembers the pipeline's latest denoiser call, which a hook
replays on the latent it acts on.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from diffusers.callbacks import PipelineCallback

from .capture import CrossAttentionLayer
from .prompts import ParsedPrompt
from .replay import DenoiserCall


class L2SCallback(PipelineCallback):
    """diffusers' house form of a step-end callback around a ``StepHook``: declares its tensor inputs
    (pipelines read them by themselves) and returns the whole ``callback_kwargs``, so it chains
    inside ``MultiPipelineCallbacks``."""

    tensor_inputs = ["latents"]

    def __init__(self, hook: "StepHook"):
        super().__init__()
        self.hook = hook

    def callback_fn(self, pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        return self.hook.on_step_end(pipeline, step_index, timestep, callback_kwargs)


class StepHook:
    """Runs ``process`` on the latent of every step in ``hooked_steps``; a context manager that
    removes its denoiser hook on exit. Subclasses define ``hooked_steps`` and ``process``.

    A prompt without triplets makes an inactive hook: it never touches the pipeline.
    """

    tensor_inputs = ["latents"]

    def __init__(self, pipe: Any, parsed: ParsedPrompt):
        self.parsed = parsed
        self.replay = DenoiserCall(pipe) if parsed.triplets else None

    # -- to be defined by subclasses ----------------------------------------------------------------
    def hooked_steps(self, num_steps: int) -> list[int]:
        raise NotImplementedError

    def process(self, pipe: Any, latents: torch.Tensor, step: int, num_steps: int, recorded_t: Any) -> torch.Tensor:
        """Act on ``latents`` (as the pipeline holds them) before step ``step``; return the latents."""
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------------------------------
    def token_groups(self, trip: Any) -> list[list[int]]:
        """The (subject, object) token indices of a triplet, as the capture takes them."""
        objects = self.parsed.objects
        return [list(objects[trip.subject].tokens), list(objects[trip.object].tokens)]

    @torch.no_grad()
    def triplet_maps(self, pipe: Any, latents: torch.Tensor, t: Any, recorded_t: Any,
                     layers: Sequence[CrossAttentionLayer], map_size: int, early_exit: bool = True,
                     stack: bool = False, input_at: Any = None) -> list[torch.Tensor]:
        """Each triplet's classifier-input maps ([B, 2, S, S]; ``stack``: [B, 2, C, S, S]) of the
        recorded denoiser call replayed on ``latents`` at timestep t, without gradient. ``input_at``:
        what scales the latent for the denoiser (default: the pipeline's scheduler at its own step)."""
        args = self.replay.arguments(latents.shape[0], t, recorded_t)
        call, grid, n_text = self.replay.with_sample(args, latents, t, pipe.scheduler if input_at is None else input_at)
        maps = []
        for trip in self.parsed.triplets:
            with self.replay.capture_maps(call, layers, self.token_groups(trip), grid, n_text, map_size,
                                          early_exit, stack) as (x, _):
                maps.append(x.detach())
        return maps

    @property
    def active(self) -> bool:
        """False for prompts without a relation: the hook then never touches the pipeline."""
        return bool(self.parsed.triplets)

    def close(self) -> None:
        """Remove the denoiser hook (also done on ``with`` exit)."""
        if self.replay is not None:
            self.replay.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the callback route -------------------------------------------------------------------------
    def callback(self) -> L2SCallback:
        """This hook as a ``diffusers.callbacks.PipelineCallback``:
        ``pipe(prompt, callback_on_step_end=hook.callback())`` (acts on steps 1..)."""
        return L2SCallback(self)

    def __call__(self, pipe: Any, i: int, t: Any, callback_kwargs: dict) -> dict:
        """Plain ``callback_on_step_end`` (with ``callback_on_step_end_tensor_inputs=hook.tensor_inputs``)."""
        return self.on_step_end(pipe, i, t, callback_kwargs)

    def on_step_end(self, pipe: Any, i: int, t: Any, callback_kwargs: dict) -> dict:
        """Act on the latent that step i + 1 will denoise; returns the whole ``callback_kwargs``."""
        if not self.active or self.replay.last is None:
            return callback_kwargs
        num_steps = len(pipe.scheduler.timesteps)
        nxt = i + 1
        if nxt >= num_steps or nxt not in self.hooked_steps(num_steps):
            return callback_kwargs
        return {**callback_kwargs, "latents": self.process(pipe, callback_kwargs["latents"], nxt, num_steps, t)}

    # -- whole generation ---------------------------------------------------------------------------
    def generate(self, pipe: Any, prompt: str | list[str], **kwargs: Any) -> Any:
        """``pipe(prompt, **kwargs)`` with this hook on every hooked step, step 0 included.

        Initial latents are drawn like the pipeline draws them (same generator, same shape), so an
        inactive hook (or one that leaves latents unchanged) gives the unhooked pipeline's output.
        """
        if "callback_on_step_end" in kwargs:
            raise ValueError("generate() installs its own callback_on_step_end; call the pipeline yourself with "
                             "MultiPipelineCallbacks([hook.callback(), ...]) to add one")
        if not self.active:
            return pipe(prompt, **kwargs)
        num_steps = kwargs.get("num_inference_steps", 50)
        if 0 in self.hooked_steps(num_steps):
            latents = kwargs.pop("latents", None)
            if latents is None:
                latents = self.replay.initial_latents(pipe, prompt, kwargs)
            self.replay.probe(pipe, prompt, latents=latents, **kwargs)
            sigma = float(getattr(pipe.scheduler, "init_noise_sigma", 1.0))
            scaled = latents * sigma
            processed = self.process(pipe, scaled, 0, num_steps, pipe.scheduler.timesteps[0])
            # the pipeline multiplies by sigma again: hand back the change, not a re-divided latent
            kwargs["latents"] = latents + (processed - scaled) / sigma
        # L2SCallback, not self.callback(): that one warns callers who use the callback route
        return pipe(prompt, callback_on_step_end=L2SCallback(self), **kwargs)


class MapRecorder(StepHook):
    """Records the classifier-input maps of each triplet's subject and object while generating, at
    ``steps`` (no gradient, latents untouched: the images are the vanilla ones).

    ``maps[step]`` holds float32 [B, n_triplets, 2, S, S] (NumPy; ``stack``: [B, n_triplets, 2, C,
    S, S], per-(layer, head) stacks of ``layers`` in their order). Uses the same replay and capture
    as steering, so the maps are what a classifier would read at those steps.
    """

    def __init__(self, pipe: Any, parsed: ParsedPrompt, steps: Sequence[int], layers: Sequence[CrossAttentionLayer],
                 map_size: int = 16, early_exit: bool = True, stack: bool = False):
        super().__init__(pipe, parsed)
        self.steps, self.layers = sorted(int(s) for s in steps), list(layers)
        self.map_size, self.early_exit, self.stack = int(map_size), early_exit, stack
        self.maps: dict[int, np.ndarray] = {}

    def hooked_steps(self, num_steps: int) -> list[int]:
        return [s for s in self.steps if s < num_steps]

    def process(self, pipe: Any, latents: torch.Tensor, step: int, num_steps: int, recorded_t: Any) -> torch.Tensor:
        maps = self.triplet_maps(pipe, latents, pipe.scheduler.timesteps[step], recorded_t, self.layers,
                                 self.map_size, self.early_exit, self.stack)
        self.maps[step] = np.stack([x.float().cpu().numpy() for x in maps], 1)
        return latents
