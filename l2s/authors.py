"""The authors' relation classifiers (Learn-to-Steer's released ``sd14.pth``, ``flux_dev.pth`` ...):
conversion to a classifier folder and their network, written from the equations in
``shared/authors-format.md`` (facts only; none of their code).

    python -m l2s convert-checkpoint sd14.pth --out sd14-classifier
    clf = l2s.load_classifier("sd14-classifier")        # -> AuthorsClassifier
    probs = clf.forward(maps, steps)                     # maps [B, 2, C, 16, 16], steps: embedding rows

The checkpoint is opened ONLY with ``torch.load(weights_only=True, map_location="cpu")``: a pickle
that needs anything but tensors and plain containers is refused and never executed. The network's
equations are written here in torch (``authors_logits``): the reference the fused C pass
(``authors_net``, what a CPU runs) is tested against, and what runs on a GPU.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .hub import CARD, CONFIG, WEIGHTS, card_front_matter
from .relations import PHRASES

KIND = "authors-transformer"
KEYS = {"model_state_dict", "rel_name_to_idx", "idx_to_rel_name", "input_channels", "config", "training_config"}


class CheckpointError(ValueError):
    """The file is not one of the authors' classifier checkpoints (what is wrong is named)."""


# ---------------------------------------------------------------------------------------------
# reading and converting a checkpoint

