"""The relation classifier as a judge: read an image's spatial relation through a pipeline.

The image is encoded (VAE, or as is for a pixel-space model), noised to the classifier's steps and
its subject/object maps are read through the denoiser with a prompt naming only the two objects,
exactly as training data is made (``inversion.MapInverter``); the classifier's probabilities per
step and averaged say which relation it sees.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .inversion import MapInverter, relation_prompt
from .losses import RelationLoss
from .models import adapter_for
from .prompts import parse_prompt
from .replay import denoiser_of


def judge_relation(pipe: Any, classifier: RelationLoss, prompt: str, image: np.ndarray, seed: int = 0) -> dict:
    """The classifier's reading of the prompt's FIRST relation in ``image`` (uint8 [H, W, 3] at the
    pipeline's resolution): relation probabilities per step of the classifier's ``step_indices``
    (from its meta; default 6, 9, 12) and their mean, with the relation it says holds.

    The schedule (``num_inference_steps``) and map size come from the classifier's meta, as it was
    trained."""
    parsed = parse_prompt(prompt, adapter_for(denoiser_of(pipe)).object_tokenizer(pipe))
    if not parsed.triplets:
        raise ValueError(f"no spatial relation in {prompt!r}: nothing to judge")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    trip = parsed.triplets[0]
    meta = classifier.meta
    steps = meta.get("step_indices", [6, 9, 12])
    # the judged pair is read as "subject rel object" in a prompt naming only the two of them, as in training
    names = (parsed.objects[trip.subject].name, parsed.objects[trip.object].name)
    with MapInverter(pipe, map_size=classifier.map_size, num_inference_steps=int(meta.get("num_inference_steps", 25)),
                     n_steps=int(meta.get("n_steps", 50)), layers=meta.get("layers")) as inv:
        maps = inv.read(inv.encode(image[None]), relation_prompt(names[0], trip.relation, names[1]), steps,
                        generator=torch.Generator().manual_seed(seed))
        step_rows = np.array([classifier.step_row(s, inv.num_inference_steps) for s in steps], np.int32)
    labels = np.zeros(len(steps), np.int32)                   # any label: only the probabilities are read
    _, _, probs = classifier.losses_and_grad(torch.from_numpy(np.ascontiguousarray(maps, np.float32)), labels,
                                             step_rows)
    probs = np.asarray(probs.cpu() if torch.is_tensor(probs) else probs)
    rels = list(classifier.relations)
    mean = probs.mean(0)
    as_dict = lambda row: {r: round(float(p), 3) for r, p in zip(rels, row)}
    return {"judged": f"{names[0]} | {trip.relation} | {names[1]}", "probabilities": as_dict(mean),
            "classifier_says": rels[int(mean.argmax())],
            "per_step": {int(s): as_dict(row) for s, row in zip(steps, probs)}}
