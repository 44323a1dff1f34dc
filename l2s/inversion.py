"""Relation-classifier training data: attention maps of known images, inverted through the model.

An image whose (subject, relation, object) is known is brought to a denoising step's latent —
by noising it (``mode="noise"``: one forward per step) or by DDIM inversion (``mode="ddim"``: the
model's own deterministic path, one forward per step on the way) — and the denoiser is run on it
with a prompt naming the two objects; the capture of ``l2s.capture`` (the very layers and map
preparation the steering hook uses) reads the subject's and object's maps.

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

from .capture import select_layers
from .classifier import step_index
from .relations import RELATIONS, label_indices
from .prompts import parse_prompt
from .replay import DenoiserCall


def relation_prompt(subject: str, relation: str, obj: str) -> str:
    """The prompt template both inversions use: "a {subject} {relation} a {object}"."""
    return f"a {subject} {relation} a {obj}"


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

    def save(self, path: str | Path) -> Path:
        """``path``.safetensors (maps as float16) + ``path``.json (metadata)."""
        from safetensors.numpy import save_file
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"maps": self.maps.astype(np.float16), "labels": self.labels.astype(np.int32),
                   "steps": self.steps.astype(np.int32), "inversion": self.inversion.astype(np.int8),
                   "image": self.image.astype(np.int32)}, str(path.with_suffix(".safetensors")))
        path.with_suffix(".json").write_text(json.dumps(self.meta, indent=1, sort_keys=True))
        return path.with_suffix(".safetensors")

    @classmethod
    def load(cls, path: str | Path) -> "MapDataset":
        from safetensors.numpy import load_file
        path = Path(path)
        t = load_file(str(path.with_suffix(".safetensors")))
        meta = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").exists() else {}
        return cls(t["maps"].astype(np.float32), t["labels"], t["steps"], t["inversion"], t["image"], meta)

    @staticmethod
    def concat(parts: Sequence["MapDataset"]) -> "MapDataset":
        offset, images = 0, []
        for p in parts:
            images.append(p.image + offset)
            offset += int(p.image.max()) + 1 if len(p) else 0
        return MapDataset(np.concatenate([p.maps for p in parts]), np.concatenate([p.labels for p in parts]),
                          np.concatenate([p.steps for p in parts]), np.concatenate([p.inversion for p in parts]),
                          np.concatenate(images), dict(parts[0].meta) if parts else {})


class MapInverter:
    """Reads subject/object maps of images through a pipeline's denoiser.

    Args:
        pipe: a diffusers pipeline (shapes pipeline, SD...: anything ``l2s.steer`` steers with a
            DDPM-family scheduler, i.e. one with ``alphas_cumprod``).
        map_size: side of the classifier's maps; blocks/sides/layers: the capture's layer choice
            (keep it equal to the steering hook's).
        num_inference_steps: the schedule whose step indices the maps are labelled with;
            ``n_steps``: the classifier's step-embedding range (``classifier.step_index``).
        mode: "noise" or "ddim".
    """

    def __init__(self, pipe: Any, map_size: int = 16, num_inference_steps: int = 25, n_steps: int = 50,
                 mode: str = "noise", blocks: Sequence[str] | None = None, sides: Sequence[int] | None = None,
                 layers: Sequence[str] | None = None):
        if mode not in ("noise", "ddim"):
            raise ValueError(f"mode must be 'noise' or 'ddim', got {mode!r}")
        if not hasattr(pipe.scheduler, "alphas_cumprod"):
            raise TypeError(f"{type(pipe.scheduler).__name__} has no alphas_cumprod: inversion needs a DDPM-family scheduler")
        self.pipe, self.map_size, self.mode = pipe, map_size, mode
        self.num_inference_steps, self.n_steps = num_inference_steps, n_steps
        self.replay = DenoiserCall(pipe)
        self.layers = select_layers(self.replay.denoiser, blocks, sides, layers)
        self.tokenizer = self.replay.adapter.object_tokenizer(pipe)   # the steerer's choice (Flux: T5)

    def close(self) -> None:
        self.replay.remove()

    def __enter__(self) -> "MapInverter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def meta(self) -> dict:
        """What the maps come from: travels with datasets and the classifiers trained on them."""
        return {"model": type(self.replay.denoiser).__name__, "layers": [l.name for l in self.layers],
                "map_size": self.map_size, "num_inference_steps": self.num_inference_steps, "n_steps": self.n_steps,
                "inversion_mode": self.mode}

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
        return ((z - shift) * vae.config.scaling_factor).to(den.dtype)

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
             generator: torch.Generator | None = None) -> np.ndarray:
        """Maps [len(step_indices), 2, S, S] of one image (x0 [1, C, H, W]) under ``prompt``,
        whose first two objects are the subject and the object."""
        parsed = parse_prompt(prompt, self.tokenizer)
        if len(parsed.objects) < 2:
            raise ValueError(f"{prompt!r} names fewer than two objects")
        tokens = [list(parsed.objects[0].tokens), list(parsed.objects[1].tokens)]
        self.replay.probe(self.pipe, prompt, num_inference_steps=self.num_inference_steps)   # records the call
        timesteps = self.pipe.scheduler.timesteps
        t0 = timesteps[0]
        out = []
        if self.mode == "noise":
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
            for i in step_indices:
                t = timesteps[i]
                z = self.pipe.scheduler.add_noise(x0, noise, t.reshape(1))
                out.append(self._maps(z, t, t0, tokens))
            return np.concatenate(out)
        # DDIM inversion: walk the model's deterministic path from x0 to ever noisier steps. The
        # first move (from the clean image) evaluates the model on x0 at the first target step, as
        # DDIM inversion usually does; later moves use the prediction at the current step.
        wanted = {int(i) for i in step_indices}
        by_index, z, t_cur = {}, x0, None
        for i in range(len(timesteps) - 1, min(wanted) - 1, -1):       # least noisy step first
            t = timesteps[i]
            a = self._alpha(t)
            t_eval = t if t_cur is None else t_cur
            c, _, _ = self._call_at(z, t_eval, t0)
            pred = self.replay.run(c)[0]
            x0_pred, eps = self._x0_eps(pred.float(), z.float(), self._alpha(t_eval))
            if t_cur is None:
                x0_pred = x0.float()
            z, t_cur = (a ** 0.5 * x0_pred + (1 - a) ** 0.5 * eps).to(x0.dtype), t
            if i in wanted:
                by_index[i] = self._maps(z, t, t0, tokens)
        return np.concatenate([by_index[int(i)] for i in step_indices])

    def _maps(self, z: torch.Tensor, t, t0, tokens) -> np.ndarray:
        c, grid, n_text = self._call_at(z, t, t0)
        with self.replay.capture_maps(c, self.layers, tokens, grid, n_text, self.map_size) as (x, _):
            return x.float().cpu().numpy()

    def step_label(self, i: int) -> int:
        return step_index(i, self.num_inference_steps, self.n_steps)


@dataclass
class RelationExample:
    """An image with two named objects and the relation that holds between them ("subject rel object")."""
    image: np.ndarray                 # uint8 [H, W, 3]
    subject: str
    object: str
    relation: str


def build_dataset(inverter: MapInverter, examples: Sequence[RelationExample], step_indices: Sequence[int],
                  dual: bool = True, seed: int = 0, progress: bool = True,
                  relations: Sequence[str] = RELATIONS) -> MapDataset:
    """Maps of every example at every step index: with the positive prompt, and (``dual``) with a
    negative prompt naming a random wrong relation; all rows labelled with the true relation, as
    an index into ``relations`` (the class order of the classifier to be trained; kept in meta)."""
    from tqdm.auto import tqdm
    rng = np.random.default_rng(seed)
    maps, labels, steps, inv, image = [], [], [], [], []
    for n, ex in enumerate(tqdm(examples, desc="invert", disable=not progress or None, leave=False)):
        x0 = inverter.encode(ex.image[None])
        label = label_indices([ex.relation], relations)[0]
        prompts = [relation_prompt(ex.subject, ex.relation, ex.object)]
        if dual:
            prompts.append(relation_prompt(ex.subject, wrong_relation(ex.relation, rng, relations), ex.object))
        for kind, prompt in enumerate(prompts):
            # the same noise for both prompts: the rows of an image differ by the prompt only
            gen = torch.Generator().manual_seed(seed * 1_000_003 + n)
            m = inverter.read(x0, prompt, step_indices, generator=gen)
            maps.append(m)
            k = len(step_indices)
            labels.append(np.full(k, label, np.int32))
            steps.append(np.array([inverter.step_label(i) for i in step_indices], np.int32))
            inv.append(np.full(k, kind, np.int8))
            image.append(np.full(k, n, np.int32))
    meta = {**inverter.meta(), "relations": list(relations), "dual": dual, "step_indices": [int(i) for i in step_indices], "seed": seed,
            "n_examples": len(examples)}
    return MapDataset(np.concatenate(maps), np.concatenate(labels), np.concatenate(steps), np.concatenate(inv),
                      np.concatenate(image), meta)
