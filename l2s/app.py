"""A web app (Gradio): a prompt, a seed and the steering settings in; vanilla and steered images side
by side out, with the evaluator's verdict (shapes world), the classifier's relation probabilities,
the subject/object attention per steered step and the loss curve.

    python -m l2s app                                   # the shapes model and its classifier
    python -m l2s app --model PIPELINE_DIR --classifier CLASSIFIER_DIR

Prompts without a relation, unsupported relations and words the model does not know are said in the
page (the status line), never as a traceback.
"""
from __future__ import annotations

import io
import warnings
from typing import Any, Callable

import numpy as np


def render(pipe: Any, classifier: Any, prompt: str, seed: int, iterations: int, step_size: float,
           loss_target: float, steps: int = 25, describe: Callable[[str, np.ndarray], dict] | None = None,
           progress: Any = None) -> dict:
    """Vanilla and steered images of ``prompt`` from ``seed``, the steering records' plots and a
    status line. ``describe(prompt, image)``: the exact evaluator (shapes world) or None."""
    import torch

    from .plots import plot_attention, plot_curves
    from .prompts import PromptParseError
    from .steer import Steerer
    out: dict[str, Any] = {"status": "", "vanilla": None, "steered": None, "probabilities": {}, "maps": None,
                           "curves": None, "verdict": ""}
    if not prompt or not prompt.strip():
        out["status"] = "Type a prompt, e.g. 'a red circle to the left of a blue square'."
        return out
    kw = dict(num_inference_steps=int(steps))
    from .cli_checks import unknown_words
    unknown = unknown_words(getattr(pipe, "tokenizer", None), prompt) if getattr(pipe, "tokenizer", None) else []
    notes = [f"the model does not know {', '.join(repr(w) for w in unknown)}"] if unknown else []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            steer = Steerer(pipe, classifier, prompt, iterations=int(iterations), step_size=float(step_size),
                            loss_target=float(loss_target))
        notes += [str(w.message).removeprefix("l2s: ") for w in caught]
    except (PromptParseError, ValueError, TypeError) as exc:
        out["status"] = f"Cannot steer this prompt: {exc}"
        return out
    with steer:
        if progress is not None:
            progress(0.0, desc="vanilla")
        out["vanilla"] = pipe(prompt, generator=torch.Generator().manual_seed(int(seed)), **kw).images[0]
        if progress is not None:
            progress(0.5, desc="steered")
        out["steered"] = steer.generate(pipe, prompt, generator=torch.Generator().manual_seed(int(seed)), **kw).images[0]
    if not steer.active:
        notes.append("no spatial relation in the prompt: nothing to steer, both images are vanilla")
    elif steer.records:
        trip = steer.parsed.triplets[0]
        names = (steer.parsed.objects[trip.subject].name, steer.parsed.objects[trip.object].name)
        last = steer.records[-1]
        out["probabilities"] = {r: float(p) for r, p in zip(classifier.relations, last.probs[0])}
        out["maps"] = _png(plot_attention([r for r in steer.records if r.triplet == 0], out["steered"], names))
        out["curves"] = _png(plot_curves(steer.records))
    if steer.active and steer.config.screen_noises > 1:
        notes.append(f"the steered image starts from the best-scored of {steer.config.screen_noises} noises drawn "
                     "from this seed (screen_noises), so its layout need not resemble the vanilla one")
    if describe is not None:
        verdicts = {name: describe(prompt, np.asarray(out[name])).get("verdict", "n/a") for name in ("vanilla", "steered")}
        out["verdict"] = f"evaluator: vanilla {verdicts['vanilla']}, steered {verdicts['steered']}"
    out["status"] = "; ".join(notes) if notes else "done"
    return out


def _png(fig: Any) -> np.ndarray:
    """A matplotlib figure as an RGB array (Gradio shows arrays; no temporary files)."""
    import matplotlib.pyplot as plt
    from PIL import Image
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return np.asarray(Image.open(buf).convert("RGB"))


def build_app(pipe: Any, classifier: Any, describe: Callable[[str, np.ndarray], dict] | None = None,
              steps: int = 25, upscale: int = 4) -> Any:
    """The Gradio Blocks app around ``render`` (see the module doc)."""
    import gradio as gr

    rec = classifier.meta.get("steering", {})

    def run(prompt, seed, iterations, step_size, loss_target, progress=gr.Progress()):
        r = render(pipe, classifier, prompt, seed, iterations, step_size, loss_target, steps, describe, progress)
        big = lambda im: None if im is None else np.repeat(np.repeat(np.asarray(im), upscale, 0), upscale, 1)
        return (big(r["vanilla"]), big(r["steered"]), r["verdict"], r["probabilities"] or None, r["maps"], r["curves"],
                r["status"])

    with gr.Blocks(title="l2s: Learn-to-Steer") as app:
        gr.Markdown("# Learn-to-Steer\nSpatial relations steered by a learned loss on cross-attention maps.")
        with gr.Row():
            prompt = gr.Textbox(label="prompt", value="a red circle to the left of a blue square", elem_id="prompt")
            seed = gr.Number(label="seed", value=0, precision=0, minimum=0, elem_id="seed")
        with gr.Row():
            iterations = gr.Slider(0, 10, value=rec.get("iterations", 3), step=1, label="iterations per step")
            step_size = gr.Slider(0.0, 0.5, value=rec.get("step_size", 0.1), step=0.01, label="step size (RMS)")
            loss_target = gr.Slider(0.0, 1.0, value=rec.get("loss_target", 0.2), step=0.01, label="loss target")
        go = gr.Button("Generate", variant="primary", elem_id="generate")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            vanilla = gr.Image(label="vanilla", elem_id="vanilla")
            steered = gr.Image(label="steered", elem_id="steered")
        verdict = gr.Textbox(label="verdict", elem_id="verdict")
        probs = gr.Label(label="classifier: relation probabilities (last iteration)", elem_id="probabilities")
        with gr.Row():
            maps = gr.Image(label="subject / object attention per steered step", elem_id="maps")
            curves = gr.Image(label="loss per iteration, probability per step", elem_id="curves")
        go.click(run, [prompt, seed, iterations, step_size, loss_target],
                 [vanilla, steered, verdict, probs, maps, curves, status])
    return app
