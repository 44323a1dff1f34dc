"""Train the shapes-world text-to-image model (CPU or GPU), resumably.

    python -m l2s train-model --out runs/shapes --steps 5000

Data: seeded scenes (1-3 objects; 10% of captions state relations, never with held-out pairs),
generated once and cached in the output folder. Objective: v-prediction (see model.py for why not epsilon), DDPM noise
schedule of the pipeline's scheduler; text encoder trained with the UNet; 10% empty captions for guidance.
Weights are kept as an exponential moving average (EMA), which is what gets saved as the pipeline.
Checkpoints (every ``--checkpoint-every`` steps) hold the live and EMA weights and the optimiser
state as safetensors plus a JSON file; training resumes from the latest one.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .scenes import generate_scene, heldout_pairs

OBJECT_COUNT_PROBS = (0.3, 0.4, 0.3)      # default share of scenes with 1, 2, 3 objects
RELATIONAL_FRACTION = 0.1                 # default share of captions that state the relations (the shipped model's)
LINE_FRACTION = 0.0                       # default share of three-object scenes laid out in a line (the shipped model's)


def make_dataset(n: int, seed: int, size: int = 64, relational_fraction: float = RELATIONAL_FRACTION,
                 object_count_probs: tuple[float, float, float] = OBJECT_COUNT_PROBS, line_fraction: float = LINE_FRACTION):
    """n scenes: images [n, S, S, 3] uint8 and captions. ``line_fraction`` of the three-object scenes
    are laid out in a row, column or diagonal (``scenes._place_line``)."""
    rng = np.random.default_rng(seed)
    held = heldout_pairs()
    images = np.empty((n, size, size, 3), np.uint8)
    captions = []
    counts = rng.choice([1, 2, 3], size=n, p=np.asarray(object_count_probs) / np.sum(object_count_probs))
    # drawn after the counts, and only when asked: data without lines stays what it was
    lines = (counts == 3) & (rng.random(n) < line_fraction) if line_fraction > 0 else np.zeros(n, bool)
    for i in tqdm(range(n), desc="render scenes", disable=None, leave=False):
        sc = generate_scene(seed * 1_000_003 + i, size=size, n_objects=int(counts[i]),
                            relational_fraction=relational_fraction, heldout=held, line=bool(lines[i]))
        images[i] = sc.image
        captions.append(sc.caption)
    return images, captions


def _load_or_make_dataset(out: Path, n: int, seed: int, object_count_probs: tuple[float, float, float],
                          relational_fraction: float = RELATIONAL_FRACTION, line_fraction: float = LINE_FRACTION):
    mix = "-".join(f"{p:g}" for p in object_count_probs)
    variant = "" if relational_fraction == RELATIONAL_FRACTION else f"-rel{relational_fraction:g}"   # old caches keep their names
    variant += "" if line_fraction == LINE_FRACTION else f"-line{line_fraction:g}"
    cache = out / f"data-{n}-{seed}-{mix}{variant}.npz"
    if cache.exists():
        d = np.load(cache, allow_pickle=False)
        return d["images"], [str(c) for c in d["captions"]]
    images, captions = make_dataset(n, seed, relational_fraction=relational_fraction,
                                    object_count_probs=object_count_probs, line_fraction=line_fraction)
    np.savez(cache, images=images, captions=np.array(captions))
    return images, captions


class EMA:
    """Exponential moving average of a set of parameters (kept in float32 beside the model)."""

    def __init__(self, params, decay: float):
        self.params = list(params)
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int):
        d = min(self.decay, (1 + step) / (10 + step))      # warm start: follow closely at first
        for s, p in zip(self.shadow, self.params):
            s.mul_(d).add_(p.detach(), alpha=1 - d)

    @torch.no_grad()
    def swap(self):
        """Exchange live and EMA weights (call twice to undo)."""
        for s, p in zip(self.shadow, self.params):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)


def images_to_model(images: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 images (N, H, W, 3) as the model's input: (N, 3, H, W) floats in [-1, 1]."""
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1


