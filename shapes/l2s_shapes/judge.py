"""Reading an image's spatial relations two ways: the exact evaluator of the shapes world
(detections + GenEval's rule, ``describe_image``) and the relation classifier as a judge
(``l2s.judge.judge_relation``, re-exported here).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from l2s.judge import judge_relation  # noqa: F401  (the classifier as a judge: pipeline-generic, in the library)
from l2s.prompts import parse_prompt
from .detect import detect, judge_prompt, parse_object_phrase


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


__all__ = ["describe_image", "judge_relation"]
