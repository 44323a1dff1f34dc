"""The relation classifier: reads the spatial relation between two objects from their attention maps.

Its forward, cross-entropy, backward (input and weight gradients) and AdamW update all run in the
``l2s._C`` core (C on the CPU, CUDA on the GPU): no torch autograd. Parameters are one flat float32
buffer; ``parameters()`` gives named views into it. Saved as safetensors + a JSON config.
"""
from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from huggingface_hub import ModelHubMixin

from . import _C
from .core import Array, _is_torch, _prep, _stream, adamw_update, empty
from .relations import RELATIONS, label_indices


@dataclass
class ClassifierConfig:
    """Architecture and provenance of a relation classifier ("mlp" kind).

    Input: ``n_maps`` maps of ``map_size`` x ``map_size`` (subject, object) and a denoising step index
    in ``[0, n_steps)`` embedded in ``step_dim`` dims (0 disables it). Two hidden layers
    Linear -> LayerNorm -> LeakyReLU, then a linear layer to ``len(relations)`` logits.
    ``meta`` records what the maps came from (model, layers, timesteps) and travels with the weights.
    """

    relations: tuple[str, ...] = RELATIONS
    map_size: int = 16
    n_maps: int = 2
    n_steps: int = 50
    step_dim: int = 16
    hidden1: int = 256
    hidden2: int = 128
    leaky_slope: float = 0.1
    ln_eps: float = 1e-5
    kind: str = "mlp"
    meta: dict = field(default_factory=dict)

    def core_fields(self) -> dict:
        """The named fields of the ``l2s._C`` classifier config (``_C.classifier_config(**fields)``)."""
        if self.kind != "mlp":
            raise ValueError(f"classifier kind {self.kind!r} is not implemented in the core (only 'mlp')")
        return dict(n_maps=self.n_maps, map_pixels=self.map_size * self.map_size, n_steps=self.n_steps,
                    step_dim=self.step_dim, hidden1=self.hidden1, hidden2=self.hidden2, n_relations=len(self.relations),
                    leaky_slope=float(self.leaky_slope), ln_eps=float(self.ln_eps))

    def to_json(self) -> str:
        d = asdict(self)
        d["relations"] = list(self.relations)
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ClassifierConfig":
        d = json.loads(text)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown classifier config fields: {sorted(unknown)}")
        d["relations"] = tuple(d.get("relations", RELATIONS))
        return cls(**d)