def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, loaded with ``weights_only=True`` (no arbitrary unpickling, ever)."""
    path = Path(path)
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:                # UnpicklingError for unsafe pickles, RuntimeError for broken zips
        raise CheckpointError(f"{path}: not a checkpoint l2s can open safely ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300]})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: holds a {type(ckpt).__name__}, not the authors' checkpoint dict")
    missing = sorted(k for k in ("model_state_dict", "config") if k not in ckpt)
    if missing:
        raise CheckpointError(f"{path}: lacks {', '.join(missing)} (keys: {sorted(ckpt)})")
    return ckpt


def expected_shapes(config: dict, input_channels: int, n_classes: int) -> dict[str, tuple[int, ...]]:
    """Every state-dict tensor of the authors' network for ``config`` (authors-format.md §2)."""
    d, T = int(config.get("d_model", 256)), int(config.get("num_timesteps", 50))
    ex, cl = config["extractor"], config["classifier"]
    S2 = int(config.get("map_size", 16)) ** 2
    shapes: dict[str, tuple[int, ...]] = {
        "object_extractor.query_vector": (1, 1, d),
        "object_extractor.input_projection.weight": (d, S2), "object_extractor.input_projection.bias": (d,),
        "object_extractor.timestep_embedding.weight": (T, d),
        "object_extractor.positional_encoding.pe": (1, input_channels, d),
    }

    def encoder(prefix: str, layers: int, ff: int) -> None:
        for i in range(layers):
            p = f"{prefix}.transformer.layers.{i}"
            shapes.update({f"{p}.self_attn.in_proj_weight": (3 * d, d), f"{p}.self_attn.in_proj_bias": (3 * d,),
                           f"{p}.self_attn.out_proj.weight": (d, d), f"{p}.self_attn.out_proj.bias": (d,),
                           f"{p}.linear1.weight": (ff, d), f"{p}.linear1.bias": (ff,),
                           f"{p}.linear2.weight": (d, ff), f"{p}.linear2.bias": (d,),
                           f"{p}.norm1.weight": (d,), f"{p}.norm1.bias": (d,),
                           f"{p}.norm2.weight": (d,), f"{p}.norm2.bias": (d,)})
    encoder("object_extractor", int(ex["num_layers"]), int(ex["dim_feedforward"]))
    shapes.update({"object_extractor.layer_attention.in_proj_weight": (3 * d, d),
                   "object_extractor.layer_attention.in_proj_bias": (3 * d,),
                   "object_extractor.layer_attention.out_proj.weight": (d, d),
                   "object_extractor.layer_attention.out_proj.bias": (d,),
                   "object_extractor.output_projection.weight": (S2, d),
                   "object_extractor.output_projection.bias": (S2,)})
    E = int(cl.get("timestep_embedding_dim", 16))
    shapes.update({"relation_classifier.timestep_embedding.weight": (T, E),
                   "relation_classifier.positional_encoding.pe": (1, d, d),
                   "relation_classifier.projection.weight": (d, 2 * S2), "relation_classifier.projection.bias": (d,)})
    encoder("relation_classifier", int(cl["num_layers"]), int(cl["dim_feedforward"]))
    shapes.update({"relation_classifier.fc.0.weight": (d, d + E), "relation_classifier.fc.0.bias": (d,),
                   "relation_classifier.fc.1.weight": (d,), "relation_classifier.fc.1.bias": (d,),
                   "relation_classifier.fc.4.weight": (d // 2, d), "relation_classifier.fc.4.bias": (d // 2,),
                   "relation_classifier.fc.5.weight": (d // 2,), "relation_classifier.fc.5.bias": (d // 2,),
                   "relation_classifier.fc.8.weight": (n_classes, d // 2),
                   "relation_classifier.fc.8.bias": (n_classes,)})
    return shapes


def _relations(ckpt: dict) -> list[str]:
    """Class names in the checkpoint's index order (``idx_to_rel_name``, else ``rel_name_to_idx``)."""
    if isinstance(ckpt.get("idx_to_rel_name"), dict):
        pairs = {int(k): str(v) for k, v in ckpt["idx_to_rel_name"].items()}
    elif isinstance(ckpt.get("rel_name_to_idx"), dict):
        pairs = {int(v): str(k) for k, v in ckpt["rel_name_to_idx"].items()}
    else:
        raise CheckpointError("the checkpoint names no classes (idx_to_rel_name / rel_name_to_idx)")
    if sorted(pairs) != list(range(len(pairs))):
        raise CheckpointError(f"class indices {sorted(pairs)} are not 0..{len(pairs) - 1}")
    return [pairs[i] for i in range(len(pairs))]


def guess_family(config: dict) -> str:
    """The model the checkpoint's shape points to (SD 1.4 and 2.1 share a layout: say "sd")."""
    if int(config.get("num_timesteps", 50)) == 4:
        return "flux-schnell"
    return "flux-dev" if int(config["extractor"]["num_layers"]) == 4 else "sd"


def convert_checkpoint(path: str | Path, out: str | Path, family: str | None = None) -> Path:
    """Write ``out``: config.json (the authors' config and training config, classes in the
    checkpoint's order, step mapping, input channels, map sizes, model family, source hash),
    model.safetensors (the state dict by the authors' names, float32) and a README.md card."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    config, state = ckpt["config"], ckpt["model_state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: model_state_dict is a {type(state).__name__}, not a state dict")
    relations = _relations(ckpt)
    channels = int(ckpt.get("input_channels", 57 * 24))
    try:
        want = expected_shapes(config, channels, len(relations))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: config lacks or mangles {exc}") from None
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    wrong = sorted(f"{k}: {tuple(state[k].shape)} (expected {want[k]})" for k in set(want) & set(state)
                   if tuple(state[k].shape) != want[k])
    if missing or extra or wrong:
        raise CheckpointError(f"{path}: state dict does not match the authors' network for its config: "
                              + "; ".join(s for s in (f"missing {missing}" if missing else "",
                                                      f"unexpected {extra}" if extra else "",
                                                      f"wrong shapes {wrong}" if wrong else "") if s))
    training = dict(ckpt.get("training_config") or {})
    meta = {"family": family or guess_family(config), "source": path.name, "class_names": relations,
            "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "step_mapping": [int(a) for a in training.get("timesteps", [])],
            "orig_map_size": int(training.get("orig_map_size", 0) or 0), "input_channels": channels,
            "license": "see the authors' release (their code is non-commercial)"}
    # the authors name classes as their prompts do ("to the left of"): l2s's names where it has them
    return save_network(out, config, training, [PHRASES.get(r, r) for r in relations], meta, state)


def save_network(out: str | Path, config: dict, training: dict, relations: list[str], meta: dict,
                 state: dict[str, torch.Tensor]) -> Path:
    """A classifier folder of the authors' network: config.json, model.safetensors, README.md."""
    from safetensors.torch import save_file
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG).write_text(json.dumps({"kind": KIND, "relations": list(relations), "authors_config": config,
                                          "training_config": training, "meta": meta}, indent=2, default=str))
    save_file({k: v.detach().float().contiguous().cpu() for k, v in state.items()}, str(out / WEIGHTS),
              metadata={"format": "l2s-authors-classifier"})
    (out / CARD).write_text(_card(relations, config, meta))
    return out


def _card(relations: list[str], config: dict, meta: dict) -> str:
    if "source" not in meta:                          # trained here, not converted
        return "\n".join(card_front_matter("other") + ["",
                          "# Learn-to-Steer relation classifier (the authors' network, trained with l2s)", "",
                          f"- model family: {meta.get('family')}; layers: {len(meta.get('layers', []))}; input: "
                          f"per-(layer, head) map stacks ({meta['input_channels']} channels) of "
                          f"{config.get('map_size', 16)}x{config.get('map_size', 16)}",
                          f"- classes (index order): {', '.join(relations)}",
                          f"- validation accuracy: {meta.get('val_accuracy')}", ""])
    return "\n".join(card_front_matter("other") + ["",
                      "# Learn-to-Steer relation classifier (converted from the authors' checkpoint)", "",
                      f"- source: `{meta['source']}` (sha256 {meta['source_sha256'][:16]}...)",
                      f"- model family: {meta['family']}; input: per-(layer, head) map stacks "
                      f"(up to {meta['input_channels']} channels) of {config.get('map_size', 16)}x"
                      f"{config.get('map_size', 16)}",
                      f"- classes (index order, the authors' names): {', '.join(relations)}",
                      f"- step -> embedding row: the smallest of {meta['step_mapping']} not below the step",
                      f"- licence: {meta['license']}", ""])


# ---------------------------------------------------------------------------------------------
# the network (eval mode), from the equations

def step_rows(steps: Any, mapping: list[int]) -> np.ndarray:
    """Embedding rows of denoising steps: the smallest a in ``mapping`` with step <= a, else the
    step itself (the authors' assign-by-intervals)."""
    ordered = sorted(int(a) for a in mapping)
    out = []
    for s in np.asarray(steps).reshape(-1):
        out.append(next((a for a in ordered if int(s) <= a), int(s)))
    return np.asarray(out, np.int64)


def _mha(x: torch.Tensor, kv: torch.Tensor, w: torch.Tensor, b: torch.Tensor, wo: torch.Tensor, bo: torch.Tensor,
         heads: int) -> torch.Tensor:
    """Multi-head attention with a packed in-projection (rows q, k, v), no mask, no dropout."""
    d = x.shape[-1]
    q = F.linear(x, w[:d], b[:d])
    k = F.linear(kv, w[d:2 * d], b[d:2 * d])
    v = F.linear(kv, w[2 * d:], b[2 * d:])
    B, Lq, Lk, hd = x.shape[0], x.shape[1], kv.shape[1], d // heads
    q, k, v = (t.reshape(B, -1, heads, hd).transpose(1, 2) for t in (q, k, v))
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), -1)
    return F.linear((att @ v).transpose(1, 2).reshape(B, Lq, d), wo, bo)


