"""Relation-classifier training data: attention maps of known images, inverted through the model.

An image whose (subject, relation, object) is known is brought to a denoising step's latent and the
denoiser is run on it with a prompt naming the two objects; the capture of ``l2s.capture`` (the very
layers and map preparation the steering hook uses) reads the subject's and object's maps. Modes:

- ``"noise"``: the clean latent noised to the step (DDPM family: ``add_noise``; rectified flow, Flux
  and SD3: the straight line ``(1 - sigma) x0 + sigma noise``, which the authors' RF-inversion
  setting reduces to); no denoiser pass but the maps' own.
- ``"ddim"``: DDIM inversion, maps read on the way up.
- ``"fixed-point"``: the authors' SD recipe: DDIM inversion whose every step is refined by
  fixed-point iterations (``fixed_point_iterations``, 5), then DDIM reconstruction conditional only
  (guidance 1), maps read on the way down; the reconstruction's PSNR against the image is kept in
  ``last_psnr`` and ``build_dataset`` drops images under ``psnr_floor`` (authors: 19.5 dB).

Dual inversion (Learn-to-Steer): each image is read twice, with the POSITIVE prompt (its true
relation) and with a NEGATIVE one (a random wrong relation), and both map pairs are labelled with
the true relation, so that a classifier cannot learn to read the relation word off the maps.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .capture import select_layers, stack_layers
from .classifier import step_index
from .relations import RELATIONS, label_indices
from .prompts import parse_prompt
from .replay import DenoiserCall


# the attribute class (the authors' "is"): "a white dog" read as (white, is, dog), the attribute's
# and the object's tokens as the two maps; optional, beside the spatial relations
ATTRIBUTE = "is"


def relation_prompt(subject: str, relation: str, obj: str) -> str:
    """The prompt template both inversions use: "a {subject} {relation} a {object}"; for the
    attribute class "a {attribute} {object}"."""
    if relation == ATTRIBUTE:
        return f"a {subject} {obj}"
    return f"a {subject} {relation} a {obj}"


def attribute_tokens(tokenizer: Any, attribute: str, obj: str) -> list[list[int]]:
    """Token indices of the attribute and of the object in ``relation_prompt(attribute, "is", obj)``."""
    from .prompts import token_indices
    prompt = relation_prompt(attribute, ATTRIBUTE, obj)
    a0 = 2
    o0 = a0 + len(attribute) + 1
    return [list(token_indices(tokenizer, prompt, (a0, a0 + len(attribute)))),
            list(token_indices(tokenizer, prompt, (o0, o0 + len(obj))))]


def wrong_relation(relation: str, rng: np.random.Generator, relations: Sequence[str] = RELATIONS) -> str:
    return str(rng.choice([r for r in relations if r != relation]))


@dataclass
class MapDataset:
    """Maps [N, 2, S, S] (float32), labels [N] (index into ``relations``), classifier step index
    [N], which inversion made each row (0 positive, 1 negative) and the source image of each row."""
    maps: np.ndarray
    labels: np.ndarray
    steps: np.ndarray
    inversion: np.ndarray
    image: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, rows: np.ndarray) -> "MapDataset":
        return MapDataset(self.maps[rows], self.labels[rows], self.steps[rows], self.inversion[rows], self.image[rows],
                          dict(self.meta))

    def positive_only(self) -> "MapDataset":
        """Single inversion: the rows made with the true relation in the prompt."""
        return self.subset(np.flatnonzero(self.inversion == 0))

    def tensors(self) -> dict[str, np.ndarray]:
        """The stored form (safetensors): maps as float16, the rest as int32 / int8."""
        return {"maps": self.maps.astype(np.float16), "labels": self.labels.astype(np.int32),
                "steps": self.steps.astype(np.int32), "inversion": self.inversion.astype(np.int8),
                "image": self.image.astype(np.int32)}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray], meta: dict) -> "MapDataset":
        """The inverse of ``tensors`` (maps back to float32)."""
        return cls(t["maps"].astype(np.float32), t["labels"], t["steps"], t["inversion"], t["image"], meta)

    def save(self, path: str | Path) -> Path:
        """``path``.safetensors (maps as float16) + ``path``.json (metadata)."""
        from safetensors.numpy import save_file
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(self.tensors(), str(path.with_suffix(".safetensors")))
        path.with_suffix(".json").write_text(json.dumps(self.meta, indent=1, sort_keys=True))
        return path.with_suffix(".safetensors")

    @classmethod
    def load(cls, path: str | Path) -> "MapDataset":
        from safetensors.numpy import load_file
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").exists() else {}
        return cls.from_tensors(load_file(str(path.with_suffix(".safetensors"))), meta)

    @staticmethod
    def concat(parts: Sequence["MapDataset"], renumber_images: bool = True) -> "MapDataset":
        """The parts' rows in order; image ids renumbered so that the parts' images stay apart
        (``renumber_images=False``: kept as they are, e.g. global ids of shards)."""
        offset, images = 0, []
        for p in parts:
            images.append(p.image + offset)
            if renumber_images:
                offset += int(p.image.max()) + 1 if len(p) else 0
        return MapDataset(np.concatenate([p.maps for p in parts]), np.concatenate([p.labels for p in parts]),
                          np.concatenate([p.steps for p in parts]), np.concatenate([p.inversion for p in parts]),
                          np.concatenate(images), dict(parts[0].meta) if parts else {})


INVERSION_MODES = ("noise", "ddim", "fixed-point")


class MapInverter:
    """Reads subject/object maps of images through a pipeline's denoiser.

    Args:
        pipe: a diffusers pipeline that ``l2s.steer`` steers: a DDPM-family scheduler (one with
            ``alphas_cumprod``: shapes, SD 1.x/2.x, SDXL) or a rectified-flow one (Flux, SD3).
        map_size: side of the classifier's maps; blocks/sides/layers: the capture's layer choice
            (keep it equal to the steering hook's).
        num_inference_steps: the schedule whose step indices the maps are labelled with;
            ``n_steps``: the classifier's step-embedding range (``classifier.step_index``).
        mode: "noise", "ddim" or "fixed-point" (module doc); rectified flow: "noise" only.
        image_size: the side of the images (the probe asks the pipeline for this size).
        psnr_floor: with "fixed-point", images whose reconstruction is under it (dB) are dropped.
        stack: read per-(layer, head) map stacks [2, C, S, S] of every cross-attention layer in the
            family's stack order (the authors' transformer's input, as ``Steerer`` captures it for
            such a classifier) instead of layer- and head-averaged maps; rows are then labelled
            with the denoising-step index itself (the transformer's embedding row).
    """

    def __init__(self, pipe: Any, map_size: int = 16, num_inference_steps: int = 25, n_steps: int = 50,
                 mode: str = "noise", blocks: Sequence[str] | None = None, sides: Sequence[int] | None = None,
                 layers: Sequence[str] | None = None, image_size: int | None = None,
                 fixed_point_iterations: int = 5, psnr_floor: float | None = None, stack: bool = False):
        if mode not in INVERSION_MODES:
            raise ValueError(f"mode must be one of {INVERSION_MODES}, got {mode!r}")
        self.flow = not hasattr(pipe.scheduler, "alphas_cumprod")
        if self.flow and not hasattr(pipe.scheduler, "sigmas"):
            raise TypeError(f"{type(pipe.scheduler).__name__} has neither alphas_cumprod nor sigmas: "
                            "inversion needs a DDPM-family or a rectified-flow scheduler")
        if self.flow and mode != "noise":
            raise ValueError(f"{type(pipe.scheduler).__name__} is a rectified-flow scheduler: invert with mode='noise' "
                             "(the straight line from the image to the noise)")
        if psnr_floor is not None and mode != "fixed-point":
            raise ValueError("psnr_floor needs mode='fixed-point' (the only mode that reconstructs the image)")
        if fixed_point_iterations < 0:
            raise ValueError(f"fixed_point_iterations must be >= 0, got {fixed_point_iterations}")
        self.pipe, self.map_size, self.mode = pipe, map_size, mode
        self.num_inference_steps, self.n_steps = num_inference_steps, n_steps
        self.image_size, self.fixed_point_iterations, self.psnr_floor = image_size, fixed_point_iterations, psnr_floor
        self.last_psnr: float | None = None
        self.replay = DenoiserCall(pipe)
        self.stack = stack
        self.layers = stack_layers(self.replay.denoiser, layers) if stack else \
            select_layers(self.replay.denoiser, blocks, sides, layers)
        self.tokenizer = self.replay.adapter.object_tokenizer(pipe)   # the steerer's choice (Flux: T5)

    def close(self) -> None:
        self.replay.remove()

    def __enter__(self) -> "MapInverter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def meta(self) -> dict:
        """What the maps come from: travels with datasets and the classifiers trained on them."""
        meta = {"model": type(self.replay.denoiser).__name__, "family": self.replay.adapter.family,
                "layers": [l.name for l in self.layers], "map_size": self.map_size,
                "num_inference_steps": self.num_inference_steps, "n_steps": self.n_steps, "inversion_mode": self.mode}
        if self.mode == "fixed-point":
            meta.update(fixed_point_iterations=self.fixed_point_iterations, psnr_floor=self.psnr_floor)
        meta["map_kind"] = "stack" if self.stack else "averaged"
        if self.stack:
            meta["input_channels"] = sum(int(getattr(l.module, "heads", 0)) for l in self.layers)
        return meta

    def encode(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images [B, H, W, 3] -> the pipeline's clean latents x0."""
        den = self.replay.denoiser
        # a float copy: images read from a PNG are read-only arrays, which torch will not wrap
        x = torch.from_numpy(np.array(images, dtype=np.float32)).permute(0, 3, 1, 2) / 127.5 - 1
        x = x.to(den.device)
        vae = getattr(self.pipe, "vae", None)
        if vae is None:                                    # pixel-space model (the shapes world)
            return x.to(den.dtype)
        with torch.no_grad():
            z = vae.encode(x.to(vae.dtype)).latent_dist.mean
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        z = ((z - shift) * vae.config.scaling_factor).to(den.dtype)
        return self.replay.adapter.pack_latents(self.pipe, z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Clean latents (UNet layout) -> images in [-1, 1] [B, 3, H, W] (pixel models: as they are)."""
        vae = getattr(self.pipe, "vae", None)
        if vae is None:
            return z.float()
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        with torch.no_grad():
            return vae.decode((z / vae.config.scaling_factor + shift).to(vae.dtype)).sample.float()

    def _probe_kwargs(self) -> dict:
        import inspect
        kwargs = {"num_inference_steps": self.num_inference_steps}
        params = inspect.signature(self.pipe.__call__).parameters
        if self.image_size and "height" in params and "width" in params:
            kwargs.update(height=self.image_size, width=self.image_size)
        return kwargs

    def _call_at(self, z: torch.Tensor, t, recorded_t) -> tuple[dict, tuple[int, int], int]:
        """The recorded (probed) denoiser call, conditional half, replayed on latent z at timestep t."""
        return self.replay.with_sample(self.replay.arguments(1, t, recorded_t), z, t, self.pipe.scheduler)

    def _alpha(self, t) -> float:
        return float(self.pipe.scheduler.alphas_cumprod[int(t)])

    def _x0_eps(self, out: torch.Tensor, z: torch.Tensor, a: float) -> tuple[torch.Tensor, torch.Tensor]:
        kind = self.pipe.scheduler.config.prediction_type
        if kind == "epsilon":
            return (z - (1 - a) ** 0.5 * out) / a ** 0.5, out
        if kind == "v_prediction":
            return a ** 0.5 * z - (1 - a) ** 0.5 * out, (1 - a) ** 0.5 * z + a ** 0.5 * out
        raise ValueError(f"prediction type {kind!r} not supported by DDIM inversion")

    @torch.no_grad()
    def read(self, x0: torch.Tensor, prompt: str, step_indices: Sequence[int],
             generator: torch.Generator | None = None, tokens: list[list[int]] | None = None) -> np.ndarray:
        """Maps [len(step_indices), 2, S, S] of one image (x0 [1, C, H, W]) under ``prompt``,
        whose first two objects are the subject and the object (``tokens``: the two token groups
        given instead, e.g. an attribute and its object)."""
        if tokens is None:
            parsed = parse_prompt(prompt, self.tokenizer)
            if len(parsed.objects) < 2:
                raise ValueError(f"{prompt!r} names fewer than two objects")
            tokens = [list(parsed.objects[0].tokens), list(parsed.objects[1].tokens)]
        self.replay.probe(self.pipe, prompt, **self._probe_kwargs())          # records the call
        timesteps = self.pipe.scheduler.timesteps
        t0 = timesteps[0]
        out = []
        if self.mode == "noise":
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
            for i in step_indices:
                t = timesteps[i]
                if self.flow:                              # rectified flow: the straight line
                    sigma = float(self.pipe.scheduler.sigmas[i])
                    z = ((1 - sigma) * x0.float() + sigma * noise.float()).to(x0.dtype)
                else:
                    z = self.pipe.scheduler.add_noise(x0, noise, t.reshape(1))
                out.append(self._maps(z, t, t0, tokens))
            return np.concatenate(out)
        if self.mode == "fixed-point":
            return self._read_fixed_point(x0, step_indices, tokens, t0)
        # DDIM inversion: walk the model's deterministic path from x0 to ever noisier steps. The
        # first move (from the clean image) evaluates the model on x0 at the first target step, as
        # DDIM inversion usually does; later moves use the prediction at the current step.
        wanted = {int(i) for i in step_indices}
        by_index, z, a_cur, t_cur = {}, x0, 1.0, None     # the clean image sits at alpha 1
        for i in range(len(timesteps) - 1, min(wanted) - 1, -1):       # least noisy step first
            t, a = timesteps[i], self._alpha(timesteps[i])
            eps = self._eps(z, t if t_cur is None else t_cur, t0)
            z, a_cur, t_cur = ddim_move(z.float(), a_cur, a, eps).to(x0.dtype), a, t
            if i in wanted:
                by_index[i] = self._maps(z, t, t0, tokens)
        return np.concatenate([by_index[int(i)] for i in step_indices])

    def _eps(self, z: torch.Tensor, t, t0) -> torch.Tensor:
        """The model's noise prediction at (z, t), conditional only."""
        c, _, _ = self._call_at(z, t, t0)
        return self._x0_eps(self.replay.run(c)[0].float(), z.float(), self._alpha(t))[1]

    def _read_fixed_point(self, x0: torch.Tensor, step_indices: Sequence[int], tokens, t0) -> np.ndarray:
        """Fixed-point DDIM inversion up to the noisiest wanted step, DDIM reconstruction down to the
        image reading the maps; sets ``last_psnr``."""
        timesteps = self.pipe.scheduler.timesteps
        wanted, top = {int(i) for i in step_indices}, min(int(i) for i in step_indices)
        z_prev, a_prev = x0.float(), 1.0                   # the clean image sits at alpha 1
        for i in range(len(timesteps) - 1, top - 1, -1):   # least noisy step first
            t, a = timesteps[i], self._alpha(timesteps[i])
            # plain DDIM inversion (the noise predicted at the previous latent), then z = f(z): the
            # step's noise predicted at its own latent
            z = ddim_move(z_prev, a_prev, a, self._eps(z_prev.to(x0.dtype), t, t0))
            for _ in range(self.fixed_point_iterations):
                z = ddim_move(z_prev, a_prev, a, self._eps(z.to(x0.dtype), t, t0))
            z_prev, a_prev = z, a
        by_index, z = {}, z_prev
        for i in range(top, len(timesteps)):               # reconstruction, guidance 1
            t, a = timesteps[i], self._alpha(timesteps[i])
            if i in wanted:
                by_index[i] = self._maps(z.to(x0.dtype), t, t0, tokens)
            a_next = self._alpha(timesteps[i + 1]) if i + 1 < len(timesteps) else 1.0
            z = ddim_move(z, a, a_next, self._eps(z.to(x0.dtype), t, t0))
        self.last_psnr = psnr(self.decode(z.to(x0.dtype)), self.decode(x0))
        return np.concatenate([by_index[int(i)] for i in step_indices])

    def _maps(self, z: torch.Tensor, t, t0, tokens) -> np.ndarray:
        c, grid, n_text = self._call_at(z, t, t0)
        with self.replay.capture_maps(c, self.layers, tokens, grid, n_text, self.map_size, stack=self.stack) as (x, _):
            return x.float().cpu().numpy()

    def step_label(self, i: int) -> int:
        """The classifier's step row of denoising step i: the MLP's embedding range, or (stacks, the
        authors' network) the step index itself."""
        return int(i) if self.stack else step_index(i, self.num_inference_steps, self.n_steps)


def ddim_move(z: torch.Tensor, a_from: float, a_to: float, eps: torch.Tensor) -> torch.Tensor:
    """The deterministic DDIM move of latent z from cumulative alpha a_from to a_to with noise eps
    (both ways: a_to < a_from inverts, a_to = 1 lands on the clean estimate)."""
    return a_to ** 0.5 * (z - (1 - a_from) ** 0.5 * eps) / a_from ** 0.5 + (1 - a_to) ** 0.5 * eps


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Peak signal-to-noise ratio (dB) of images in [-1, 1] against a reference (peak 1 on [0, 1])."""
    mse = float((((images.clamp(-1, 1) - reference.clamp(-1, 1)) / 2) ** 2).mean())
    return float("inf") if mse == 0 else 10 * float(np.log10(1 / mse))


@dataclass
class RelationExample:
    """An image with two named objects and the relation that holds between them ("subject rel object")."""
    image: np.ndarray                 # uint8 [H, W, 3]
    subject: str
    object: str
    relation: str


def build_dataset(inverter: MapInverter, examples: Sequence[RelationExample], step_indices: Sequence[int],
                  dual: bool = True, seed: int = 0, progress: bool = True,
                  relations: Sequence[str] = RELATIONS, first_index: int = 0) -> MapDataset:
    """Maps of every example at every step index: with the positive prompt, and (``dual``) with a
    negative prompt naming a random wrong relation; all rows labelled with the true relation, as
    an index into ``relations`` (the class order of the classifier to be trained; kept in meta).

    ``examples[n]`` is source item ``first_index + n``: its image id, its noise and its wrong
    relation depend on that index and ``seed`` only, so a dataset made in pieces (``map_shards``)
    equals the one made at once."""
    from tqdm.auto import tqdm
    k = len(step_indices)
    step_rows = np.array([inverter.step_label(i) for i in step_indices], np.int32)
    maps, labels, steps, inv, image, dropped = [], [], [], [], [], []
    for n, ex in enumerate(tqdm(examples, desc="invert", disable=not progress or None, leave=False), start=first_index):
        x0 = inverter.encode(ex.image[None])
        label = label_indices([ex.relation], relations)[0]
        prompts = [relation_prompt(ex.subject, ex.relation, ex.object)]
        tokens = attribute_tokens(inverter.tokenizer, ex.subject, ex.object) if ex.relation == ATTRIBUTE else None
        if dual and tokens is None:                      # an attribute row has no wrong-relation twin
            rng = np.random.default_rng((seed, n))
            spatial = [r for r in relations if r != ATTRIBUTE]
            prompts.append(relation_prompt(ex.subject, wrong_relation(ex.relation, rng, spatial), ex.object))
        reads = []
        for prompt in prompts:
            # the same noise for both prompts: the rows of an image differ by the prompt only
            gen = torch.Generator().manual_seed(seed * 1_000_003 + n)
            reads.append(inverter.read(x0, prompt, step_indices, generator=gen, tokens=tokens))
            if inverter.psnr_floor is not None and inverter.last_psnr < inverter.psnr_floor:
                break                                    # a poor reconstruction: the image is dropped
        if len(reads) < len(prompts):
            dropped.append(n)
            continue
        for kind, m in enumerate(reads):
            maps.append(m)
            labels.append(np.full(k, label, np.int32))
            steps.append(step_rows)
            inv.append(np.full(k, kind, np.int8))
            image.append(np.full(k, n, np.int32))
    meta = {**inverter.meta(), "relations": list(relations), "dual": dual, "step_indices": [int(i) for i in step_indices],
            "seed": seed, "n_examples": len(examples), "dropped_psnr": dropped}
    if not maps:                                         # every image dropped: an empty dataset, same layout
        S = inverter.map_size
        shape = (0, 2, meta["input_channels"], S, S) if inverter.stack else (0, 2, S, S)
        return MapDataset(np.zeros(shape, np.float32), np.zeros(0, np.int32), np.zeros(0, np.int32),
                          np.zeros(0, np.int8), np.zeros(0, np.int32), meta)
    return MapDataset(np.concatenate(maps), np.concatenate(labels), np.concatenate(steps), np.concatenate(inv),
                      np.concatenate(image), meta)
