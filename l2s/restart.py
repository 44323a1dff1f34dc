"""Restart after the steered steps: re-noise the latent back to an earlier step's noise level and
denoise those steps again, unsteered (the idea of Restart sampling, Xu et al. 2023).

Steering moves the latent off the model's path; the model then finishes the image from there and
some shapes come out deformed. Re-noising forgets part of the detail the updates wrote while the
layout (low frequencies, set in the early steps) survives, and the model re-draws the detail from
the steered layout with its own prior.

Every supported scheduler holds the latent that step j denoises as ``x = a_j * x0 + s_j * eps``:

    "vp"   (DDIM, DDPM, PNDM, DPM-Solver, ...)      a = sqrt(alpha_bar(t_j)), s = sqrt(1 - alpha_bar(t_j))
    "ve"   (Euler, Heun, LMS, ... with sigmas)      a = 1, s = sigma_j; the denoiser reads x / sqrt(1 + s^2)
    "flow" (flow matching: Flux, SD3)               a = 1 - sigma_j, s = sigma_j; the denoiser predicts eps - x0

so one re-noising formula and one deterministic step serve them all: from the denoiser's output
the step forms (x0, eps) and moves to ``a' * x0 + s' * eps`` at the next level (DDIM for "vp",
Euler for "ve" and "flow"). The replayed steps only read the pipeline's scheduler (timesteps,
noise levels, prediction type): its own state (step index, multistep history) is untouched.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

def noise_kind(scheduler: Any) -> str:
    """How ``scheduler`` holds its latents ("vp", "ve" or "flow"); ValueError if l2s cannot tell."""
    name = type(scheduler).__name__
    if "FlowMatch" in name:
        return "flow"
    init_sigma = float(getattr(scheduler, "init_noise_sigma", 1.0))
    if init_sigma > 1.0 and getattr(scheduler, "sigmas", None) is not None:
        return "ve"
    if getattr(scheduler, "alphas_cumprod", None) is not None and init_sigma == 1.0:
        return "vp"
    raise ValueError(f"restart: the {name} scheduler is not supported (it must be flow matching, hold "
                     "sigmas with init_noise_sigma > 1, or hold alphas_cumprod with init_noise_sigma 1)")


def noise_level(scheduler: Any, kind: str, step: int) -> tuple[float, float]:
    """(a, s) of the latent that step ``step`` denoises: ``x = a * x0 + s * eps``."""
    if kind == "vp":
        alpha_bar = float(scheduler.alphas_cumprod[int(scheduler.timesteps[step])])
        return math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    sigma = float(scheduler.sigmas[step])
    return (1.0, sigma) if kind == "ve" else (1.0 - sigma, sigma)


def renoise_coefficients(level: tuple[float, float], back_to: tuple[float, float]) -> tuple[float, float]:
    """(keep, add): a latent at ``level`` (a1, s1) forward-diffused to the noisier ``back_to``
    (a0, s0) is ``keep * x + add * noise`` with keep = a0 / a1 (the signal keeps its share) and
    add = sqrt(s0^2 - (keep s1)^2) (fresh noise makes up the variance)."""
    (a1, s1), (a0, s0) = level, back_to
    keep = a0 / a1
    extra = s0 * s0 - (keep * s1) ** 2
    if extra < -1e-9:
        raise ValueError(f"restart: level {back_to} is not noisier than {level}")
    return keep, math.sqrt(max(extra, 0.0))


def model_input(x: torch.Tensor, kind: str, level: tuple[float, float]) -> torch.Tensor:
    """The denoiser's input for latent x (what ``scheduler.scale_model_input`` gives at that level)."""
    return x / math.sqrt(1.0 + level[1] ** 2) if kind == "ve" else x