Drop = Callable[[torch.Tensor, int], torch.Tensor]      # (activation, site) -> dropped activation


def _encoder_layer(x: torch.Tensor, P: dict, p: str, heads: int, drop: Drop, site: int) -> torch.Tensor:
    """Pre-norm: y = x + MHA(LN1(x)); out = y + linear2(relu(linear1(LN2(y)))); in training,
    dropout on the attention output, the hidden activation and the FF output (torch's layer),
    at sites site + 0, 1, 2."""
    d = x.shape[-1]
    h = F.layer_norm(x, (d,), P[f"{p}.norm1.weight"], P[f"{p}.norm1.bias"], 1e-5)
    y = x + drop(_mha(h, h, P[f"{p}.self_attn.in_proj_weight"], P[f"{p}.self_attn.in_proj_bias"],
                      P[f"{p}.self_attn.out_proj.weight"], P[f"{p}.self_attn.out_proj.bias"], heads), site)
    h = F.layer_norm(y, (d,), P[f"{p}.norm2.weight"], P[f"{p}.norm2.bias"], 1e-5)
    h = drop(F.relu(F.linear(h, P[f"{p}.linear1.weight"], P[f"{p}.linear1.bias"])), site + 1)
    return y + drop(F.linear(h, P[f"{p}.linear2.weight"], P[f"{p}.linear2.bias"]), site + 2)


