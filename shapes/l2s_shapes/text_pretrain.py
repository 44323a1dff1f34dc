"""Contrastive pre-training of the shapes world's text encoder: a CLIP in miniature.

Why: relation leakage, the effect dual inversion exists for, comes from the text encoder. In Stable
Diffusion the encoder is CLIP, trained apart from the UNet on a task where the relation word matters,
and frozen; its causal attention writes "left of" into the tokens of the object that follows the
word, so that object's cross-attention map moves with the word even where the UNet does not move
the object. The shipped shapes model trains its encoder only through the denoising loss, and its
UNet ignores the relation word (docs/results.md), so nothing teaches the encoder the word: it moves a
map by 1.4-2% of its mass. Here the same encoder (``model.build_text_encoder``) learns to match
captions to scene images against the other images of the batch and against each caption with its
relations reversed ("a red circle left of a blue square" vs "... right of ..."), which it can only
tell apart by reading the word. ``train-model --text-encoder FOLDER`` then trains a UNet against it,
frozen, as SD's UNet was trained against CLIP.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .model import build_text_encoder, build_tokenizer, caption_ids
from .scenes import reverse_relations
from .train import _load_or_make_dataset, _lr, images_to_model


class ImageEncoder(torch.nn.Module):
    """A small CNN over 64 px scenes; flattened (not pooled) so where things are reaches the embedding."""

    def __init__(self, dim: int = 64, size: int = 64):
        super().__init__()
        chans = (3, 32, 64, 64, 96)
        layers = []
        for a, b in zip(chans, chans[1:]):
            layers += [torch.nn.Conv2d(a, b, 3, stride=2, padding=1), torch.nn.GELU()]
        self.convs = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(chans[-1] * (size // 16) ** 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x).flatten(1))


def _embed_text(text_encoder, proj, ids: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(proj(text_encoder(ids).pooler_output), dim=-1)


def _embed_images(image_encoder, images: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.normalize(image_encoder(images_to_model(images)), dim=-1)


@torch.no_grad()
def relation_choice_accuracy(text_encoder, proj, image_encoder, tokenizer, images: np.ndarray,
                             captions: list[str]) -> float:
    """Share of relational scenes whose image is closer to its caption than to the reversed caption
    (0.5: the encoder does not read the word)."""
    keep = [i for i, c in enumerate(captions) if reverse_relations(c)]
    if not keep:
        raise ValueError("no caption states a relation")
    img = _embed_images(image_encoder, images[keep])
    right = (img * _embed_text(text_encoder, proj, caption_ids(tokenizer, [captions[i] for i in keep]))).sum(-1)
    wrong = (img * _embed_text(text_encoder, proj, caption_ids(tokenizer, [reverse_relations(captions[i])
                                                                          for i in keep]))).sum(-1)
    return float(((right > wrong).float() + 0.5 * (right == wrong).float()).mean())   # a tie is a coin toss


def pretrain_text_encoder(out: str | Path, steps: int = 3000, batch: int = 128, lr: float = 1e-3,
                          n_scenes: int = 30000, seed: int = 3, object_count_probs=(0.2, 0.6, 0.2),
                          relational_fraction: float = 1.0, validation: int = 1000) -> Path:
    """Train the text encoder contrastively (reversed captions as extra negatives); save it to
    ``out/text_encoder`` (a CLIPTextModel folder) and return that folder. The data is ``train-model``'s
    (same cache); the last ``validation`` scenes are held out for ``relation_choice_accuracy``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    images, captions = _load_or_make_dataset(out, n_scenes, seed, tuple(object_count_probs), relational_fraction, 0.0)
    n_train = len(images) - validation
    tok = build_tokenizer()
    text_encoder = build_text_encoder(tok, seed)
    proj = torch.nn.Linear(text_encoder.config.hidden_size, 64)
    image_encoder = ImageEncoder()
    log_temp = torch.nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
    params = [*text_encoder.parameters(), *proj.parameters(), *image_encoder.parameters(), log_temp]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ids_all = caption_ids(tok, captions)
    # each relational caption's reversed twin, tokenised once: row reversed_row[i] of reversed_ids
    reversed_caps = [reverse_relations(c) for c in captions]
    has_reversed = np.array([r is not None for r in reversed_caps])
    reversed_ids = caption_ids(tok, [r for r in reversed_caps if r is not None] or [""])
    reversed_row = np.cumsum(has_reversed) - 1
    rng = np.random.default_rng(seed)
    log = open(out / "text_pretrain_log.jsonl", "a")
    t0 = time.time()
    for step in tqdm(range(steps), desc="pretrain text encoder", disable=None):
        idx = rng.choice(n_train, batch, replace=False)
        ids = torch.cat([ids_all[idx], reversed_ids[reversed_row[idx[has_reversed[idx]]]]])
        text = _embed_text(text_encoder, proj, ids)
        img = _embed_images(image_encoder, images[idx])
        logits = log_temp.clamp(max=np.log(100)).exp() * img @ text.T        # [B, B + reversed]
        target = torch.arange(batch)
        loss = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                      + torch.nn.functional.cross_entropy(logits[:, :batch].T, target))
        for g in opt.param_groups:
            g["lr"] = _lr(step, lr, 100, steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rec = {"step": step + 1, "loss": loss.item(), "elapsed_s": time.time() - t0}
        if (step + 1) % 500 == 0 or step + 1 == steps:
            text_encoder.eval(); image_encoder.eval()
            rec["relation_choice_val"] = relation_choice_accuracy(text_encoder, proj, image_encoder, tok,
                                                                  images[n_train:], captions[n_train:])
            text_encoder.train(); image_encoder.train()
        if (step + 1) % 50 == 0 or "relation_choice_val" in rec:
            log.write(json.dumps(rec) + "\n"); log.flush()
    log.close()
    text_encoder.eval()
    folder = out / "text_encoder"
    text_encoder.save_pretrained(folder)
    return folder
