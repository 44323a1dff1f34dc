"""The authors' steering schedule as a preset (their loop constants, authors-format.md §5).

    Steerer(pipe, classifier, prompt, preset="paper")        # or --preset paper on the command line

Per model: steps 0-24 of 50 steered (FLUX.1-schnell: step 0 of 4), up to 16 gradient iterations per
step, each step's loss target by the step index (1e-5, 3e-5, 5e-5, then 7e-5), the plain update
``z -= step_size * grad`` with step size 7.5 (SD 1.4) or 5 (SD 2.1, Flux), and the resolution they ran
at. The steering pass runs on the conditional prompt only, as l2s always does. l2s's own default
(a few normalised steps, early exit, a loss target the classifier recommends) costs far less.
"""
from __future__ import annotations

from typing import Any

FAMILIES = ("sd14", "sd21", "flux-dev", "flux-schnell")
_TARGETS = [1e-5, 3e-5, 5e-5, 7e-5]
PAPER: dict[str, dict[str, Any]] = {
    "sd14": {"steps": list(range(25)), "step_size": 7.5, "num_inference_steps": 50, "resolution": 512},
    "sd21": {"steps": list(range(25)), "step_size": 5.0, "num_inference_steps": 50, "resolution": 512},
    "flux-dev": {"steps": list(range(25)), "step_size": 5.0, "num_inference_steps": 50, "resolution": 512},
    "flux-schnell": {"steps": [0], "step_size": 5.0, "num_inference_steps": 4, "resolution": 256},
}


def model_family(denoiser: Any, hint: str | None = None) -> str:
    """Which of the authors' models a denoiser is: the classifier's own word when it has one
    (``meta["family"]``), else its architecture (SD 2.x cross-attends 1024-wide OpenCLIP, SD 1.x
    768-wide CLIP; FLUX.1-schnell has no guidance embedding)."""
    if hint in FAMILIES:
        return hint
    cfg = getattr(denoiser, "config", {})
    if hasattr(denoiser, "single_transformer_blocks"):
        return "flux-dev" if cfg.get("guidance_embeds", False) else "flux-schnell"
    width = {768: "sd14", 1024: "sd21"}.get(int(cfg.get("cross_attention_dim", 0) or 0)) \
        if hasattr(denoiser, "down_blocks") else None
    if width:
        return width
    raise ValueError(f"the paper preset exists for {', '.join(FAMILIES)}; {type(denoiser).__name__} is none of them")


def paper_settings(family: str) -> dict[str, Any]:
    """``SteeringConfig`` fields of the authors' schedule for ``family``."""
    p = PAPER[family]
    return {"steps": list(p["steps"]), "iterations": 16, "step_size": p["step_size"], "normalize": False,
            "loss_target": _TARGETS[-1], "loss_targets": list(_TARGETS), "early_exit": True}