def authors_logits(P: dict, config: dict, maps: torch.Tensor, rows: torch.Tensor, dropout: float = 0.0,
                   masks: Callable[[int, tuple[int, ...]], torch.Tensor] | None = None) -> torch.Tensor:
    """Logits [B, K] of maps [B, 2, C, S, S] and embedding rows [B] (authors-format.md §3);
    ``dropout`` > 0: training mode (eval mode, the default, is deterministic). ``masks(site, shape)``
    gives the dropout factors instead of torch's generator, laid out as the fused C pass drops:
    extractor activations [B, 2, C, width] (both objects), head ones [B, width]."""
    from .authors_net import SITE_EXTRACTOR, SITE_FC0, SITE_FC4, SITE_HEAD
    ex, cl = config["extractor"], config["classifier"]
    B, _, C = maps.shape[:3]
    e = P["object_extractor.timestep_embedding.weight"][rows][:, None]                  # [B, 1, d]

    def dropper(slot: int | None) -> Drop:
        def drop(t: torch.Tensor, site: int) -> torch.Tensor:
            if masks is None:
                return F.dropout(t, dropout, dropout > 0)
            if slot is None:
                return t * masks(site, (B, t.shape[-1])).to(t).view_as(t)
            return t * masks(site, (B, 2, C, t.shape[-1]))[:, slot].to(t)
        return drop

    def extract(M: torch.Tensor, slot: int) -> torch.Tensor:
        X = F.linear(M.reshape(B, C, -1), P["object_extractor.input_projection.weight"],
                     P["object_extractor.input_projection.bias"])
        X = X + P["object_extractor.positional_encoding.pe"][:, :C]
        for i in range(int(ex["num_layers"])):
            X = _encoder_layer(X + e, P, f"object_extractor.transformer.layers.{i}", int(ex["nhead"]), dropper(slot),
                               SITE_EXTRACTOR + 4 * i)
        q = P["object_extractor.query_vector"].expand(B, 1, -1)
        a = _mha(q, X, P["object_extractor.layer_attention.in_proj_weight"],
                 P["object_extractor.layer_attention.in_proj_bias"], P["object_extractor.layer_attention.out_proj.weight"],
                 P["object_extractor.layer_attention.out_proj.bias"], int(ex["layer_attn_nheads"]))[:, 0]
        return F.linear(a, P["object_extractor.output_projection.weight"], P["object_extractor.output_projection.bias"])

    s = torch.cat([extract(maps[:, 0], 0), extract(maps[:, 1], 1)], 1)                       # [B, 2 S^2]
    h = (F.linear(s, P["relation_classifier.projection.weight"], P["relation_classifier.projection.bias"])
         + P["relation_classifier.positional_encoding.pe"][0, 0])[:, None]
    for i in range(int(cl["num_layers"])):
        h = _encoder_layer(h, P, f"relation_classifier.transformer.layers.{i}", int(cl["nhead"]), dropper(None),
                           SITE_HEAD + 4 * i)
    z = torch.cat([h[:, 0], P["relation_classifier.timestep_embedding.weight"][rows]], 1)
    for lin, ln, site in ((0, 1, SITE_FC0), (4, 5, SITE_FC4)):
        z = F.linear(z, P[f"relation_classifier.fc.{lin}.weight"], P[f"relation_classifier.fc.{lin}.bias"])
        z = F.leaky_relu(F.layer_norm(z, (z.shape[-1],), P[f"relation_classifier.fc.{ln}.weight"],
                                      P[f"relation_classifier.fc.{ln}.bias"], 1e-5), 0.1)
        z = dropper(None)(z, site)
    return F.linear(z, P["relation_classifier.fc.8.weight"], P["relation_classifier.fc.8.bias"])


