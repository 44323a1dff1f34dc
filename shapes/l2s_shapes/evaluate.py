"""Spatial accuracy of a shapes-world pipeline, judged exactly (GenEval's position rule on detections).

Prompt sets are built from the held-out (colour, shape) pairs, which never appear in relational
training captions. One-relation prompts: "a A rel a B"; two-relation chains: "a A rel a B rel a C".
"""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Collection

import numpy as np
import torch
from tqdm.auto import tqdm

from l2s.relations import RELATIONS
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


def seen_pairs() -> set[tuple[str, str]]:
    """(colour, shape) pairs that relational training captions use: every pair not held out."""
    return {(c, s) for c in COLOURS for s in SHAPES} - heldout_pairs()


def distinct_prompt_count(n_relations: int, pairs: Collection[tuple[str, str]] | None = None) -> int:
    """How many different ``heldout_prompts`` texts exist with ``n_relations`` relations."""
    n_pairs = len(heldout_pairs() if pairs is None else set(pairs))
    return math.perm(n_pairs, n_relations + 1) * len(RELATIONS) ** n_relations


def heldout_prompts(n_relations: int, count: int, seed: int = 0, exclude: Collection[str] = (),
                    pairs: Collection[tuple[str, str]] | None = None) -> list[PromptSpec]:
    """``count`` different prompts whose objects are all held-out pairs (distinct within a prompt),
    none of whose texts is in ``exclude``. Drawn in a seeded sequence, repeats skipped: the first k
    prompts of a longer set are the k-prompt set. ``pairs``: draw from these (colour, shape) pairs
    instead (e.g. ``seen_pairs()``, where a model trained on relational captions follows the words)."""
    available = distinct_prompt_count(n_relations, pairs) - len(set(exclude))
    if count > available:
        raise ValueError(f"only {available} different {n_relations}-relation prompts can be drawn, asked for {count}")
    rng = np.random.default_rng(seed)
    pairs = sorted(heldout_pairs() if pairs is None else set(pairs))
    out, seen = [], set(exclude)
    while len(out) < count:
        idx = rng.choice(len(pairs), n_relations + 1, replace=False)
        spec = spec_from_chain([pairs[i] for i in idx], [str(rng.choice(RELATIONS)) for _ in range(n_relations)])
        if spec.text not in seen:
            seen.add(spec.text)
            out.append(spec)
    return out


def single_object_prompts() -> list[PromptSpec]:
    return [PromptSpec(f"a {c} {s}", [(c, s)], []) for c in COLOURS for s in SHAPES]


def evaluate(pipe, prompts: list[PromptSpec], seeds: list[int], steps: int = 25, guidance: float | None = None,
             batch: int = 16, steering=None, **call_kwargs) -> dict:
    """Generate every prompt x seed, judge each image; return a summary and the per-image results.

    ``steering``: optional ``f(pipe, prompt_text) -> l2s.steer.Steerer``; each prompt's seeds are
    then generated together through ``Steerer.generate`` (vanilla when f returns None).
    ``guidance`` None: the pipeline's default (``DEFAULT_GUIDANCE`` for the shapes pipeline).
    """
    if steering is None:
        jobs = [(p, s) for p in prompts for s in seeds]
        chunks = [jobs[i: i + batch] for i in range(0, len(jobs), batch)]
    else:                       # one prompt per chunk: a Steerer serves one prompt
        chunks = [[(p, s) for s in seeds[i: i + batch]] for p in prompts for i in range(0, len(seeds), batch)]
    results = []
    for chunk in tqdm(chunks, desc="evaluate", disable=None, leave=False):
        gens = [torch.Generator().manual_seed(s) for _, s in chunk]
        texts = [p.text for p, _ in chunk]
        kw = dict(num_inference_steps=steps, guidance_scale=guidance, generator=gens, **call_kwargs)
        t0 = time.perf_counter()
        steerer = steering(pipe, texts[0]) if steering is not None else None
        if steerer is not None:
            with steerer:
                images = steerer.generate(pipe, texts, **kw).images
        else:
            images = pipe(texts, **kw).images
        per_image = (time.perf_counter() - t0) / len(chunk)        # a chunk is one batch: its time is shared
        for (p, s), img in zip(chunk, images):
            dets = detect(img)
            res = judge_prompt(img, p.objects, p.relations, dets)
            results.append({"prompt": p.text, "seed": s, "failure": res.failure,
                            "found": [f is not None for f in res.found], "relations_hold": res.relations_hold,
                            "detections": [{"colour": d.colour, "shape": d.shape,
                                            "box": [round(float(v), 4) for v in d.box]} for d in dets],
                            "seconds": per_image})
    return {**summarize(results), "results": results}


