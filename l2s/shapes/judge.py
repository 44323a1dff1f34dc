"""Reading an image's spatial relations two ways: the exact evaluator (detections + GenEval's rule)
and the relation classifier as a judge (the image is noised to the classifier's steps and its
subject/object maps are read through the model, as in training).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..inversion import MapInverter, relation_prompt
from ..prompts import parse_prompt
from .detect import detect, judge_prompt, parse_object_phrase
from .relation_classifier import MAP_SIZE, NUM_INFERENCE_STEPS


def describe_image(prompt: str, image: np.ndarray) -> dict:
    """What the exact evaluator sees: detections (largest first) and, when the prompt parses into the
    shapes world's objects, GenEval's verdict ("correct", "missing", "fused" or "misplaced")."""
    dets = detect(image)
    out: dict[str, Any] = {"detected": [f"{d.colour} {d.shape} at x={np.mean(d.box[::2]):.2f}, y={np.mean(d.box[1::2]):.2f}"
                                        for d in sorted(dets, key=lambda d: -d.area)]}
    parsed = parse_prompt(prompt)
    try:
        objects = [parse_object_phrase(o.name) for o in parsed.objects]
    except ValueError:
        return out                               # objects outside the shapes world: detections only
    if parsed.triplets:
        res = judge_prompt(image, objects, [(t.subject, t.relation, t.object) for t in parsed.triplets], dets)
        out["verdict"] = res.failure
    return out


def judge_relation(pipe: Any, classifier: Any, prompt: str, image: np.ndarray, seed: int = 0) -> dict:
    """The classifier's reading of the prompt's FIRST relation in ``image`` (uint8 [S, S, 3] at the
    model's resolution): relation probabilities per step of the classifier's ``step_indices`` and
    their mean, with the relation it says holds."""
    parsed = parse_prompt(prompt, pipe.tokenizer)
    if not parsed.triplets:
        raise ValueError(f"no spatial relation in {prompt!r}: nothing to judge")
    size = pipe.unet.config.sample_size
    if image.shape != (size, size, 3):
        raise ValueError(f"image must be [{size}, {size}, 3] (the model's resolution), got {list(image.shape)}")
    trip = parsed.triplets[0]
    steps = classifier.config.meta.get("step_indices", [6, 9, 12])
    # the judged pair is read as "subject rel object" in a prompt naming only the two of them, as in training
    names = (parsed.objects[trip.subject].name, parsed.objects[trip.object].name)
    with MapInverter(pipe, map_size=MAP_SIZE, num_inference_steps=NUM_INFERENCE_STEPS,
                     n_steps=classifier.config.n_steps) as inv:
        maps = inv.read(inv.encode(image[None]), relation_prompt(names[0], trip.relation, names[1]), steps,
                        generator=torch.Generator().manual_seed(seed))
        step_rows = np.array([inv.step_label(s) for s in steps], np.int32)
    probs, _ = classifier.forward(np.ascontiguousarray(maps, np.float32), step_rows)
    probs = np.asarray(probs)
    rels = list(classifier.config.relations)
    mean = probs.mean(0)
    as_dict = lambda row: {r: round(float(p), 3) for r, p in zip(rels, row)}
    return {"judged": f"{names[0]} | {trip.relation} | {names[1]}", "probabilities": as_dict(mean),
            "classifier_says": rels[int(mean.argmax())],
            "per_step": {int(s): as_dict(row) for s, row in zip(steps, probs)}}
