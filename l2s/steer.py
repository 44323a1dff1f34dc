"""Learn-to-Steer: the steering loop and its config.

    steer = Steerer(pipe, classifier, prompt)
    image = steer.generate(pipe, prompt, num_inference_steps=50)         # steers step 0 too
    # or, steering steps 1.. only, inside the pipeline's own call (a diffusers PipelineCallback,
    # chainable in MultiPipelineCallbacks):
    image = pipe(prompt, callback_on_step_end=steer.callback())

At a steered step the pipeline's recorded denoiser call (``replay.py``) is replayed on the
conditional half only, with the latent requiring grad and the step's timestep; the capture
(``capture.py``) reads the subject's and object's cross-attention maps on the chosen layers
(stopping the forward after the last of them); the relation loss (any ``losses.RelationLoss``,
applied as an autograd function) gives per-sample losses; one backward through that single graph
gives the latent gradient, and ``l2s._C``'s latent update moves the latent. ``callbacks.StepHook``
carries the loop into the pipeline (step-end callback, ``generate``).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from . import core
from .binding import binding_groups, binding_term
from .callbacks import StepHook
from .capture import select_layers, stack_layers
from .layout import SIDE, box_side, box_term, centroids, layout_term, plan_layout, shares_an_axis
from .losses import RelationLoss, labels_for, relation_loss
from .models import adapter_for
from .prompts import ParsedPrompt, distinguishing_tokens, implied_triplets, object_list, parse_prompt
from .replay import denoiser_of
from .restart import InputAt, check_restart, denoise_steps, noise_kind, noise_level, restart_latents

MAX_ITERATIONS = 1000            # gradient iterations per steered step: beyond this a run would look hung
MAX_SCREENED = 64                # initial noises screened per image


@dataclass
class SteeringConfig:
    """Knobs of the steering loop; bad values raise ``ValueError`` at construction.

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
    loss_targets: per steered step (by its index in the denoising loop: the k-th entry for step k,
        the last entry for every later step) instead of ``loss_target`` (the authors' schedule).
    early_exit: stop the denoiser's forward after the last captured layer.
    keep_maps: keep the classifier's input maps of each steered step's first iteration (for plots).
    list_prompt_from: when the prompt has at least this many relations, the denoiser reads only the
        objects as a plain list ("a A, a B and a C", ``prompts.object_list``) and the relations are
        steered alone (0: never). Relation words in a long prompt make the shapes model drop
        objects; ``Steerer.generate`` swaps the text (``Steerer.prompt``: pass it to the pipeline
        when calling it yourself with ``callback()``).
    screen_noises: draw this many initial noises per image (the first is the one the pipeline
        would draw; the rest follow from the same generator) and keep the one whose step-0 maps the
        loss scores best, summed over the relations (1: no screening). Costs one denoiser forward,
        up to the last captured layer, per extra noise and relation. Only ``generate`` screens, and
        not when the caller passes ``latents``; the callback and modular routes start from the
        pipeline's own noise.
    screen_step: read each screened noise's maps at this step instead of step 0: the noise is first
        denoised through the steps before it (unsteered, with the call's guidance, a deterministic
        step) and the loss scored at that step (the maps carry no layout at step 0 and most of it
        by step 2). Costs ``screen_step`` guided denoiser calls per noise. 0: step-0 maps.
    binding_weight: add this times ``binding.binding_term`` (each object's modifier map on its own
        noun's map, off the other nouns') to the loss the latent descends; the step's loss target
        still reads the relation loss alone (0: off; needs averaged maps and names of 2+ words).
    restart: (after_step, back): after step ``after_step`` re-noise the latent to the noise level of
        step ``after_step + 1 - back`` and denoise those ``back`` steps again, unsteered, before the
        pipeline goes on (``l2s.restart``: lets the model repair shapes the updates deformed; costs
        ``back`` extra denoiser calls). None: off. The re-noising draws from the call's generator(s)
        in ``generate``, from the global RNG on the callback route. Step indices are absolute, as in
        ``steps``: a run with no step after ``after_step`` is generated without restart (warned).
    restart_steer: steer the replayed steps that are in ``steps`` too, at this fraction of their
        step size, gated by the loss target as usual (a layout the restart kept is left alone; one
        the re-noising loosened is pulled back). 0: the replay is unsteered. Needs ``restart``.
    distinct_tokens: read each object's maps from the words that tell it apart from the prompt's
        other objects ("orange diamond" beside "orange cross": "diamond"; ``prompts.distinguishing_tokens``)
        instead of all its words. Applies to prompts the steerer parses, not to ``parsed`` given by hand.
    implied_relations: also steer the relations the prompt's triplets imply on one axis ("A left of
        B left of C": A left of C too; ``prompts.implied_triplets``), in the round robin after the
        stated ones. The loss target and noise screening read them as well.
    layout_weight: add this times ``layout.layout_term`` (each object's map centroid pulled to its
        place in a layout planned, at the first steered step, to hold every relation at once:
        ``layout.plan_layout``) to the loss the latent descends, on prompts where two relations
        share an axis ("A left of B left of C", "A above B below C": the pairs compete for room;
        ``layout.shares_an_axis``); the step's loss target still reads the relation loss alone (0:
        off; needs averaged maps).
    layout_box_weight: add this times ``layout.box_term`` (each object's map mass outside a box
        around its planned place) to the loss the latent descends, on the same prompts and plan as
        ``layout_weight``; either weight above 0 makes the plan (0: off).
    layout_every_prompt: plan and pull on every prompt with a relation, not only where two relations
        share an axis (on chains that turn the centroid term cost accuracy: docs/results.md, stop 27).
    layout_box_side: the side of the box term's squares (a fraction of the image; shrunk where two
        planned centres are closer). The plan itself is made with objects of side ``layout.SIDE``:
        a smaller box asks for smaller objects, and wider gaps, in the same places.
    layout_box_target: on planned prompts with ``layout_box_weight`` > 0, a step also goes on while
        the batch's mean box term is above this, even when the relation loss is under its target
        (the relation classifier is often satisfied by step 2-3, long before the objects sit in
        their boxes). 1.0, the term's maximum: the relation loss alone gates the step.
    """
    steer_fraction: float = 0.5
    steps: Sequence[int] | None = None
    iterations: int = 3
    step_size: float = 0.1
    step_decay: float = 1.0
    grad_blur: float = 0.0
    normalize: bool = True
    loss_target: float = 0.02
    loss_targets: Sequence[float] | None = None
    blocks: Sequence[str] | None = None
    sides: Sequence[int] | None = None
    layers: Sequence[str] | None = None
    early_exit: bool = True
    keep_maps: bool = True
    list_prompt_from: int = 0
    screen_noises: int = 1
    screen_step: int = 0
    binding_weight: float = 0.0
    restart: Sequence[int] | None = None
    restart_steer: float = 0.0
    distinct_tokens: bool = False
    implied_relations: bool = False
    layout_weight: float = 0.0
    layout_box_weight: float = 0.0
    layout_every_prompt: bool = False
    layout_box_side: float = SIDE
    layout_box_target: float = 1.0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"SteeringConfig.{name} = {getattr(self, name)!r}: {why}")

        for name in ("steer_fraction", "step_size", "step_decay", "grad_blur", "loss_target", "binding_weight",
                     "restart_steer", "layout_weight", "layout_box_weight", "layout_box_target", "layout_box_side"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad(name, "must be a finite number")
        if not 0.0 <= self.steer_fraction <= 1.0:
            raise bad("steer_fraction", "must lie in [0, 1]")
        for name in ("step_size", "grad_blur", "binding_weight", "restart_steer", "layout_weight",
                     "layout_box_weight", "layout_box_target"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0")
        if not 0.0 < self.layout_box_side <= 1.0:
            raise bad("layout_box_side", "must lie in (0, 1]")
        if self.step_decay <= 0:
            raise bad("step_decay", "must be > 0")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) \
                or not 0 <= self.iterations <= MAX_ITERATIONS:
            raise bad("iterations", f"must be an integer in [0, {MAX_ITERATIONS}]")
        if isinstance(self.list_prompt_from, bool) or not isinstance(self.list_prompt_from, int) \
                or self.list_prompt_from < 0:
            raise bad("list_prompt_from", "must be a non-negative integer (0: never)")
        if isinstance(self.screen_noises, bool) or not isinstance(self.screen_noises, int) \
                or not 1 <= self.screen_noises <= MAX_SCREENED:
            raise bad("screen_noises", f"must be an integer in [1, {MAX_SCREENED}]")
        if isinstance(self.screen_step, bool) or not isinstance(self.screen_step, int) or self.screen_step < 0:
            raise bad("screen_step", "must be a non-negative integer (0: the step-0 maps)")
        if self.restart is not None:
            r = self.restart
            if not isinstance(r, (list, tuple)) or len(r) != 2 \
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in r) or r[0] < 0 or r[1] < 1:
                raise bad("restart", "must be None or (after_step >= 0, back >= 1)")
            try:
                check_restart(r)                # the run's length is checked when it is known
            except ValueError as exc:
                raise bad("restart", str(exc)) from None
            self.restart = (int(r[0]), int(r[1]))
        if self.restart_steer > 0 and self.restart is None:      # it would do nothing, silently
            raise bad("restart_steer", "steers a restart's replayed steps: it needs restart=(after_step, back), "
                                       "or set it to 0")
        for name in ("normalize", "early_exit", "keep_maps", "distinct_tokens", "implied_relations",
                     "layout_every_prompt"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be True or False")
        if self.loss_targets is not None and (isinstance(self.loss_targets, (str, bytes)) or not self.loss_targets
                                              or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                         and math.isfinite(v) for v in self.loss_targets)):
            raise bad("loss_targets", "must be None or a non-empty list of finite numbers")
        for name, kind in (("steps", int), ("sides", int), ("blocks", str), ("layers", str)):
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, (str, bytes)) or not all(isinstance(x, kind) and not isinstance(x, bool) for x in v):
                raise bad(name, f"must be None or a list of {kind.__name__}")
            if kind is int and any(x < 0 for x in v):
                raise bad(name, "must hold non-negative integers")

    def target_at(self, step: int) -> float:
        """The loss under which a step's iterations stop."""
        if self.loss_targets is None:
            return self.loss_target
        return float(self.loss_targets[min(step, len(self.loss_targets) - 1)])

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
    label: int = 0                   # index of ``relation`` in ``probs`` (the loss's relation order)
    maps: np.ndarray | None = field(default=None, repr=False)   # [B, 2, S, S] classifier input
    replayed: bool = False           # made while a restart replayed the step (``restart_steer``)
    layout_box: float | None = None  # the batch's mean ``layout.box_term`` (planned prompts with a box weight)