def x0_eps(out: torch.Tensor, x: torch.Tensor, kind: str, level: tuple[float, float],
           prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean latent and the noise the denoiser's output ``out`` implies for latent x at ``level``."""
    a, s = level
    if kind == "flow":                                  # velocity eps - x0
        return x - s * out, x + a * out
    if prediction_type == "epsilon":
        return (x - s * out) / a, out
    if prediction_type == "sample":
        return out, (x - a * out) / s
    if prediction_type == "v_prediction":               # v is defined on the variance-preserving latent
        norm = math.sqrt(a * a + s * s)
        xv, av, sv = x / norm, a / norm, s / norm
        return av * xv - sv * out, sv * xv + av * out
    raise ValueError(f"restart: prediction type {prediction_type!r} is not supported")


def check_restart(restart: Sequence[int], num_steps: int | None = None) -> None:
    """ValueError unless ``restart`` (after_step, back) goes back no further than step 0 and (given
    ``num_steps``) fits a run of that many steps: a later step must follow ``after_step``."""
    after, back = restart
    if back > after + 1:
        raise ValueError(f"restart {after} {back}: goes back before step 0 (back must be <= {after + 1})")
    if num_steps is not None and after + 1 >= num_steps:
        raise ValueError(f"restart after step {after}: the run has {num_steps} steps, so no step follows it")


class InputAt:
    """A stand-in for the scheduler's ``scale_model_input`` at a replayed step's level (the pipeline's
    scheduler stands at another step, and its state is not ours to move)."""

    def __init__(self, kind: str, level: tuple[float, float]) -> None:
        self.kind, self.level = kind, level

    def scale_model_input(self, z: torch.Tensor, t: Any = None) -> torch.Tensor:
        return model_input(z, self.kind, self.level)


@torch.no_grad()
def restart_latents(pipe: Any, replay: Any, latents: torch.Tensor, after: int, back: int,
                    generator: Any = None, noise: torch.Tensor | None = None,
                    steer: Callable[[torch.Tensor, int, InputAt], torch.Tensor] | None = None) -> torch.Tensor:
    """The latent the pipeline holds after step ``after``, re-noised to the level of step
    ``after + 1 - back`` and denoised again through steps ``after + 1 - back .. after`` with the
    pipeline's recorded denoiser call (``replay``: a ``replay.DenoiserCall``), classifier-free
    guidance as the pipeline applies it (``pipe.guidance_scale`` when the call holds both halves),
    and a deterministic step. ``generator``: the call's generator(s), as ``randn_tensor`` takes them
    (None: the global RNG); ``noise``: the re-noising noise itself (tests), instead of a draw;
    ``steer(x, j, input_at)``: called on the latent before each replayed step j (``input_at``
    scales it for the denoiser at that step), returns the latent the step denoises."""
    from diffusers.utils.torch_utils import randn_tensor

    sch = pipe.scheduler
    kind = noise_kind(sch)
    first = after + 1 - back
    if noise is None:
        noise = randn_tensor(tuple(latents.shape), generator=generator, device=latents.device, dtype=torch.float32)
    keep, add = renoise_coefficients(noise_level(sch, kind, after + 1), noise_level(sch, kind, first))
    x = keep * latents.float() + add * noise.float()
    return denoise_steps(pipe, replay, x, first, after, sch.timesteps[after], steer, dtype=latents.dtype)


@torch.no_grad()
def denoise_steps(pipe: Any, replay: Any, latents: torch.Tensor, first: int, last: int, recorded_t: Any,
                  steer: Callable[[torch.Tensor, int, InputAt], torch.Tensor] | None = None,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """``latents`` (the latent step ``first`` denoises) taken through steps ``first .. last`` with the
    pipeline's recorded denoiser call (``replay``: a ``replay.DenoiserCall``, recorded at scheduler
    timestep ``recorded_t``), classifier-free guidance as the pipeline applies it
    (``pipe.guidance_scale`` when the call holds both halves) and a deterministic step (DDIM or
    Euler: the scheduler's own state is not touched); returns the latent step ``last + 1``
    denoises. ``steer(x, j, input_at)``: called on the latent before each step j (``input_at``
    scales it for the denoiser at that step), returns the latent the step denoises. ``dtype``: the
    denoiser's (default: the latents'); the steps themselves run in float32."""
    dtype = latents.dtype if dtype is None else dtype
    sch = pipe.scheduler
    kind = noise_kind(sch)
    prediction = getattr(getattr(sch, "config", None), "prediction_type", None) or "epsilon"
    scale = getattr(pipe, "guidance_scale", None)       # used when the recorded call holds both CFG halves
    B = latents.shape[0]
    x = latents.float()
    for j in range(first, last + 1):
        t = sch.timesteps[j]
        level = noise_level(sch, kind, j)
        input_at = InputAt(kind, level)     # one scaler for the step and its steering
        if steer is not None:           # it records its own graph (enable_grad) from x on
            x = steer(x.to(dtype), j, input_at).float()
        call = replay.arguments(B, t, recorded_t, full=True)
        doubled = call["encoder_hidden_states"].shape[0] == 2 * B
        z = input_at.scale_model_input(x).to(dtype)
        # scheduler=None: the input is scaled above for step j, not at the scheduler's own step index
        call, _, _ = replay.with_sample(call, torch.cat([z, z]) if doubled else z, t, None)
        out = replay.run(call)
        out = (out[0] if isinstance(out, (tuple, list)) else out.sample).float()
        if doubled:
            if scale is None:
                raise ValueError(f"{type(pipe).__name__} batches classifier-free guidance but has no "
                                 "guidance_scale attribute")
            uncond, cond = out.chunk(2)
            out = uncond + float(scale) * (cond - uncond)
        x0, eps = x0_eps(out, x, kind, level, prediction)
        a, s = noise_level(sch, kind, j + 1)
        x = a * x0 + s * eps
    return x.to(dtype)
