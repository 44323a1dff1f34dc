"""Can the unsteered maps of the first steps tell which initial noise steering will turn into a right image?

    python benchmarks/bench_screening_signals.py --relations 2 --prompts 12 --seeds 16 --json runs/screening2.json
    python benchmarks/bench_screening_signals.py --from-json runs/screening2.json       # re-read a run

For tuning prompts (never the benchmark's) and tuning seeds: records each object's classifier-input
map while generating unsteered (``MapRecorder`` at steps 0, 2 and 4), then generates the same
prompt and seed steered by the shipped classifier at its settings, and judges it. Prints, per
step and per map feature, the within-prompt AUC (over pairs of one prompt's seeds, one steered
right and one wrong: how often the right one has the lower feature; 0.5 = no signal) and the
accuracy of keeping the lowest-feature seed of each group of ``--group`` seeds (what
``SteeringConfig.screen_noises`` would do with that feature), beside the plain accuracy.
Features: the classifier loss summed over the relations (what ``screen_noises`` scores), the largest
and the summed pairwise overlap of the objects' maps (each map normalised to sum 1: sum of minima),
minus the smallest map peak, the largest map entropy, minus the smallest distance between map centres.
"""
from __future__ import annotations

import argparse
import itertools
import json

import numpy as np

STEPS = (0, 2, 4)


def collect(n_relations: int, n_prompts: int, n_seeds: int) -> list[dict]:
    import torch
    from l2s.callbacks import MapRecorder
    from l2s.capture import select_layers
    from l2s.losses import labels_for, relation_loss
    from l2s.models import adapter_for
    from l2s.prompts import parse_prompt
    from l2s_shapes.benchmark import arm_steering, benchmark_prompts, seed_list
    from l2s_shapes.evaluate import evaluate
    from l2s_shapes.pipeline import load_shipped
    from l2s_shapes.relation_classifier import load_shipped_classifier
    pipe, clf = load_shipped(None), load_shipped_classifier(None)
    prompts, seeds = benchmark_prompts(n_relations, n_prompts, "tuning"), seed_list(n_seeds, "tuning")
    tokenizer = adapter_for(pipe.unet).object_tokenizer(pipe)
    layers = select_layers(pipe.unet, names=clf.meta["layers"])
    steering = arm_steering({"arm": "l2s"}, clf)
    rows = []
    for p in prompts:
        parsed = parse_prompt(p.text, tokenizer)
        with MapRecorder(pipe, parsed, STEPS, layers, clf.map_size) as rec:
            rec.generate(pipe, [p.text] * len(seeds), num_inference_steps=25,
                         generator=[torch.Generator().manual_seed(s) for s in seeds])
        labels = labels_for(clf, [t.relation for t in parsed.triplets])
        losses = {}
        for s in STEPS:
            maps = rec.maps[s]                                        # [B, relations, 2, S, S]
            B = maps.shape[0]
            losses[s] = sum(relation_loss(clf, torch.from_numpy(np.ascontiguousarray(maps[:, k])),
                                          np.full(B, labels[k], np.int32),
                                          np.full(B, clf.step_row(s, 25), np.int32))[0].double().numpy()
                            for k in range(maps.shape[1]))
        steered = evaluate(pipe, [p], seeds, steps=25, steering=steering)["results"]
        for b, seed in enumerate(seeds):
            rows.append({"prompt": p.text, "seed": seed, "verdict": steered[b]["failure"],
                         "subjects_objects": [[t.subject, t.object] for t in parsed.triplets],
                         **{f"loss{s}": float(losses[s][b]) for s in STEPS},
                         **{f"maps{s}": rec.maps[s][b].tolist() for s in STEPS}})
        print(p.text, [r["verdict"] for r in rows[-len(seeds):]], flush=True)
    return rows


def features(row: dict, step: int) -> dict:
    maps = np.array(row[f"maps{step}"])                               # [relations, 2, S, S]
    per_object = {}
    for k, (subject, obj) in enumerate(row["subjects_objects"]):
        per_object.setdefault(subject, maps[k, 0])
        per_object.setdefault(obj, maps[k, 1])
    objs = [m / max(float(m.sum()), 1e-12) for m in per_object.values()]
    pairs = list(itertools.combinations(range(len(objs)), 2))
    overlaps = [float(np.minimum(objs[a], objs[b]).sum()) for a, b in pairs]
    S = objs[0].shape[0]
    yy, xx = np.mgrid[0:S, 0:S]
    centres = [((m * xx).sum(), (m * yy).sum()) for m in objs]
    return {"classifier loss": row[f"loss{step}"], "max overlap": max(overlaps), "sum overlap": sum(overlaps),
            "- min peak": -min(float(m.max()) for m in objs),
            "max entropy": max(float(-(m * np.log(m + 1e-12)).sum()) for m in objs),
            "- min centre distance": -min(float(np.hypot(centres[a][0] - centres[b][0], centres[a][1] - centres[b][1]))
                                          for a, b in pairs)}


def report(rows: list[dict], group: int) -> None:
    right = [r["verdict"] == "correct" for r in rows]
    by_prompt: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_prompt.setdefault(r["prompt"], []).append(i)
    print(f"{len(rows)} images, {len(by_prompt)} prompts, steered accuracy {np.mean(right):.3f}")
    print(f"| step | feature | within-prompt AUC | keep lowest of {group}: accuracy |")
    print("|---|---|---|---|")
    for step in STEPS:
        feats = [features(r, step) for r in rows]
        for name in feats[0]:
            score = [f[name] for f in feats]
            wins = [1.0 if score[i] < score[j] else 0.5 if score[i] == score[j] else 0.0
                    for idx in by_prompt.values() for i in idx for j in idx if right[i] and not right[j]]
            kept = [right[min(idx[g: g + group], key=lambda i: score[i])]
                    for idx in by_prompt.values() for g in range(0, len(idx) - group + 1, group)]
            print(f"| {step} | {name} | {np.mean(wins):.3f} | {np.mean(kept):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--relations", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=12, help="tuning prompts")
    ap.add_argument("--seeds", type=int, default=16, help="tuning seeds per prompt (200..)")
    ap.add_argument("--group", type=int, default=4, help="seeds screened together")
    ap.add_argument("--json", help="save the rows (maps included) here")
    ap.add_argument("--from-json", help="re-read rows saved by --json instead of generating")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as fh:
            rows = json.load(fh)
    else:
        rows = collect(args.relations, args.prompts, args.seeds)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh)
    report(rows, args.group)


if __name__ == "__main__":
    main()