class Steerer(StepHook):
    """Learn-to-Steer for one prompt (see the module doc).

    Args:
        pipe: a diffusers pipeline whose denoiser a model adapter knows (``l2s.models``: UNet for
            SD 1.x/2.x/XL and the shapes pipeline, Flux, SD3).
        classifier: a ``losses.RelationLoss`` — a ``RelationClassifier`` trained on this model's
            maps, or a hand-made loss such as ``baselines.CentroidLoss``.
        prompt: parsed with the tokenizer whose tokens name the objects (the adapter's choice:
            Flux: T5; SD3: the first CLIP); or pass ``parsed`` (``prompts.make_triplets``).
        config / overrides: a ``SteeringConfig`` and/or its fields as keywords. Without ``config``,
            the loss's own recommended settings (``meta["steering"]``, written by whoever trained it
            for its model) replace the ``SteeringConfig`` defaults; overrides apply last.
        preset: "paper" for the authors' schedule on their models (``l2s.presets``: up to 16 plain
            ``z -= s * g`` updates on each of steps 0-24 of 50, tiny loss targets), instead of the
            config; "default" (or None) for l2s's own.
    A loss on the CPU is moved (in place) to a CUDA denoiser's device.
    A prompt without a relation gives a steerer that does nothing: generation is unmodified.
    ``records`` lists a ``StepRecord`` per gradient iteration.
    """

    def __init__(self, pipe: Any, classifier: RelationLoss, prompt: str | None = None,
                 parsed: ParsedPrompt | None = None, config: SteeringConfig | None = None,
                 preset: str | None = None, **overrides: Any):
        if preset not in (None, "default", "paper"):
            raise ValueError(f"preset must be 'default' or 'paper', got {preset!r}")
        if preset == "paper":                    # the authors' schedule for this model (l2s.presets)
            from .presets import model_family, paper_settings
            base = paper_settings(model_family(denoiser_of(pipe), classifier.meta.get("family")))
        elif config is not None:
            base = {f.name: getattr(config, f.name) for f in fields(config)}
        else:
            base = recommended_settings(classifier)
        unknown = set(overrides) - {f.name for f in fields(SteeringConfig)}
        if unknown:
            raise TypeError(f"unknown steering setting(s) {sorted(unknown)}")
        self.config = SteeringConfig(**{**base, **overrides})
        self.denoiser = denoiser_of(pipe)
        self.adapter = adapter_for(self.denoiser)
        # the text the denoiser must read when it is not the caller's (the maps' tokens are in it)
        self.prompt: str | None = None
        named = parsed                          # every word of each name (the binding term splits them)
        if parsed is None:
            if prompt is None:
                raise ValueError("give a prompt or parsed triplets")
            tokenizer = self.adapter.object_tokenizer(pipe)
            named = parsed = parse_prompt(prompt, tokenizer)
            if 0 < self.config.list_prompt_from <= len(parsed.triplets):
                named = parsed = object_list(parsed, tokenizer)
                self.prompt = parsed.prompt
            if self.config.distinct_tokens:
                parsed = distinguishing_tokens(named, tokenizer)
        if self.config.implied_relations:
            parsed = implied_triplets(parsed)
        if classifier.n_maps != 2:
            raise ValueError(f"the classifier reads {classifier.n_maps} maps; steering needs 2 (subject, object)")
        device = next(self.denoiser.parameters()).device
        if device.type == "cuda":
            classifier.to(device)             # maps are made on the denoiser's device: keep the C/CUDA op there
        self.loss = self.classifier = classifier
        self.stack = getattr(classifier, "map_kind", "mean") == "stack"
        self.labels = labels_for(classifier, [t.relation for t in parsed.triplets]) if parsed.triplets else None
        self.layers = self._layers_for(classifier)
        # modifier and noun token groups of the binding term (l2s.binding); empty: no term
        self.binding_mods: list = []
        self.binding_nouns: list = []
        if self.config.binding_weight > 0:
            if self.stack:
                raise ValueError("binding_weight needs a classifier of averaged maps, not map stacks")
            self.binding_mods, self.binding_nouns = binding_groups(named, self.adapter.object_tokenizer(pipe))
            if not self.binding_mods and parsed.triplets:
                warnings.warn("binding_weight: no object has a modifier word (or the token indices were given by "
                              "hand): no binding term", stacklevel=2)
        # every object's token group and the relations of the layout term (l2s.layout); empty: no term
        self.layout_groups: list = []
        self.layout_relations = [(t.subject, t.relation, t.object) for t in parsed.triplets]
        self._layout_targets: torch.Tensor | None = None      # [B, objects, 2], planned at the first steered step
        self._layout_step: int | None = None                  # that step
        self._box_mean: float | None = None                   # the last gradient pass's mean box term
        planned = self.config.layout_weight > 0 or self.config.layout_box_weight > 0
        if planned and self.layout_relations and (self.config.layout_every_prompt
                                                  or shares_an_axis(self.layout_relations)):
            if self.stack:
                raise ValueError("layout_weight / layout_box_weight need a classifier of averaged maps, not map stacks")
            if plan_layout(len(parsed.objects), self.layout_relations) is None:
                warnings.warn("layout_weight / layout_box_weight: no layout holds every relation of the prompt "
                              "(contradictory, or too many objects): no layout term", stacklevel=2)
            else:
                self.layout_groups = [list(o.tokens) for o in parsed.objects]
        if self.config.restart is not None or self.config.screen_step > 0:
            noise_kind(pipe.scheduler)          # an unsupported scheduler fails here, before any work
        self._restart_generator: Any = None     # the generate() call's generator(s), for the re-noising
        self.records: list[StepRecord] = []
        self.screen_scores: np.ndarray | None = None      # [noises, images] of the last screened generate
        self._iteration = 0
        self._warned = False
        super().__init__(pipe, parsed)

    def _layers_for(self, loss: RelationLoss) -> list:
        """The config's layer choice; without one, the layers the loss was trained on
        (``meta["layers"]``) when this model has them all, else the default (with a warning: the
        classifier then reads maps of other layers than it learned from). A loss that reads map
        stacks (``map_kind == "stack"``, the authors' classifiers) gets every cross-attention layer
        in the stack's channel order (``ModelAdapter.stack_order``)."""
        c = self.config
        if self.stack:
            chosen = stack_layers(self.denoiser, c.layers)
            limit = int(loss.meta.get("input_channels", 10 ** 9))
            channels = sum(int(getattr(l.module, "heads", 0)) for l in chosen)
            if channels > limit:
                raise ValueError(f"the stack has {channels} channels but the classifier reads at most {limit}")
            return chosen
        trained_on = loss.meta.get("layers")
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

    def generate(self, pipe: Any, prompt: str | list[str], **kwargs: Any) -> Any:
        """``StepHook.generate``; with a list prompt (``SteeringConfig.list_prompt_from``) the
        pipeline reads ``self.prompt`` in place of each of the given prompts."""
        if self.prompt is not None:
            prompt = [self.prompt] * len(prompt) if isinstance(prompt, list) else self.prompt
        if self.active and self.config.screen_noises > 1 and kwargs.get("latents") is None \
                and "callback_on_step_end" not in kwargs:
            kwargs["latents"] = self.screened_latents(pipe, prompt, kwargs)
        self._restart_generator = kwargs.get("generator")
        try:
            return super().generate(pipe, prompt, **kwargs)
        finally:
            self._restart_generator = None

    @torch.no_grad()
    def screened_latents(self, pipe: Any, prompt: str | list[str], kwargs: dict) -> torch.Tensor:
        """The initial latents ``generate`` starts from with ``screen_noises`` > 1: per image, of
        ``screen_noises`` noises drawn from the call's generator(s), the one with the lowest sum of
        relation losses on its maps at step ``screen_step`` (ties: the earliest, so the pipeline's own
        noise wins them). ``screen_scores`` keeps the scores [noises, images]."""
        candidates = [self.replay.initial_latents(pipe, prompt, kwargs) for _ in range(self.config.screen_noises)]
        self.replay.probe(pipe, prompt, latents=candidates[0], **kwargs)
        sch = pipe.scheduler
        sigma = float(getattr(sch, "init_noise_sigma", 1.0))
        num_steps = len(sch.timesteps)
        step = min(self.config.screen_step, num_steps - 1)
        scores = torch.stack([self.noise_score(pipe, c * sigma, step, num_steps) for c in candidates])   # [K, B]
        self.screen_scores = scores.numpy()
        best = torch.nan_to_num(scores, nan=float("inf")).argmin(0)
        return torch.stack([candidates[int(k)][b] for b, k in enumerate(best)])

    def noise_score(self, pipe: Any, latents: torch.Tensor, step: int, num_steps: int) -> torch.Tensor:
        """Per-image sum over the relations of the loss on the maps at ``step`` of initial ``latents``
        (denoised through the steps before it first)."""
        B = latents.shape[0]
        sch = pipe.scheduler
        t0, t, input_at = sch.timesteps[0], sch.timesteps[step], None
        if step > 0:
            latents = denoise_steps(pipe, self.replay, latents, 0, step - 1, t0)
            kind = noise_kind(sch)
            input_at = InputAt(kind, noise_level(sch, kind, step))
        steps = np.full(B, self.loss.step_row(step, num_steps), np.int32)
        maps = self.triplet_maps(pipe, latents, t, t0, self.layers, self.loss.map_size, self.config.early_exit,
                                 self.stack, input_at=input_at)
        return sum(relation_loss(self.loss, x, np.full(B, label, np.int32), steps)[0].detach().double().cpu()
                   for x, label in zip(maps, self.labels))

    def callback(self) -> Any:
        """``StepHook.callback``; with a list prompt, call the pipeline with ``self.prompt`` (warned)."""
        if self.prompt is not None:
            warnings.warn(f"list_prompt_from: call the pipeline with steer.prompt ({self.prompt!r}); the "
                          "steered maps are that text's tokens", stacklevel=2)
        return super().callback()

    def hooked_steps(self, num_steps: int) -> list[int]:
        return self.config.steered_steps(num_steps)

    def on_step_end(self, pipe: Any, i: int, t: Any, callback_kwargs: dict) -> dict:
        """``StepHook.on_step_end``, after the restart (``SteeringConfig.restart``) when step i is its
        step."""
        r = self.config.restart
        if r is not None and self.active and self.replay.last is not None:
            num_steps = len(pipe.scheduler.timesteps)
            try:
                check_restart(r, num_steps)
            except ValueError as exc:           # absolute step indices, as ``steps``: a short run skips it
                if i == 0:
                    warnings.warn(f"l2s: {exc}: no restart in this run", stacklevel=2)
            else:
                if i == r[0]:
                    latents = restart_latents(pipe, self.replay, callback_kwargs["latents"], r[0], r[1],
                                              self._restart_generator, steer=self._replay_steering(pipe, num_steps, t))
                    callback_kwargs = {**callback_kwargs, "latents": latents}
        return super().on_step_end(pipe, i, t, callback_kwargs)

    def _replay_steering(self, pipe: Any, num_steps: int, recorded_t: Any) -> Any:
        """What steers a restart's replayed steps (``restart_steer``), or None."""
        if self.config.restart_steer <= 0:
            return None
        steered = self.config.steered_steps(num_steps)

        def steer(x: torch.Tensor, step: int, input_at: Any) -> torch.Tensor:
            if step not in steered:
                return x
            first = len(self.records)
            x = self.steer_latents(pipe, x, step, num_steps, recorded_t, input_at=input_at,
                                   size_factor=self.config.restart_steer)
            for rec in self.records[first:]:
                rec.replayed = True
            return x
        return steer

    def process(self, pipe: Any, latents: torch.Tensor, step: int, num_steps: int, recorded_t: Any) -> torch.Tensor:
        return self.steer_latents(pipe, latents, step, num_steps, recorded_t)

    # -- the loop of one step ------------------------------------------------------------------------
    def steer_latents(self, pipe: Any, latents: torch.Tensor, step: int, num_steps: int,
                      recorded_t: Any, input_at: Any = None, size_factor: float = 1.0) -> torch.Tensor:
        """Run the gradient iterations of one step on ``latents`` (as the pipeline holds them) and
        return the steered latents (a new tensor; the input is not modified). ``input_at``: what
        scales the latent for the denoiser (default: the pipeline's scheduler, which stands at
        ``step``; a restart's replay passes its own); ``size_factor`` scales the step size."""
        cfg = self.config
        t = pipe.scheduler.timesteps[step]
        args = self.replay.arguments(latents.shape[0], t, recorded_t)
        z = latents.detach().float().clone().contiguous()
        per_sample = z[0].numel()
        steered = cfg.steered_steps(num_steps)
        n_steered = steered.index(step) if step in steered else 0
        size = cfg.step_size * (cfg.step_decay ** n_steered) * size_factor
        scale = size * math.sqrt(per_sample) if cfg.normalize else size
        B = z.shape[0]
        steps = np.full(B, self.loss.step_row(step, num_steps), np.int32)
        if input_at is None and (self._layout_step is None or step <= self._layout_step):
            # a new image (its steps start again, on either route): plan on its first steered maps
            self._layout_targets, self._layout_step = None, step
        satisfied = 0                       # consecutive relations found under the loss target
        for it in range(cfg.iterations):
            k = self._iteration % len(self.parsed.triplets)      # round robin over relations
            self._iteration += 1
            trip = self.parsed.triplets[k]
            labels = np.full(B, self.labels[k], np.int32)
            with self.loss_pass(pipe, z, latents.dtype, t, args, trip, labels, steps,
                                input_at) as (x, losses, probs, grad):
                # samples are independent: a sample whose loss is not finite is left alone, the others go on
                loss_mean = _finite_mean(losses)
                rec = StepRecord(step, it, float(t), k, trip.relation, loss_mean, _tolist(probs), [], size,
                                 label=int(self.labels[k]),
                                 maps=x.detach().float().cpu().numpy() if cfg.keep_maps and it == 0 else None,
                                 layout_box=self._box_mean)
                self.records.append(rec)
                g = None
                boxes_loose = self._box_mean is not None and self._box_mean > cfg.layout_box_target
                if not math.isfinite(loss_mean):
                    self._skip(rec, "non-finite loss")
                elif loss_mean < cfg.target_at(step) and not boxes_loose:
                    rec.skipped = "loss under target"
                else:
                    g = grad()
            if g is None:
                # a relation already satisfied: go on to the next one; stop once all of them are
                satisfied += 1
                if rec.skipped == "loss under target" and satisfied < len(self.parsed.triplets):
                    continue
                break
            satisfied = 0
            if cfg.grad_blur > 0:
                g = gaussian_blur(g.float(), cfg.grad_blur)
            # the op leaves a sample whose gradient is not finite untouched and reports a NaN norm for it
            norms = core.latent_update(z, g.float().contiguous(), scale, normalize=cfg.normalize)
            rec.grad_norm = [float(v) for v in _tolist(norms)]
            skipped = [b for b, v in enumerate(rec.grad_norm) if not math.isfinite(v)]
            if skipped:
                self._skip(rec, f"non-finite gradient (sample(s) {skipped})")
                if len(skipped) == B:
                    break
        return z.to(latents.dtype)

    def _skip(self, rec: StepRecord, why: str) -> None:
        rec.skipped = why
        if not self._warned:
            warnings.warn(f"l2s: {why} at step {rec.step}: update skipped, latent kept (warned once)", RuntimeWarning)
            self._warned = True

    def plan(self, maps: torch.Tensor) -> torch.Tensor:
        """Per-sample planned centres [B, objects, 2] (``layout.plan_layout``) nearest to where the
        objects' maps [B, objects, S, S] put them now."""
        now = centroids(maps.detach().double()).cpu().numpy()
        planned = [plan_layout(len(self.layout_groups), self.layout_relations, c) for c in now]
        return torch.as_tensor(np.stack(planned), device=maps.device)

    # -- the gradient pass ------------------------------------------------------------------------
    @contextlib.contextmanager
    def loss_pass(self, pipe: Any, z: torch.Tensor, dtype: torch.dtype, t: Any, args: dict, trip: Any,
                  labels: np.ndarray, steps: np.ndarray, input_at: Any = None) -> Iterator[tuple]:
        """One forward of the replayed call on latent z, for one triplet: yields the maps
        [B, 2, S, S], the per-sample losses [B], the probabilities and ``grad()``, which returns
        d(sum of losses)/dz through the one autograd graph (maps -> loss -> latent). ``input_at``:
        what scales z for the denoiser (None: the pipeline's scheduler).

        The capture stays installed until the block ends so that gradient checkpointing, which
        re-runs the checkpointed blocks during backward, recomputes the very same ops (without
        recording).
        """
        # the pipeline calls us under torch.no_grad(): everything from z_in on (scheduler input
        # scaling included: Euler divides by sqrt(sigma^2 + 1)) must record the graph
        with torch.enable_grad():
            z_in = z.detach().to(dtype).requires_grad_(True)
            call, grid, n_text = self.replay.with_sample(args, z_in, t,
                                                         pipe.scheduler if input_at is None else input_at)
            mods, nouns, placed = self.binding_mods, self.binding_nouns, self.layout_groups
            groups = self.token_groups(trip) + [list(g) for g in mods + nouns] + placed
            with self.replay.capture_maps(call, self.layers, groups, grid, n_text,
                                          self.loss.map_size, self.config.early_exit, self.stack) as (maps, cap):
                x = maps[:, :2].contiguous()
                losses, probs = relation_loss(self.loss, x, labels, steps)
                objective = losses.sum()
                m, n = len(mods), len(nouns)
                self._box_mean = None         # read by the step's gate (``layout_box_target``)
                if mods:        # the binding term moves the latent too; the step's target reads the relation loss
                    objective = objective + self.config.binding_weight * binding_term(
                        maps[:, 2:2 + m], maps[:, 2 + m:2 + m + n]).sum().to(objective.dtype)
                if placed:
                    placed_maps = maps[:, 2 + m + n:]
                    if self._layout_targets is None or self._layout_targets.shape[0] != placed_maps.shape[0]:
                        self._layout_targets = self.plan(placed_maps)
                    if self.config.layout_weight > 0:
                        objective = objective + self.config.layout_weight * layout_term(
                            placed_maps, self._layout_targets).sum().to(objective.dtype)
                    if self.config.layout_box_weight > 0:
                        boxed = box_term(placed_maps, self._layout_targets,
                                         box_side(self._layout_targets, self.config.layout_box_side))
                        box_mean = _finite_mean(boxed)
                        self._box_mean = None if math.isnan(box_mean) else box_mean
                        objective = objective + self.config.layout_box_weight * boxed.sum().to(objective.dtype)

                def grad() -> torch.Tensor:
                    cap.replaying = True
                    return torch.autograd.grad(objective, z_in)[0]
                yield x, losses, probs, grad


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
    """The ``SteeringConfig`` fields a loss recommends (``meta["steering"]``; {} if none)."""
    meta = getattr(classifier, "meta", None) or {}
    rec = dict(meta.get("steering", {}))
    known = {f.name for f in fields(SteeringConfig)}
    unknown = set(rec) - known
    if unknown:
        raise ValueError(f"classifier meta 'steering' has unknown fields {sorted(unknown)}; known: {sorted(known)}")
    return rec


def _finite_mean(values: torch.Tensor) -> float:
    """Mean of the finite entries of per-sample ``values`` (NaN when none is): a sample whose value
    is not finite is left alone, the others go on."""
    v = values.detach()
    finite = torch.isfinite(v)
    return float(v[finite].float().mean()) if bool(finite.any()) else float("nan")


def _tolist(a: Any) -> list:
    return (a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)).tolist()