class RelationClassifier(ModelHubMixin, library_name="l2s", license="other",
                         tags=["learn-to-steer", "relation-classifier", "spatial-relations"]):
    """Relation classifier whose maths runs in ``l2s._C``.

    Saved as a Hub-style folder (``save_pretrained(DIR)``: ``config.json``, ``model.safetensors``,
    ``README.md`` model card; ``from_pretrained(DIR_OR_REPO_ID)`` / ``l2s.load_classifier``;
    ``push_to_hub`` for users with network), or as the older ``STEM.json`` + ``STEM.safetensors``
    pair (``save`` / ``load``).

    One instance may be shared by threads: its passes share a workspace per batch size, so they are
    serialised by a lock (a forward and the backward that reads its activations run as one).

    Args:
        config: the architecture.
        params: optional flat float32 parameters (NumPy array or torch tensor); default: a seeded
            initialisation like torch's (uniform +-1/sqrt(fan_in) for linear layers).
        seed: seed of that initialisation.
    """

    def __init__(self, config: ClassifierConfig | None = None, params: Array | None = None, seed: int = 0):
        self.config = config or ClassifierConfig()
        self._cfg = _C.classifier_config(**self.config.core_fields())       # validated once, by name
        table = _C.classifier_layout(self._cfg)             # the core's parameter table, in buffer order
        self.layout: dict[str, tuple[int, tuple[int, ...]]] = {n: (off, shape) for n, (off, shape, _, _) in table.items()}
        self._init = {n: (init, fan_in) for n, (_, _, init, fan_in) in table.items()}
        n_params = _C.classifier_sizes(self._cfg, 1)[0]
        if params is None:
            params = self._init_params(n_params, seed)
        if tuple(params.shape) != (n_params,):
            raise ValueError(f"params must be a flat float32 array of {n_params} values, got shape {tuple(params.shape)}")
        self.params = params
        self._workspaces: dict[int, Array] = {}
        self._lock = threading.RLock()
        self._adam: tuple[Array, Array] | None = None
        self.adam_step = 0

    # ---- parameters -----------------------------------------------------------------------
    def _init_params(self, n: int, seed: int) -> np.ndarray:
        """Each tensor as the core's table says: U(+-1/sqrt(fan_in)) for linear layers (torch's
        default), ones/zeros for LayerNorm, N(0, 0.1^2) for the step embedding."""
        rng = np.random.default_rng(seed)
        p = np.zeros(n, dtype=np.float32)
        for name, (off, shape) in self.layout.items():
            size = int(np.prod(shape))
            init, fan_in = self._init[name]
            if init == "fan_in_uniform":
                bound = 1.0 / np.sqrt(fan_in)
                p[off: off + size] = rng.uniform(-bound, bound, size)
            elif init == "ones":
                p[off: off + size] = 1.0
            elif init == "normal":
                p[off: off + size] = rng.standard_normal(size) * 0.1
        return p

    @property
    def n_params(self) -> int:
        return int(self.params.shape[0])

    def parameters(self) -> dict[str, Array]:
        """Named views (not copies) into the flat parameter buffer."""
        return {name: self.params[off: off + int(np.prod(shape))].reshape(shape)
                for name, (off, shape) in self.layout.items()}

    def to(self, device: Any) -> "RelationClassifier":
        """Move the parameters to a torch device (e.g. "cuda"); needs torch."""
        import torch
        p = self.params if _is_torch(self.params) else torch.from_numpy(np.asarray(self.params))
        if _is_torch(self.params) and p.device == torch.device(device):
            return self                                  # already there: keep workspaces and optimiser state
        self.params = p.to(device=device, dtype=torch.float32).contiguous()
        self._workspaces.clear()
        self._adam = None
        return self

    # ---- the loss protocol (``losses.RelationLoss``) --------------------------------------------
    @property
    def relations(self) -> tuple[str, ...]:
        """Class order of the probabilities and labels."""
        return tuple(self.config.relations)

    @property
    def map_size(self) -> int:
        return int(self.config.map_size)

    @property
    def n_maps(self) -> int:
        return int(self.config.n_maps)

    @property
    def meta(self) -> dict:
        """Provenance and recommended steering settings (the config's ``meta``, the same dict)."""
        return self.config.meta

    def step_row(self, step: int, num_steps: int) -> int:
        """Step-embedding row of denoising step ``step`` of ``num_steps`` (``step_index``)."""
        return step_index(step, num_steps, self.config.n_steps)

    def losses_and_grad(self, maps: Array, labels: Any, steps: Any = None) -> tuple[Array, Array, Array]:
        """Per-sample cross-entropy [B], its gradient summed over samples w.r.t. the maps (maps'
        shape; sample b's row is d loss_b / d maps_b) and the probabilities. Weights are untouched."""
        losses, dmean, probs = self._loss_grad(maps, labels, steps)
        return losses, dmean * int(maps.shape[0]), probs          # the C op differentiates the batch mean

    # ---- passes ---------------------------------------------------------------------------
    def _workspace(self, batch: int) -> Array:
        ws = self._workspaces.get(batch)
        if ws is None:
            ws = empty((_C.classifier_sizes(self._cfg, batch)[1],), "float32", like=self.params)
            self._workspaces = {batch: ws}   # keep one: the last batch size
        return ws

    @staticmethod
    def _host_int32(v: Any, batch: int, name: str) -> np.ndarray | None:
        if v is None:
            return None
        if _is_torch(v):
            v = v.detach().cpu().numpy()
        a = np.asarray(v)
        if a.ndim == 0:
            a = np.full(batch, int(a))
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name} must hold integers, got {a.dtype}")
        return np.ascontiguousarray(a, dtype=np.int32)

    def _check_x(self, x: Array) -> Array:
        x = _prep(x)
        if x.ndim == 4 and x.shape[1] == self.config.n_maps:
            x = x.reshape(x.shape[0], -1)
        return x

    def forward(self, x: Array, steps: Any = None, labels: Any = None) -> tuple[Array, Array | None]:
        """Class probabilities [B, R] for maps x [B, n_maps, S, S] (or [B, n_maps*S*S]), and the
        per-sample cross-entropy [B] when labels (int [B]) are given."""
        with self._lock:
            return self._forward(x, steps, labels)

    def _forward(self, x: Array, steps: Any, labels: Any) -> tuple[Array, Array | None]:
        x = self._check_x(x)
        B = int(x.shape[0])
        steps = self._host_int32(steps, B, "steps")
        labels = self._host_int32(labels, B, "labels")
        probs = empty((B, len(self.config.relations)), "float32", like=x)
        losses = empty((B,), "float32", like=x) if labels is not None else None
        _C.classifier_forward(self._cfg, self.params, x, steps, labels, self._workspace(B), probs, losses,
                                stream=_stream(x))
        return probs, losses

    __call__ = forward

    def loss_and_input_grad(self, x: Array, labels: Any, steps: Any = None) -> tuple[float, Array, Array]:
        """For steering: mean cross-entropy toward ``labels``, its gradient w.r.t. the maps x
        (same shape as x), and the probabilities. Weights are not touched."""
        losses, dx, probs = self._loss_grad(x, labels, steps)
        return float(losses.mean()), dx, probs

    def _loss_grad(self, x: Array, labels: Any, steps: Any) -> tuple[Array, Array, Array]:
        """Per-sample losses, d(mean loss)/dx in x's shape, probabilities."""
        x_shape = tuple(x.shape)
        xf = self._check_x(x)
        B = int(xf.shape[0])
        with self._lock:                          # the backward reads the forward's activations
            probs, losses = self._forward(xf, steps, labels)
            dx = empty(tuple(xf.shape), "float32", like=xf)
            _C.classifier_backward(self._cfg, self.params, self._host_int32(steps, B, "steps"),
                                     self._host_int32(labels, B, "labels"), self._workspace(B), dx, None,
                                     stream=_stream(xf))
        return losses, dx.reshape(x_shape), probs

    def snapshot(self) -> Array:
        """A copy of the parameters (``restore`` puts it back): the best epoch of a training run."""
        return self.params.clone() if _is_torch(self.params) else np.array(self.params, copy=True)

    def restore(self, snapshot: Array) -> None:
        """Put back parameters taken by ``snapshot``."""
        self.params[:] = snapshot

    def train_step(self, x: Array, labels: Any, steps: Any = None, lr: float = 1e-4,
                   weight_decay: float = 0.05, betas: tuple[float, float] = (0.9, 0.999)) -> float:
        """One AdamW step on a batch; returns the batch's mean loss before the step."""
        xf = self._check_x(x)
        B = int(xf.shape[0])
        steps_h = self._host_int32(steps, B, "steps")
        labels_h = self._host_int32(labels, B, "labels")
        with self._lock:
            _, losses = self._forward(xf, steps_h, labels_h)
            grads = _zeros_like(self.params)
            _C.classifier_backward(self._cfg, self.params, steps_h, labels_h, self._workspace(B), None, grads,
                                     stream=_stream(xf))
            if self._adam is None:
                self._adam = (_zeros_like(self.params), _zeros_like(self.params))
            self.adam_step += 1
            adamw_update(self.params, grads, *self._adam, lr=lr, step=self.adam_step, betas=betas,
                       weight_decay=weight_decay)
        return float(losses.mean())

    def predict(self, x: Array, steps: Any = None) -> list[str]:
        """Most probable relation name per sample."""
        probs, _ = self.forward(x, steps)
        idx = np.asarray(probs.cpu() if _is_torch(probs) else probs).argmax(axis=1)
        return [self.config.relations[i] for i in idx]

    # ---- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path.safetensors`` (named tensors) and ``path.json`` (config). Returns the stem."""
        stem = Path(path).with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
        self.save_weights(stem.with_suffix(".safetensors"))
        stem.with_suffix(".json").write_text(self.config.to_json())
        return stem

    def save_weights(self, path: str | Path) -> None:
        """The named parameter tensors (``fc1.weight``, ...) as one safetensors file."""
        from safetensors.numpy import save_file
        host = self.params.detach().cpu().numpy() if _is_torch(self.params) else np.asarray(self.params)
        tensors = {name: np.ascontiguousarray(host[off: off + int(np.prod(shape))].reshape(shape))
                   for name, (off, shape) in self.layout.items() if int(np.prod(shape)) > 0}
        save_file(tensors, str(path), metadata={"format": "l2s-classifier"})

    @classmethod
    def load(cls, path: str | Path) -> "RelationClassifier":
        """Read a classifier written by ``save`` (``STEM.json`` + ``STEM.safetensors``)."""
        stem = Path(path).with_suffix("")
        return cls.from_files(stem.with_suffix(".json"), stem.with_suffix(".safetensors"))

    @classmethod
    def from_files(cls, config_json: str | Path, weights: str | Path) -> "RelationClassifier":
        """A classifier from its JSON config and safetensors weights. The config is checked against
        the safetensors header (names, shapes, dtypes) before anything is allocated, so a config that
        does not match its weights (or asks for absurd sizes) is refused without allocating them."""
        from safetensors import safe_open
        config = ClassifierConfig.from_json(Path(config_json).read_text())
        cfg = _C.classifier_config(**config.core_fields())             # validates the sizes; allocates nothing
        layout = {n: (off, tuple(shape)) for n, (off, shape, _, _) in _C.classifier_layout(cfg).items()}
        with safe_open(str(weights), framework="numpy") as f:
            names = set(f.keys())
            for name, (_, shape) in layout.items():
                if int(np.prod(shape)) == 0:
                    continue
                if name not in names:
                    raise ValueError(f"{weights} lacks tensor {name!r}")
                sl = f.get_slice(name)
                if tuple(sl.get_shape()) != shape or sl.get_dtype() != "F32":
                    raise ValueError(f"{name}: {sl.get_dtype()} {tuple(sl.get_shape())} in the file, float32 {shape} "
                                     "in the config")
            n_params = _C.classifier_sizes(cfg, 1)[0]
            params = np.zeros(n_params, np.float32)
            for name, (off, shape) in layout.items():
                size = int(np.prod(shape))
                if size:
                    params[off: off + size] = f.get_tensor(name).reshape(-1)
        return cls(config, params=params)

    # ---- the Hub folder layout (huggingface_hub.ModelHubMixin) -------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        from .hub import write_folder
        write_folder(self, Path(save_directory))

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None = None, cache_dir: Any = None,
                         force_download: bool = False, local_files_only: bool = False, token: Any = None,
                         **_: Any) -> "RelationClassifier":
        from .hub import folder_files
        config_json, weights = folder_files(model_id, revision=revision, cache_dir=cache_dir,
                                            force_download=force_download, local_files_only=local_files_only,
                                            token=token)
        return cls.from_files(config_json, weights)


def _zeros_like(a: Array) -> Array:
    if _is_torch(a):
        import torch
        return torch.zeros_like(a)
    return np.zeros_like(a)


def step_index(step: int, num_steps: int, n_steps: int) -> int:
    """The classifier's step-embedding index of denoising step ``step`` of ``num_steps``: the
    schedule mapped onto ``[0, n_steps)`` (so maps from 25- and 50-step runs share embeddings)."""
    return min(n_steps - 1, round(step * n_steps / num_steps))


def relation_index(config: ClassifierConfig, relations: Sequence[str]) -> np.ndarray:
    """Indices of relation names in the config's relation list (int32)."""
    return np.array(label_indices(relations, config.relations), dtype=np.int32)
