"""Classifier folders as the Hub lays out a small model: ``config.json``, ``model.safetensors`` and a
``README.md`` model card (what ``huggingface_hub.ModelHubMixin`` reads and writes).

``load_classifier(PATH_OR_REPO_ID)`` opens any saved classifier: a folder, the older
``STEM.json`` + ``STEM.safetensors`` pair, or a Hub repo id. A local folder never touches the
network; a repo id is tried only when the Hub's host resolves (and ``HF_HUB_OFFLINE`` is not set),
otherwise the local cache is asked and a clear error names what was looked for — no retries that
look like a hang.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
HUB_HOST = "huggingface.co"


def write_folder(classifier: Any, folder: Path) -> None:
    """config.json + model.safetensors + README.md (the model card) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(classifier.config.to_json())
    classifier.save_weights(folder / WEIGHTS)
    (folder / CARD).write_text(model_card(classifier.config))


def _hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    old = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo(HUB_HOST, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(old)


def folder_files(model_id: str, revision: str | None = None, cache_dir: Any = None, force_download: bool = False,
                 local_files_only: bool = False, token: Any = None) -> tuple[Path, Path]:
    """(config.json, model.safetensors) of a local folder, or of a Hub repo (downloaded or cached)."""
    folder = Path(model_id)
    if folder.is_dir():
        missing = [n for n in (CONFIG, WEIGHTS) if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a classifier folder: it lacks {', '.join(missing)}")
        return folder / CONFIG, folder / WEIGHTS
    from huggingface_hub import hf_hub_download
    offline = local_files_only or not _hub_reachable()
    try:
        paths = [Path(hf_hub_download(repo_id=model_id, filename=name, revision=revision, cache_dir=cache_dir,
                                      force_download=force_download, local_files_only=offline, token=token))
                 for name in (CONFIG, WEIGHTS)]
    except Exception as exc:                            # the hub's errors name repos and URLs, not our folder
        where = "the Hub cannot be reached and it is not in the local cache" if offline else f"the Hub says: {exc}"
        raise FileNotFoundError(f"no classifier folder at {model_id!r}, and as a Hub repo id: {where}") from None
    return paths[0], paths[1]


def load_classifier(path_or_repo_id: str | Path) -> Any:
    """Any saved classifier: a folder (config.json + model.safetensors: l2s's own MLP, or one converted
    from the authors' checkpoint), the older STEM pair (STEM.json + STEM.safetensors; the STEM or
    either file may be given) or a Hub repo id."""
    from .authors import KIND, AuthorsClassifier
    from .classifier import RelationClassifier
    p = Path(path_or_repo_id)
    if p.is_dir():
        if (p / CONFIG).is_file() and json.loads((p / CONFIG).read_text()).get("kind") == KIND:
            return AuthorsClassifier(p)                      # converted from the authors' checkpoint
        return RelationClassifier.from_pretrained(p)
    stem = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
    if stem.with_suffix(".json").is_file() and stem.with_suffix(".safetensors").is_file():
        return RelationClassifier.load(stem)
    config_json, weights = folder_files(str(path_or_repo_id))
    return RelationClassifier.from_files(config_json, weights)


def card_front_matter(license: str, base_model: str | None = None) -> list[str]:
    """The YAML block the Hub reads at the top of every classifier card."""
    front = {"library_name": "l2s", "license": license,
             "tags": ["learn-to-steer", "relation-classifier", "spatial-relations"]}
    if base_model:
        front["base_model"] = base_model
    return ["---"] + [f"{k}: {json.dumps(v)}" for k, v in front.items()] + ["---"]


def model_card(config: Any) -> str:
    """The README.md of a classifier folder: Hub metadata, then what a user needs to use it well."""
    meta = dict(config.meta)
    base = meta.get("base_model") or meta.get("pipeline") or meta.get("model") or "unknown"
    steering = meta.get("steering") or {}
    lines = card_front_matter(meta.get("license", "other"), meta.get("base_model")) + ["",
             "# Learn-to-Steer relation classifier", "",
             "Reads the spatial relation between two objects from their cross-attention maps; used as the "
             "steering loss by l2s (`l2s.load_classifier(folder)`, then `Steerer(pipe, clf, prompt)`).",
             "", "| | |", "|---|---|",
             f"| base model | {base} |",
             f"| kind | {config.kind}: {config.n_maps} maps of {config.map_size}x{config.map_size} (head- and layer-averaged), "
             f"step embedding {config.n_steps}x{config.step_dim}, hidden {config.hidden1}/{config.hidden2} |",
             f"| relations (class order) | {', '.join(config.relations)} |",
             f"| layers read | {len(meta.get('layers', []))}: {', '.join(meta.get('layers', [])[:4])}"
             f"{' ...' if len(meta.get('layers', [])) > 4 else ''} |",
             f"| steps read | {meta.get('step_indices', 'unknown')} of {meta.get('num_inference_steps', 'unknown')} |",
             f"| training data | {meta.get('n_examples', 'unknown')} images, {meta.get('train_rows', 'unknown')} rows; "
             f"inversion: {meta.get('inversion_mode', 'unknown')}, dual: {meta.get('dual_inversion', meta.get('dual', 'unknown'))} |",
             f"| validation accuracy | {_num(meta.get('val_accuracy'))} |",
             f"| generation-time accuracy | {_num(meta.get('generation_accuracy'))} |",
             f"| recommended steering | {json.dumps(steering) if steering else 'the SteeringConfig defaults'} |",
             f"| licence | {meta.get('license', 'other (not stated: set meta license)')} |", ""]
    return "\n".join(lines)


def _num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "not measured"