# a network to train from scratch on a 2-core CPU: the authors' layout, narrower (they use d = 256)
SMALL_CONFIG = {"d_model": 64, "map_size": 16, "extractor": {"num_layers": 2, "nhead": 4, "dim_feedforward": 128,
                                                             "layer_attn_nheads": 4},
                "classifier": {"num_layers": 1, "nhead": 4, "dim_feedforward": 128, "timestep_embedding_dim": 16}}
FIXED = ("object_extractor.positional_encoding.pe", "relation_classifier.positional_encoding.pe")   # not trained


def sinusoidal(n: int, d: int) -> torch.Tensor:
    """[1, n, d]: sin/cos of position / 10000^(2i/d) over positions 0..n-1 (the channel index)."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    div = torch.pow(10000.0, torch.arange(0, d, 2, dtype=torch.float64) / d)
    pe = torch.zeros(n, d, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos / div), torch.cos(pos / div)[:, : d // 2]
    return pe[None].float()


def init_network(config: dict, input_channels: int, n_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Fresh weights of the authors' network: linear weights uniform(+-1/sqrt(fan_in)) (torch's
    default), biases 0, LayerNorm 1 and 0, embeddings and the pooling query N(0, 1), positions fixed.
    The input projection is S^2 times larger: its inputs are maps that sum to 1 over S^2 pixels, so
    the default would drown the maps under the position and step terms (on separable toy stacks
    validation accuracy stayed at 0.31 for 30 epochs at the default scale, 0.99 after one at S^2)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in expected_shapes(config, input_channels, n_classes).items():
        if name in FIXED:
            out[name] = sinusoidal(shape[1], shape[2])
        elif name.endswith("embedding.weight") or name.endswith("query_vector"):
            out[name] = torch.randn(shape, generator=g)
        elif len(shape) == 1:
            is_norm = ".norm" in name or name.startswith("relation_classifier.fc.1.") or name.startswith(
                "relation_classifier.fc.5.")
            out[name] = torch.ones(shape) if is_norm and name.endswith("weight") else torch.zeros(shape)
        else:
            bound = 1 / math.sqrt(shape[-1])
            if name == "object_extractor.input_projection.weight":
                bound *= shape[-1]                          # x S^2: maps of unit mean per pixel
            out[name] = (torch.rand(shape, generator=g) * 2 - 1) * bound
    return out


class AuthorsClassifier:
    """The authors' relation classifier (a ``losses.RelationLoss`` whose input is a map STACK per
    object, [B, 2, C, 16, 16]): converted from their checkpoint, or trained here (``new``,
    ``train_step``, ``save_pretrained``). On the CPU it runs fused in ``l2s._C`` (``authors_net``);
    on a GPU in torch (the C network's CUDA twin is still to come)."""

    n_maps = 2
    map_kind = "stack"                   # Steerer captures per-(layer, head) stacks for it

    def __init__(self, folder: str | Path):
        from safetensors.torch import load_file
        folder = Path(folder)
        cfg = json.loads((folder / CONFIG).read_text())
        if cfg.get("kind") != KIND:
            raise ValueError(f"{folder}: not a converted authors' classifier (kind {cfg.get('kind')!r})")
        self._setup(cfg["authors_config"], cfg["training_config"], cfg["relations"], cfg["meta"],
                    load_file(str(folder / WEIGHTS)), str(folder / WEIGHTS))

    def _setup(self, config: dict, training: dict, relations: Any, meta: dict, params: dict, where: str) -> None:
        self.config, self.training_config = config, training
        self.relations = tuple(relations)
        self.meta = dict(meta)
        self.map_size = int(self.config.get("map_size", 16))
        self.params = params
        self._opt: torch.optim.Optimizer | None = None
        want = expected_shapes(self.config, int(self.meta["input_channels"]), len(self.relations))
        bad = sorted(k for k in want if k not in self.params or tuple(self.params[k].shape) != want[k])
        if bad:
            raise ValueError(f"{where} does not match its config: {bad[:5]}")
        self._shapes = want
        self._fuse()

    def _fuse(self, device: Any = "cpu") -> None:
        """Run in l2s._C on ``device``: the state dict becomes views of its one parameter buffer."""
        from .authors_net import FusedAuthorsNet
        self._net = FusedAuthorsNet(self.config, int(self.meta["input_channels"]), len(self.relations), self.params,
                                    device)
        self.params = self._net.views(self._shapes)

    @classmethod
    def new(cls, relations: Any, input_channels: int, num_timesteps: int, step_mapping: list[int],
            config: dict | None = None, meta: dict | None = None, seed: int = 0) -> "AuthorsClassifier":
        """An untrained network for stacks of ``input_channels`` maps, steps 0..num_timesteps-1."""
        config = {**(config or SMALL_CONFIG), "num_timesteps": int(num_timesteps)}
        meta = {**(meta or {}), "input_channels": int(input_channels), "step_mapping": [int(a) for a in step_mapping]}
        self = cls.__new__(cls)
        self._setup(config, {"timesteps": meta["step_mapping"]}, relations, meta,
                    init_network(config, input_channels, len(tuple(relations)), seed), "a new network")
        return self

    def save_pretrained(self, folder: str | Path) -> Path:
        """A classifier folder (``l2s.load_classifier`` reads it back as this class)."""
        return save_network(folder, self.config, self.training_config, list(self.relations), self.meta, self.params)

    def train_step(self, maps: Any, labels: Any, steps: Any, lr: float = 1e-4, weight_decay: float = 0.05,
                   dropout: float = 0.1) -> float:
        """One AdamW step (dropout on) on a batch; the batch's mean loss before it. On the CPU the
        fused C pass runs it, elsewhere torch autograd."""
        if self._net is not None:
            x = torch.as_tensor(maps if isinstance(maps, torch.Tensor) else np.asarray(maps), dtype=torch.float32)
            return self._net.train_step(x, labels, self._check(x, steps).cpu().numpy(), lr, weight_decay, dropout)
        trained = [k for k in self.params if k not in FIXED]
        if self._opt is None:
            for k in trained:
                self.params[k].requires_grad_(True)
            self._opt = torch.optim.AdamW([self.params[k] for k in trained], lr=lr, weight_decay=weight_decay)
        for group in self._opt.param_groups:
            group["lr"], group["weight_decay"] = lr, weight_decay
        x = torch.as_tensor(np.asarray(maps), dtype=torch.float32, device=self.params[trained[0]].device)
        rows = torch.as_tensor(np.asarray(steps).reshape(-1), dtype=torch.long, device=x.device)
        with torch.enable_grad():
            loss = F.cross_entropy(authors_logits(self.params, self.config, x, rows, dropout),
                                   torch.as_tensor(np.asarray(labels), dtype=torch.long, device=x.device))
            self._opt.zero_grad()
            loss.backward()
        self._opt.step()
        return float(loss.detach())

    def snapshot(self) -> dict:
        """A copy of the weights (``restore`` puts it back): the best epoch of a training run."""
        return {k: v.detach().clone() for k, v in self.params.items()}

    def restore(self, snapshot: dict) -> None:
        """Put back weights taken by ``snapshot`` (in place: the optimiser keeps its tensors)."""
        with torch.no_grad():
            for k, v in snapshot.items():
                self.params[k].copy_(v)

    def step_row(self, step: int, num_steps: int) -> int:
        return int(step_rows([step], self.meta.get("step_mapping", []))[0])

    def to(self, device: Any, fused: bool | None = None) -> "AuthorsClassifier":
        """Move the weights. On the CPU the fused C network runs; on a GPU the torch one, unless
        ``fused=True`` (or ``L2S_AUTHORS_CUDA=1``) asks for the CUDA twin of the fused network, which
        is compiled but has not yet run on a GPU here (``tests/test_cuda.py`` checks it against
        torch there). Resets the optimiser."""
        device = torch.device(device)
        self.params = {k: v.detach().clone().to(device) for k, v in self.params.items()}
        self._opt, self._net = None, None
        if fused is None:
            fused = device.type == "cpu" or os.environ.get("L2S_AUTHORS_CUDA") == "1"
        if fused:
            self._fuse(device)
        return self

    def forward(self, maps: Any, steps: Any) -> torch.Tensor:
        """Probabilities [B, K] (the checkpoint's class order) of stacks [B, 2, C, S, S] (NumPy or
        torch) and embedding rows [B] (already mapped: ``step_row``)."""
        with torch.no_grad():
            x = torch.as_tensor(maps, dtype=torch.float32, device=next(iter(self.params.values())).device)
            if self._net is not None:
                return torch.as_tensor(self._net.forward(x, self._check(x, steps).cpu().numpy()))
            return torch.softmax(self._logits(x, steps), -1)

    def _check(self, x: torch.Tensor, steps: Any) -> torch.Tensor:
        """The embedding rows of ``steps`` after checking them and the stacks' shape."""
        C = x.shape[2] if x.dim() > 2 else -1
        S = int(self.map_size)
        if x.dim() != 5 or x.shape[1] != 2 or not 1 <= C <= int(self.meta["input_channels"]) or tuple(x.shape[3:]) != (S, S):
            raise ValueError(f"maps must be [B, 2, C <= {self.meta['input_channels']}, {S}, {S}], got {list(x.shape)}")
        rows = torch.as_tensor(np.asarray(steps).reshape(-1), dtype=torch.long, device=x.device)
        T = int(self.config.get("num_timesteps", 50))
        if rows.numel() != x.shape[0] or (rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= T)):
            raise ValueError(f"steps: {x.shape[0]} embedding rows must lie in [0, {T}), got {rows.tolist()} "
                             "(map denoising steps with step_row)")
        return rows

    def _logits(self, x: torch.Tensor, steps: Any) -> torch.Tensor:
        return authors_logits(self.params, self.config, x, self._check(x, steps))

    def losses_and_grad(self, maps: Any, labels: Any, steps: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample cross-entropy, its gradient w.r.t. the stacks (d sum / d maps), probabilities."""
        if self._net is not None:
            x = torch.as_tensor(maps).detach().float()
            rows = self._check(x, steps).cpu().numpy()
            losses, dx, probs = self._net.losses_and_grad(x, labels, rows)
            return torch.as_tensor(losses), torch.as_tensor(dx), torch.as_tensor(probs)
        x = torch.as_tensor(maps).detach().float().requires_grad_(True)
        with torch.enable_grad():
            logits = self._logits(x, steps)
            losses = F.cross_entropy(logits, torch.as_tensor(np.asarray(labels), dtype=torch.long, device=x.device),
                                     reduction="none")
            (dx,) = torch.autograd.grad(losses.sum(), x)
        return losses.detach(), dx, torch.softmax(logits.detach(), -1)
