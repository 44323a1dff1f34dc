"""ShapesPipeline: a pixel-space text-to-image diffusers pipeline for the shapes world.

Its call mirrors StableDiffusionPipeline (classifier-free guidance with the batch laid out as
[negative, positive], ``scheduler.scale_model_input`` before the UNet, ``callback_on_step_end`` after
``scheduler.step`` with ``latents``, ``prompt_embeds`` and ``negative_prompt_embeds``), so the steering
hook treats it like SD. Latents are pixels in [-1, 1]: no VAE.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput
from dataclasses import dataclass


@dataclass
class ShapesPipelineOutput(BaseOutput):
    images: np.ndarray            # [B, S, S, 3] uint8 (output_type="np") or a list of PIL images ("pil")


# the guidance scale chosen for the shipped model: single-object accuracy on seeds 100-101 was 1.00 at
# 1.5, 0.84 at 2, 0.71 at 2.5, 0.49 at 3 (benchmarks/sweep_guidance.py): higher scales over-saturate
# colours and duplicate objects in this small model
DEFAULT_GUIDANCE = 1.5


class ShapesPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(self, unet, text_encoder, tokenizer, scheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        self._guidance_scale = DEFAULT_GUIDANCE

    @property
    def guidance_scale(self) -> float:
        """The guidance scale of the current (or last) call, as diffusers' pipelines expose it."""
        return self._guidance_scale

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        from .model import caption_ids
        return self.text_encoder(caption_ids(self.tokenizer, prompts).to(self.device)).last_hidden_state

    @staticmethod
    def to_images(latents: torch.Tensor) -> np.ndarray:
        x = ((latents.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_inference_steps: int = 25, guidance_scale: float | None = None,
                 negative_prompt: str | list[str] | None = None, num_images_per_prompt: int = 1,
                 generator: torch.Generator | list[torch.Generator] | None = None, latents: torch.Tensor | None = None,
                 output_type: str = "np", return_dict: bool = True,
                 callback_on_step_end: Callable | None = None,
                 callback_on_step_end_tensor_inputs: list[str] = ("latents",), progress: bool = False):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):   # as diffusers' pipelines do
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        bad = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(f"callback_on_step_end_tensor_inputs {bad} not in {self._callback_tensor_inputs}")
        B = len(prompts)
        prompt_embeds = self.encode_prompt(prompts)
        guidance_scale = DEFAULT_GUIDANCE if guidance_scale is None else guidance_scale     # None: the tuned one
        self._guidance_scale = guidance_scale
        do_cfg = guidance_scale > 1.0
        negative_prompt_embeds = None
        if do_cfg:
            neg = negative_prompt if negative_prompt is not None else ""
            neg = [neg] * B if isinstance(neg, str) else [n for n in neg for _ in range(num_images_per_prompt)]
            negative_prompt_embeds = self.encode_prompt(neg)
        size = self.unet.config.sample_size
        shape = (B, self.unet.config.in_channels, size, size)
        if latents is None:
            if isinstance(generator, list):
                latents = torch.cat([torch.randn((1,) + shape[1:], generator=g, dtype=self.unet.dtype) for g in generator])
            else:
                latents = torch.randn(shape, generator=generator, dtype=self.unet.dtype)
            latents = latents.to(self.device)
        latents = latents * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        for i, t in enumerate(self.progress_bar(timesteps) if progress else timesteps):
            model_in = torch.cat([latents] * 2) if do_cfg else latents
            model_in = self.scheduler.scale_model_input(model_in, t)
            cond = torch.cat([negative_prompt_embeds, prompt_embeds]) if do_cfg else prompt_embeds
            eps = self.unet(model_in, t, encoder_hidden_states=cond).sample
            if do_cfg:
                eps_neg, eps_pos = eps.chunk(2)
                eps = eps_neg + guidance_scale * (eps_pos - eps_neg)
            latents = self.scheduler.step(eps, t, latents).prev_sample
            if callback_on_step_end is not None:
                local = {"latents": latents, "prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_prompt_embeds}
                out = callback_on_step_end(self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs})
                latents = out.pop("latents", latents)
                prompt_embeds = out.pop("prompt_embeds", prompt_embeds)
                negative_prompt_embeds = out.pop("negative_prompt_embeds", negative_prompt_embeds)
        images = self.to_images(latents)
        if output_type == "pil":
            from PIL import Image
            images = [Image.fromarray(im) for im in images]
        elif output_type == "latent":
            images = latents
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ShapesPipelineOutput(images=images)


def build_pipeline(seed: int = 0, coords: bool = False, **unet_overrides) -> ShapesPipeline:
    """A randomly initialised pipeline of the shipped architecture (for training or tests);
    ``coords``: its UNet also reads pixel coordinates (``coord_unet.CoordUNet2DConditionModel``)."""
    from .model import build_scheduler, build_text_encoder, build_tokenizer, build_unet
    tok = build_tokenizer()
    return ShapesPipeline(unet=build_unet(seed, coords, **unet_overrides), text_encoder=build_text_encoder(tok, seed),
                          tokenizer=tok, scheduler=build_scheduler())


SHIPPED_MODEL = __import__("pathlib").Path(__file__).resolve().parent / "weights" / "shapes-pipeline"


def load_shipped(path=None, device: str = "cpu") -> ShapesPipeline:
    """The trained shapes-world pipeline that ships with l2s (or the one at ``path``)."""
    from pathlib import Path
    folder = Path(path) if path else SHIPPED_MODEL
    if not (folder / "model_index.json").exists():
        raise FileNotFoundError(f"no pipeline at {folder} (train one: python -m l2s train-model --out runs/shapes)")
    from . import coord_unet  # noqa: F401  (diffusers loads a saved CoordUNet only from an imported module)
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog
    dlog.disable_progress_bar(); tlog.disable_progress_bar()
    # low_cpu_mem_usage=False: the 7.8 MB model needs no `accelerate` (and diffusers stops suggesting it)
    return ShapesPipeline.from_pretrained(folder, low_cpu_mem_usage=False).to(device)
