"""Spatial accuracy of a shapes-world pipeline, judged exactly (GenEval's position rule on detections).

Prompt sets are built from the held-out (colour, shape) pairs, which never appear in relational
training captions. One-relation prompts: "a A rel a B"; two-relation chains: "a A rel a B rel a C".
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..geneval import RELATIONS
from .detect import detect, judge_prompt
from .scenes import COLOURS, SHAPES, heldout_pairs


@dataclass
class PromptSpec:
    text: str
    objects: list[tuple[str, str]]
    relations: list[tuple[int, str, int]]


def spec_from_chain(objects: list[tuple[str, str]], relations: list[str]) -> PromptSpec:
    """'a A r1 a B r2 a C' with relation i between objects i and i+1."""
    text = f"a {' '.join(objects[0])}"
    for i, rel in enumerate(relations):
        text += f" {rel} a {' '.join(objects[i + 1])}"
    return PromptSpec(text, list(objects), [(i, rel, i + 1) for i, rel in enumerate(relations)])


def heldout_prompts(n_relations: int, count: int, seed: int = 0) -> list[PromptSpec]:
    """``count`` prompts whose objects are all held-out pairs (distinct within a prompt)."""
    rng = np.random.default_rng(seed)
    pairs = sorted(heldout_pairs())
    out = []
    for _ in range(count):
        idx = rng.choice(len(pairs), n_relations + 1, replace=False)
        out.append(spec_from_chain([pairs[i] for i in idx], [str(rng.choice(RELATIONS)) for _ in range(n_relations)]))
    return out


def single_object_prompts() -> list[PromptSpec]:
    return [PromptSpec(f"a {c} {s}", [(c, s)], []) for c in COLOURS for s in SHAPES]


def evaluate(pipe, prompts: list[PromptSpec], seeds: list[int], steps: int = 25, guidance: float | None = None,
             batch: int = 16, **call_kwargs) -> dict:
    """Generate every prompt x seed, judge each image; return a summary and the per-image results."""
    from .pipeline import DEFAULT_GUIDANCE
    guidance = DEFAULT_GUIDANCE if guidance is None else guidance
    jobs = [(p, s) for p in prompts for s in seeds]
    results, seconds = [], 0.0
    for i in tqdm(range(0, len(jobs), batch), desc="evaluate", disable=None, leave=False):
        chunk = jobs[i: i + batch]
        gens = [torch.Generator().manual_seed(s) for _, s in chunk]
        t0 = time.perf_counter()
        images = pipe([p.text for p, _ in chunk], num_inference_steps=steps, guidance_scale=guidance,
                      generator=gens, **call_kwargs).images
        seconds += time.perf_counter() - t0
        for (p, s), img in zip(chunk, images):
            res = judge_prompt(img, p.objects, p.relations, detect(img))
            results.append({"prompt": p.text, "seed": s, "failure": res.failure,
                            "found": [f is not None for f in res.found], "relations_hold": res.relations_hold})
    kinds = Counter(r["failure"] for r in results)
    n = len(results)
    return {"n_images": n, "accuracy": kinds["correct"] / n if n else float("nan"),
            "failures": {k: kinds[k] / n for k in ("missing", "fused", "misplaced")},
            "seconds_per_image": seconds / n if n else float("nan"), "results": results}