def training_target(sched, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict for ``x`` noised with ``noise`` at ``t``: the velocity under
    v-prediction (the shapes model), else the noise."""
    return sched.get_velocity(x, noise, t) if sched.config.prediction_type == "v_prediction" else noise


def _lr(step: int, base: float, warmup: int, total: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _save_checkpoint(path: Path, step: int, ema: EMA, opt: torch.optim.Optimizer, extra: dict):
    from safetensors.torch import save_file
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"live.{i}": p.detach().contiguous() for i, p in enumerate(ema.params)}
    tensors.update({f"ema.{i}": s.contiguous() for i, s in enumerate(ema.shadow)})
    for i, p in enumerate(ema.params):
        st = opt.state.get(p, {})
        if "exp_avg" in st:
            tensors[f"adam_m.{i}"] = st["exp_avg"].contiguous()
            tensors[f"adam_v.{i}"] = st["exp_avg_sq"].contiguous()
    save_file(tensors, str(path / "state.safetensors"))
    (path / "state.json").write_text(json.dumps({"step": step, "adam_step": int(opt.state[ema.params[0]]["step"])
                                                 if ema.params[0] in opt.state else 0, **extra}))


def _load_checkpoint(path: Path, ema: EMA, opt: torch.optim.Optimizer) -> int:
    from safetensors.torch import load_file
    t = load_file(str(path / "state.safetensors"))
    meta = json.loads((path / "state.json").read_text())
    with torch.no_grad():
        for i, p in enumerate(ema.params):
            p.copy_(t[f"live.{i}"])
            ema.shadow[i].copy_(t[f"ema.{i}"])
            if f"adam_m.{i}" in t:
                opt.state[p] = {"step": torch.tensor(float(meta["adam_step"])), "exp_avg": t[f"adam_m.{i}"].clone(),
                                "exp_avg_sq": t[f"adam_v.{i}"].clone()}
    return int(meta["step"])


@torch.no_grad()
def quick_probe(pipe, n: int = 16, seed: int = 0, steps: int = 20) -> float:
    """Single-object accuracy (the benchmark's criterion, via evaluate) on n random (colour, shape) pairs.
    Runs logged before this used a stricter check (the LARGEST object had to have the prompted colour)."""
    from .evaluate import evaluate, single_object_prompts
    specs = single_object_prompts()
    pick = np.random.default_rng(seed).choice(len(specs), n, replace=False)
    return evaluate(pipe, [specs[i] for i in pick], seeds=[seed], steps=steps, batch=n)["accuracy"]


def train(out: str | Path, steps: int = 5000, batch: int = 32, lr: float = 1e-3, n_scenes: int = 30000,
          seed: int = 0, checkpoint_every: int = 500, probe_every: int = 1000, ema_decay: float = 0.999,
          device: str = "cpu", unet_overrides: dict | None = None, init_from: str | Path | None = None,
          object_count_probs: tuple[float, float, float] = OBJECT_COUNT_PROBS,
          relational_fraction: float = RELATIONAL_FRACTION, line_fraction: float = LINE_FRACTION,
          min_timestep: int = 0, coords: bool = False, text_encoder: str | Path | None = None) -> Path:
    """Train (or resume) and return the folder of the final EMA pipeline (``out/pipeline``).

    ``init_from``: a pipeline folder whose UNet and text-encoder weights start a NEW run (fine-tuning
    the shipped model further); ignored when ``out`` already holds a checkpoint to resume.
    ``object_count_probs``: share of training scenes with 1, 2 and 3 objects.
    ``relational_fraction``: share of captions that state the scene's relations (0.1 for the shipped
    model; more is meant to teach the model the relation word, which relation leakage needs — measured:
    at 44% of captions it still ignores the word, docs/results.md "A second leak world").
    ``line_fraction``: share of three-object scenes laid out in a row, column or diagonal (0 for the
    shipped model, whose free placement makes such layouts, which straight chains need, in ~3%).
    ``min_timestep``: sample training timesteps from [min_timestep, T) only (0: all; the noisiest
    steps are where generation lays objects out; measured: 600 such steps did not teach the word either).
    ``coords``: train the UNet variant that also reads pixel coordinates (``coord_unet.CoordUNet2DConditionModel``); from
    a plain ``init_from`` the coordinate weights start at zero, so the run starts at that model exactly.
    ``text_encoder``: a CLIPTextModel folder (``text_pretrain.pretrain_text_encoder``) used FROZEN, as SD
    uses CLIP: only the UNet trains (it overrides ``init_from``'s encoder)."""
    from diffusers import DDPMScheduler
    from .model import caption_ids
    from .pipeline import build_pipeline
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    images, captions = _load_or_make_dataset(out, n_scenes, seed, tuple(object_count_probs), relational_fraction,
                                             line_fraction)
    ckpt = out / "checkpoint"
    resuming = (ckpt / "state.json").exists()
    if resuming:                                  # a resume must rebuild the same trainable set
        saved = json.loads((ckpt / "state.json").read_text())
        # checkpoints from before these options lack the keys: they had neither
        folder = lambda v: Path(v).resolve() if v else None     # one encoder folder however it is spelled
        for key, now, before, norm in (("coords", coords, False, bool),
                                       ("text_encoder", str(text_encoder) if text_encoder else None, None, folder)):
            if norm(saved.get(key, before)) != norm(now):
                raise ValueError(f"{out} holds a checkpoint trained with {key}={saved.get(key)!r}; resume it with "
                                 f"the same setting (got {now!r}) or use another --out")
    pipe = build_pipeline(seed, coords=coords, **(unet_overrides or {})).to(device)
    if init_from is not None and not resuming:
        from .coord_unet import load_into
        from .pipeline import load_shipped
        start_pipe = load_shipped(init_from)
        load_into(pipe.unet, start_pipe.unet.state_dict())
        pipe.text_encoder.load_state_dict(start_pipe.text_encoder.state_dict())
    if text_encoder is not None:
        from transformers import CLIPTextModel
        pipe.text_encoder.load_state_dict(CLIPTextModel.from_pretrained(text_encoder).state_dict())
        pipe.text_encoder.requires_grad_(False)
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    params = [p for p in [*pipe.unet.parameters(), *pipe.text_encoder.parameters()] if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ema = EMA(params, ema_decay)
    start = _load_checkpoint(ckpt, ema, opt) if resuming else 0
    tok = pipe.tokenizer
    ids_all = caption_ids(tok, captions)
    empty_ids = caption_ids(tok, [""])
    rng = np.random.default_rng(seed + start)
    log = open(out / "train_log.jsonl", "a")
    pipe.unet.train(); pipe.text_encoder.train()
    t0 = time.time()
    bar = tqdm(range(start, steps), desc="train shapes model", initial=start, total=steps, disable=None)
    for step in bar:
        idx = rng.integers(0, len(images), batch)
        x = images_to_model(images[idx], device)
        ids = ids_all[idx].clone()
        drop = torch.from_numpy(rng.random(batch) < 0.1)
        ids[drop] = empty_ids[0]
        noise = torch.randn_like(x)
        t = torch.from_numpy(rng.integers(min_timestep, noise_sched.config.num_train_timesteps, batch)).to(device)
        noisy = noise_sched.add_noise(x, noise, t)
        cond = pipe.text_encoder(ids.to(device)).last_hidden_state
        target = training_target(noise_sched, x, noise, t)
        loss = torch.nn.functional.mse_loss(pipe.unet(noisy, t, encoder_hidden_states=cond).sample, target)
        for g in opt.param_groups:
            g["lr"] = _lr(step, lr, 200, steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        record = {"step": step + 1, "loss": loss.item(), "lr": opt.param_groups[0]["lr"], "elapsed_s": time.time() - t0}
        done = step + 1
        if done % probe_every == 0 or done == steps:
            ema.swap(); pipe.unet.eval(); pipe.text_encoder.eval()
            record["probe_single_object_acc"] = quick_probe(pipe)
            ema.swap(); pipe.unet.train(); pipe.text_encoder.train()
        if done % 50 == 0 or "probe_single_object_acc" in record:
            log.write(json.dumps(record) + "\n"); log.flush()
        if done % checkpoint_every == 0 or done == steps:
            _save_checkpoint(ckpt, done, ema, opt, {"batch": batch, "lr": lr, "seed": seed,
                                                    "object_count_probs": list(object_count_probs),
                                                    "relational_fraction": relational_fraction,
                                                    "line_fraction": line_fraction, "min_timestep": min_timestep, "coords": coords,
                                                    "text_encoder": str(text_encoder) if text_encoder else None,
                                                    "init_from": str(init_from) if init_from else None})
    log.close()
    ema.swap()                                    # ship the EMA weights
    pipe.unet.eval(); pipe.text_encoder.eval()
    final = out / "pipeline"
    pipe.save_pretrained(final)
    ema.swap()
    return final
