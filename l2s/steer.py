"""The steering hook: a drop-in ``callback_on_step_end`` for diffusers pipelines.

    steer = Steerer(pipe, classifier, prompt)
    image = steer.generate(pipe, prompt, num_inference_steps=50)         # steers step 0 too
    # or, steering steps 1.. only, inside the pipeline's own call:
    image = pipe(prompt, callback_on_step_end=steer, callback_on_step_end_tensor_inputs=steer.tensor_inputs)

How it works. A forward pre-hook on the denoiser remembers the arguments of its latest call (the
pipeline's prompt embeddings, SDXL's added conditions, Flux's ids and guidance...: ``replay.py``). At a steered
step the hook replays that call on the conditional half only, with the latent requiring grad and
the step's timestep, captures the subject's and object's cross-attention maps on the chosen layers
(stopping the forward after the last of them), runs the relation classifier's fused loss and
input gradient in ``_l2s``, back-propagates to the latent and moves it with ``_l2s``'s latent
update. diffusers calls the callback after ``scheduler.step``: the latent it returns is the one
the NEXT step denoises, so the callback at step i steers step i + 1, and ``generate`` steers
step 0 before handing the latent to the pipeline.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from . import core
from .capture import select_layers
from .classifier import RelationClassifier, relation_index, step_index
from .prompts import ParsedPrompt, parse_prompt
from .replay import DenoiserCall, denoiser_of


@dataclass
class SteeringConfig:
    """Knobs of the steering loop.

    steer_fraction: steer the first ``round(steer_fraction * num_steps)`` steps (ignored when
        ``steps`` lists step indices explicitly).
    iterations: gradient updates per steered step (each one denoiser forward to the last captured
        layer + backward; relations taken round robin); the step ends early once every relation's
        loss, checked in turn, is under ``loss_target``.
    step_size: with ``normalize`` the RMS change of the latent per update (the update is
        ``step_size * sqrt(numel) * g / ||g||`` per sample); without it the plain ``step_size * g``.
    step_decay: the step size is multiplied by this after each steered step.
    grad_blur: standard deviation (in latent pixels) of a Gaussian low-pass applied to the latent
        gradient before the update (0: none). Layout lives in low frequencies; the raw gradient's
        high frequencies deform shapes instead of moving them.
    blocks / sides / layers: which cross-attention layers to read (see ``capture.select_layers``).
    early_exit: stop the denoiser's forward after the last captured layer.
    keep_maps: keep the classifier's input maps of each steered step's first iteration (for plots).
    """
    steer_fraction: float = 0.5
    steps: Sequence[int] | None = None
    iterations: int = 3
    step_size: float = 0.1
    step_decay: float = 1.0
    grad_blur: float = 0.0
    normalize: bool = True
    loss_target: float = 0.02
    blocks: Sequence[str] | None = None
    sides: Sequence[int] | None = None
    layers: Sequence[str] | None = None
    early_exit: bool = True
    keep_maps: bool = True

    def steered_steps(self, num_steps: int) -> list[int]:
        if self.steps is not None:
            return sorted(int(s) for s in self.steps if 0 <= int(s) < num_steps)
        return list(range(min(num_steps, round(self.steer_fraction * num_steps))))


@dataclass
class StepRecord:
    """One gradient iteration: what the classifier saw and what the update did."""
    step: int
    iteration: int
    timestep: float
    triplet: int
    relation: str
    loss: float
    probs: list[list[float]]
    grad_norm: list[float]
    step_size: float
    skipped: str = ""
    label: int = 0                   # index of ``relation`` in ``probs`` (the classifier's relation order)
    maps: np.ndarray | None = field(default=None, repr=False)   # [B, 2, S, S] classifier input


class Steerer:
    """Learn-to-Steer for one prompt, usable as ``callback_on_step_end`` (see the module doc).

    Args:
        pipe: a diffusers pipeline with ``unet`` (SD 1.x/2.x/XL, the shapes pipeline) or
            ``transformer`` (Flux, SD3).
        classifier: a ``RelationClassifier`` trained on this model's maps (``n_maps`` = 2).
        prompt: parsed with the pipeline's tokenizer (Flux: ``tokenizer_2``, the T5 one; SD3: the
            first CLIP one, whose tokens lead SD3's text sequence);
            or pass ``parsed`` (``prompts.make_triplets``) to give triplets and tokens directly.
        config / overrides: a ``SteeringConfig`` and/or its fields as keywords. Without ``config``,
            the classifier's own recommended settings (``classifier.config.meta["steering"]``, written
            by whoever trained it for its model) replace the ``SteeringConfig`` defaults; overrides
            apply last.
    A classifier on the CPU is moved (in place) to a CUDA denoiser's device.
    A prompt without a relation gives a steerer that does nothing: generation is unmodified.
    ``records`` lists a ``StepRecord`` per gradient iteration.
    """

    tensor_inputs = ["latents"]

    def __init__(self, pipe: Any, classifier: RelationClassifier, prompt: str | None = None,
                 parsed: ParsedPrompt | None = None, config: SteeringConfig | None = None, **overrides: Any):
        base = dict(config.__dict__) if config is not None else recommended_settings(classifier)
        self.config = SteeringConfig(**{**base, **overrides})
        self.denoiser = denoiser_of(pipe)
        if parsed is None:
            if prompt is None:
                raise ValueError("give a prompt or parsed triplets")
            tok = pipe.tokenizer_2 if hasattr(self.denoiser, "single_transformer_blocks") else pipe.tokenizer
            parsed = parse_prompt(prompt, tok)
        self.parsed = parsed
        if classifier.config.n_maps != 2:
            raise ValueError(f"the classifier reads {classifier.config.n_maps} maps; steering needs 2 (subject, object)")
        device = next(self.denoiser.parameters()).device
        if device.type == "cuda" and not (torch.is_tensor(classifier.params) and classifier.params.device == device):
            classifier.to(device)             # maps are made on the denoiser's device: keep the C/CUDA op there
        self.classifier = classifier
        self.labels = relation_index(classifier.config, [t.relation for t in parsed.triplets]) if parsed.triplets else None
        self.layers = self._layers_for(classifier)
        self.records: list[StepRecord] = []
        self._iteration = 0
        self._warned = False
        # remembers the pipeline's denoiser calls (only when there is something to steer)
        self.replay = DenoiserCall(pipe) if parsed.triplets else None

    def _layers_for(self, classifier: RelationClassifier) -> list:
        """The config's layer choice; without one, the layers the classifier was trained on
        (``meta["layers"]``) when this model has them all, else the default (with a warning: the
        classifier then reads maps of other layers than it learned from)."""
        c = self.config
        trained_on = classifier.config.meta.get("layers")
        if c.blocks is not None or c.sides is not None or c.layers is not None or not trained_on:
            return select_layers(self.denoiser, c.blocks, c.sides, c.layers)
        try:
            return select_layers(self.denoiser, names=trained_on)
        except ValueError:
            chosen = select_layers(self.denoiser)
            warnings.warn(f"the classifier was trained on maps of layers {trained_on[:2]}... that this model lacks; "
                          f"steering reads the default layers ({len(chosen)}) instead: expect a weaker classifier "
                          "(train one on this model, or pass layers=)", stacklevel=3)
            return chosen

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """False for prompts without a relation: the steerer then never touches the pipeline."""
        return bool(self.parsed.triplets)

    def close(self) -> None:
        """Remove the denoiser hook (also done on ``with`` exit)."""
        if self.replay is not None:
            self.replay.remove()

    def __enter__(self) -> "Steerer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the callback -----------------------------------------------------------------------------
    def __call__(self, pipe: Any, i: int, t: Any, callback_kwargs: dict) -> dict:
        """diffusers' ``callback_on_step_end``: steers the latent that step i + 1 will denoise."""
        if not self.active or self.replay.last is None:
            return {}
        timesteps = pipe.scheduler.timesteps
        nxt = i + 1
        if nxt >= len(timesteps) or nxt not in self.config.steered_steps(len(timesteps)):
            return {}
        latents = callback_kwargs["latents"]
        steered = self.steer_latents(pipe, latents, nxt, len(timesteps), recorded_t=t)
        return {"latents": steered}

    def steer_latents(self, pipe: Any, latents: torch.Tensor, step: int, num_steps: int,
                      recorded_t: Any) -> torch.Tensor:
        """Run the gradient iterations of one step on ``latents`` (as the pipeline holds them) and
        return the steered latents (a new tensor; the input is not modified)."""
        cfg = self.config
        t = pipe.scheduler.timesteps[step]
        args = self.replay.arguments(latents.shape[0], t, recorded_t)
        z = latents.detach().float().clone().contiguous()
        per_sample = z[0].numel()
        steered = cfg.steered_steps(num_steps)
        n_steered = steered.index(step) if step in steered else 0
        size = cfg.step_size * (cfg.step_decay ** n_steered)
        scale = size * math.sqrt(per_sample) if cfg.normalize else size
        cls_step = step_index(step, num_steps, self.classifier.config.n_steps)
        B = z.shape[0]
        satisfied = 0                       # consecutive relations found under the loss target
        for it in range(cfg.iterations):
            k = self._iteration % len(self.parsed.triplets)      # round robin over relations
            self._iteration += 1
            trip = self.parsed.triplets[k]
            labels, steps = np.full(B, self.labels[k], np.int32), np.full(B, cls_step, np.int32)
            records_before = len(self.records)

            def classify(x: torch.Tensor, it=it, k=k, trip=trip) -> torch.Tensor | None:
                """Loss and d(loss)/d(maps) from the C classifier; None ends this step's iterations."""
                loss_mean, dx, probs = self.classifier.loss_and_input_grad(x, labels, steps)
                rec = StepRecord(step, it, float(t), k, trip.relation, loss_mean, _tolist(probs), [], size,
                                 label=int(self.labels[k]),
                                 maps=x.float().cpu().numpy() if cfg.keep_maps and it == 0 else None)
                self.records.append(rec)
                if not math.isfinite(loss_mean):
                    self._skip(rec, "non-finite loss")
                    return None
                if loss_mean < cfg.loss_target:
                    rec.skipped = "loss under target"
                    return None
                # the C op returns the gradient of the batch MEAN: each sample gets its own loss's
                return torch.as_tensor(dx, device=x.device) * B

            g = self._latent_gradient(pipe, z, latents.dtype, t, args, trip, classify)
            rec = self.records[records_before]
            if g is None:
                # a relation already satisfied: go on to the next one; stop once all of them are
                satisfied += 1
                if rec.skipped == "loss under target" and satisfied < len(self.parsed.triplets):
                    continue
                break
            satisfied = 0
            if not torch.isfinite(g).all():
                self._skip(rec, "non-finite gradient")
                break
            if cfg.grad_blur > 0:
                g = gaussian_blur(g.float(), cfg.grad_blur)
            norms = core.update_latent(z, g.float().contiguous(), scale, normalize=cfg.normalize)
            rec.grad_norm = [float(v) for v in _tolist(norms)]
        return z.to(latents.dtype)

    def _skip(self, rec: StepRecord, why: str) -> None:
        rec.skipped = why
        if not self._warned:
            warnings.warn(f"l2s: {why} at step {rec.step}: update skipped, latent kept (warned once)", RuntimeWarning)
            self._warned = True

    # -- the gradient pass ------------------------------------------------------------------------
    def _latent_gradient(self, pipe, z: torch.Tensor, dtype, t, args: dict, trip, classify) -> torch.Tensor | None:
        """Gradient w.r.t. the latent z of the classifier loss on one triplet's maps.

        ``classify(maps [B, 2, S, S]) -> d(loss)/d(maps)`` (or None: no update). The capture stays
        installed through the backward so that gradient checkpointing, which re-runs the
        checkpointed blocks during backward, recomputes the very same ops (without recording).
        """
        # the pipeline calls us under torch.no_grad(): everything from z_in on (scheduler input
        # scaling included: Euler divides by sqrt(sigma^2 + 1)) must record the graph
        with torch.enable_grad():
            z_in = z.detach().to(dtype).requires_grad_(True)
            call, grid, n_text = self.replay.with_sample(args, z_in, t, pipe.scheduler)
            objects = self.parsed.objects
            tokens = [list(objects[trip.subject].tokens), list(objects[trip.object].tokens)]
            with self.replay.capture_maps(call, self.layers, tokens, grid, n_text, self.classifier.config.map_size,
                                          self.config.early_exit) as (x, cap):
                dx = classify(x.detach())
                if dx is None:
                    return None
                cap.replaying = True
                (g,) = torch.autograd.grad(x, z_in, dx.to(x.dtype))
        return g

    # -- whole generation -------------------------------------------------------------------------
    def generate(self, pipe: Any, prompt: str | list[str], **kwargs: Any) -> Any:
        """``pipe(prompt, **kwargs)`` with steering on every steered step, step 0 included.

        Initial latents are drawn like the pipeline draws them (same generator, same shape), so a
        prompt without a relation gives exactly the unhooked pipeline's output.
        """
        if "callback_on_step_end" in kwargs:
            raise ValueError("generate() installs its own callback_on_step_end; call the pipeline yourself to add one")
        if not self.active:
            return pipe(prompt, **kwargs)
        num_steps = kwargs.get("num_inference_steps", 50)
        if 0 in self.config.steered_steps(num_steps):
            latents = kwargs.pop("latents", None)
            if latents is None:
                latents = self.replay.initial_latents(pipe, prompt, kwargs)
            self.replay.probe(pipe, prompt, latents=latents, **kwargs)
            sigma = float(getattr(pipe.scheduler, "init_noise_sigma", 1.0))
            t0 = pipe.scheduler.timesteps[0]
            scaled = latents * sigma
            steered = self.steer_latents(pipe, scaled, 0, num_steps, recorded_t=t0)
            # the pipeline multiplies by sigma again: hand back the change, not a re-divided latent
            kwargs["latents"] = latents + (steered - scaled) / sigma
        return pipe(prompt, callback_on_step_end=self, callback_on_step_end_tensor_inputs=self.tensor_inputs, **kwargs)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur over the last two axes (reflect padding, radius 3 sigma) of a 4-D tensor."""
    if x.dim() != 4:
        raise ValueError(f"grad_blur needs [B, C, H, W] latents, got shape {tuple(x.shape)} (packed Flux latents "
                         f"are not supported)")
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    B, C, H, W = x.shape
    if radius >= min(H, W):
        raise ValueError(f"grad_blur sigma {sigma} is too wide for a {H}x{W} latent")
    flat = x.reshape(B * C, 1, H, W)
    flat = torch.nn.functional.conv2d(torch.nn.functional.pad(flat, (radius, radius, 0, 0), mode="reflect"),
                                      kernel.view(1, 1, 1, -1))
    flat = torch.nn.functional.conv2d(torch.nn.functional.pad(flat, (0, 0, radius, radius), mode="reflect"),
                                      kernel.view(1, 1, -1, 1))
    return flat.reshape(B, C, H, W)


def recommended_settings(classifier: Any) -> dict:
    """The ``SteeringConfig`` fields a classifier's config recommends (``meta["steering"]``; {} if none)."""
    meta = getattr(getattr(classifier, "config", None), "meta", None) or {}
    rec = dict(meta.get("steering", {}))
    unknown = set(rec) - set(SteeringConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"classifier meta 'steering' has unknown fields {sorted(unknown)}; "
                         f"known: {sorted(SteeringConfig.__dataclass_fields__)}")
    return rec


def _tolist(a: Any) -> list:
    return (a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)).tolist()