def summarize(results: list[dict]) -> dict:
    """Accuracy, failure kinds and mean seconds per image of per-image results (``evaluate``'s)."""
    kinds = Counter(r["failure"] for r in results)
    n = len(results)
    return {"n_images": n, "accuracy": kinds["correct"] / n if n else float("nan"),
            "failures": {k: kinds[k] / n if n else float("nan") for k in ("missing", "fused", "misplaced")},
            "seconds_per_image": sum(r["seconds"] for r in results) / n if n else float("nan")}


def generation_maps(pipe, prompts: list[PromptSpec], seeds: list[int], step_indices: list[int], map_size: int = 16,
                    steps: int = 25, guidance: float | None = None, n_steps: int = 50,
                    relations: tuple[str, ...] = RELATIONS, layers=None, stack: bool = False):
    """Maps captured WHILE generating (``callbacks.MapRecorder`` at ``step_indices``: the images are
    the vanilla ones), labelled with the relation the evaluator then MEASURES between the generated
    subject and object, as an index into ``relations`` (images where not exactly one relation holds
    are dropped). The test set of the single- vs dual-inversion ablation: what the classifier sees
    when steering. ``meta["prompt_labels"]`` holds each row's PROMPTED relation (same indexing): rows
    where it differs from the label are images that disobeyed the prompt, where a classifier that
    reads the relation word instead of the layout is wrong. ``layers``: the capture's layers (default: the model's default layers);
    ``stack``: per-(layer, head) stacks of every layer (the authors' transformer's input), rows
    labelled with the step index itself."""
    from l2s.callbacks import MapRecorder
    from l2s.capture import select_layers, stack_layers
    from l2s.classifier import step_index
    from l2s.geneval import relations_between
    from l2s.inversion import MapDataset
    from l2s.models import adapter_for
    from l2s.prompts import parse_prompt
    from l2s.relations import label_indices
    if stack:
        chosen = stack_layers(pipe.unet)
    else:
        chosen = select_layers(pipe.unet, names=layers) if layers else select_layers(pipe.unet)
    tokenizer = adapter_for(pipe.unet).object_tokenizer(pipe)
    maps, labels, step_rows, image, prompted = [], [], [], [], []
    n_img = 0
    for p in tqdm(prompts, desc="generation maps", disable=None, leave=False):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        with MapRecorder(pipe, parse_prompt(p.text, tokenizer), step_indices, chosen, map_size, stack=stack) as rec:
            images = rec.generate(pipe, [p.text] * len(seeds), num_inference_steps=steps, guidance_scale=guidance,
                                  generator=gens).images
        subj, obj = p.relations[0][0], p.relations[0][2]
        prompt_label = label_indices([p.relations[0][1]], relations)[0]
        for b, img in enumerate(images):
            found = judge_prompt(img, p.objects, p.relations, detect(img)).found
            if found[subj] is None or found[obj] is None:
                continue
            held = relations_between(found[subj].box, found[obj].box)
            if len(held) != 1:
                continue
            label = label_indices([next(iter(held))], relations)[0]
            for step in sorted(rec.maps):
                maps.append(rec.maps[step][b, 0])
                labels.append(label)
                prompted.append(int(prompt_label))
                step_rows.append(step if stack else step_index(step, steps, n_steps))
                image.append(n_img)
            n_img += 1
    S = map_size
    shape = (-1, 2, sum(int(l.module.heads) for l in chosen), S, S) if stack else (-1, 2, S, S)
    return MapDataset(np.array(maps, np.float32).reshape(shape), np.array(labels, np.int32),
                      np.array(step_rows, np.int32), np.full(len(labels), 2, np.int8), np.array(image, np.int32),
                      {"source": "generation", "step_indices": list(step_indices), "images": n_img,
                       "relations": list(relations), "prompt_labels": prompted})
