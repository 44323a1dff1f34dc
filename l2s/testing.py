"""Random-weight diffusers models built from configs in code (no download): for tests and benchmarks.

``tiny_sd_pipeline``: a StableDiffusionPipeline (UNet2DConditionModel with cross-attention at two
levels, AutoencoderKL, CLIPTextModel and a CLIP BPE tokenizer whose vocabulary and merges the
caller's folder receives). ``tiny_flux``: a FluxTransformer2DModel with double- and single-stream
blocks. ``sd_unet``: the real Stable Diffusion 1.4 / 2.1 UNet architectures (random weights).
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch

# a few merges so that some words are one token and others several ("teddy bear" -> many)
MERGES = ["d o", "do g</w>", "c a", "ca t</w>", "b a", "ba ll</w>", "l l</w>", "o f</w>", "a b", "ab o", "abo v",
          "abov e</w>"]


def write_clip_tokenizer(folder: Path, max_length: int = 40):
    """A CLIP BPE tokenizer over letters, digits and a few merges, written to ``folder``."""
    from transformers import CLIPTokenizer
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(string.ascii_lowercase) + list(string.digits) + list(",.!?'-")
    vocab = {}
    for s in symbols:
        vocab.setdefault(s, len(vocab))
        vocab.setdefault(s + "</w>", len(vocab))
    for m in MERGES:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def write_t5_tokenizer(folder: Path, max_length: int = 64):
    """A T5-style sentencepiece-Unigram tokenizer ("▁" word marks, </s> appended, no BOS) over
    letters and a few whole words, written to ``folder``: the kind Flux and SD3 name objects with."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    folder.mkdir(parents=True, exist_ok=True)
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces = ["▁"] + list(string.ascii_lowercase) + [f"▁{c}" for c in string.ascii_lowercase] + list(",.;-'")
    words = ["▁a", "▁an", "▁the", "▁of", "▁to", "▁and", "▁left", "▁right", "▁above", "▁below", "▁dog", "▁cat",
             "▁bird", "▁teddy", "▁bear", "▁is", "▁photo", "▁with", "▁hat", "▁red", "▁circle", "▁blue", "▁square"]
    vocab = specials + [(p, -5.0) for p in pieces] + [(w, -2.0) for w in words]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                   model_max_length=max_length)
    fast.save_pretrained(str(folder))
    return fast


# the tiny UNet of the SD and SDXL test pipelines: cross-attention at two levels (16x16, 8x8)
TINY_UNET = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                 attention_head_dim=8, norm_num_groups=8)


def _sd_pipeline(tok, unet, text_encoder, vae):
    """StableDiffusionPipeline with SD's DDIM schedule (scaled-linear betas) and no safety checker."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def tiny_sd_pipeline(tmp_path: Path, seed: int = 0):
    from diffusers import UNet2DConditionModel
    tok = write_clip_tokenizer(tmp_path / "tokenizer")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET)
    vae = _tiny_vae()                            # built in this order: the seed's weights stay as they were
    return _ready(_sd_pipeline(tok, unet, _tiny_clip(tok, 32), vae))


def sd_pipeline(tmp_path: Path, name: str = "sd14", device: str = "cpu", dtype=torch.float32, seed: int = 0):
    """StableDiffusionPipeline around a random-weight UNet of a real SD architecture (``sd_unet``) and
    a CLIP-L-shaped text encoder (12 layers at the UNet's cross-attention width); the VAE is a tiny
    4-level one (scale factor 8, as SD's): it only sets the latent size when timing with
    ``output_type="latent"``."""
    from transformers import CLIPTextConfig, CLIPTextModel
    tok = write_clip_tokenizer(tmp_path / "tokenizer", max_length=77)
    unet = sd_unet(name, seed=seed)
    dim = unet.config.cross_attention_dim
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=dim, intermediate_size=4 * dim,
                                        num_hidden_layers=12, num_attention_heads=dim // 64, max_position_embeddings=77,
                                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id))
    return _ready(_sd_pipeline(tok, unet, text, _tiny_vae(levels=4)).to(device, dtype))


def tiny_flux(seed: int = 0):
    from diffusers import FluxTransformer2DModel
    torch.manual_seed(seed)
    return FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2,
                                  attention_head_dim=16, num_attention_heads=2, joint_attention_dim=24,
                                  pooled_projection_dim=12, guidance_embeds=False, axes_dims_rope=(4, 6, 6))


def flux_inputs(model, batch: int = 2, grid: tuple[int, int] = (6, 4), n_text: int = 7, seed: int = 0):
    """Random inputs of a FluxTransformer2DModel call as FluxPipeline makes them (packed latents)."""
    g = torch.Generator().manual_seed(seed)
    h, w = grid
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1] = torch.arange(h)[:, None]
    img_ids[..., 2] = torch.arange(w)[None, :]
    return dict(hidden_states=torch.randn(batch, h * w, model.config.in_channels, generator=g),
                encoder_hidden_states=torch.randn(batch, n_text, model.config.joint_attention_dim, generator=g),
                pooled_projections=torch.randn(batch, model.config.pooled_projection_dim, generator=g),
                timestep=torch.full((batch,), 0.7), img_ids=img_ids.reshape(h * w, 3),
                txt_ids=torch.zeros(n_text, 3), return_dict=False)


# Stable Diffusion UNets as their published configs describe them (architecture only)
SD_UNET_CONFIGS = {
    "sd14": dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
    "sd21": dict(sample_size=96, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1024,
                 attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
}


def sd_unet(name: str = "sd14", seed: int = 0, dtype=torch.float32):
    """A random-weight UNet2DConditionModel of a real SD architecture ("sd14" or "sd21")."""
    from diffusers import UNet2DConditionModel
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD_UNET_CONFIGS[name])
    return unet if dtype == torch.float32 else unet.to(dtype)


def _ready(pipe):
    """Models built from a config start in train mode (T5 has dropout): pipelines run them in eval."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_vae(latent_channels: int = 4, levels: int = 2):
    from diffusers import AutoencoderKL
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(16,) * levels,
                         down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
                         norm_num_groups=8, shift_factor=0.0)


def _tiny_clip(tok, hidden: int, with_projection: bool = False, projection_dim: int = 16):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    cfg = CLIPTextConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=tok.model_max_length, projection_dim=projection_dim,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)


def tiny_sdxl_pipeline(tmp_path: Path, seed: int = 0):
    """StableDiffusionXLPipeline: two CLIP text encoders (the second with projection), text_time
    added conditions, cross-attention at two levels."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    tok = write_clip_tokenizer(tmp_path / "tokenizer")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET, addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=6 * 8 + 16)
    sched = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                   timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=_tiny_vae(), text_encoder=_tiny_clip(tok, 16), tokenizer=tok,
                                     text_encoder_2=_tiny_clip(tok, 16, with_projection=True), tokenizer_2=tok,
                                     unet=unet, scheduler=sched)
    return _ready(pipe)


def tiny_flux_pipeline(tmp_path: Path, seed: int = 0):
    """FluxPipeline around ``tiny_flux``: CLIP (pooled) and T5 text encoders from small configs, a
    2-level VAE with 4 latent channels (packed 2x2 into the transformer's 16)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import T5Config, T5EncoderModel
    tok = write_clip_tokenizer(tmp_path / "tokenizer")
    torch.manual_seed(seed)
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=24, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_tiny_vae(), text_encoder=_tiny_clip(tok, 12),
                        tokenizer=tok, text_encoder_2=t5, tokenizer_2=tok, transformer=tiny_flux(seed))
    return _ready(pipe)


# FLUX.1-dev's transformer (diffusers' config of black-forest-labs/FLUX.1-dev): 19 double-stream and
# 38 single-stream blocks, 24 heads x 128, T5 width 4096, CLIP pooled 768, guidance embedding
FLUX_DEV_CONFIG = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                       num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                       guidance_embeds=True, axes_dims_rope=(16, 56, 56))


def flux_dev_pipeline(tmp_path: Path, layers: tuple[int, int] | None = None, device: str = "cpu",
                      dtype=torch.bfloat16, seed: int = 0):
    """FluxPipeline around a random-weight transformer of FLUX.1-dev's architecture (``layers`` =
    (double, single) block counts to shrink it for a smoke run), with small text encoders and VAE of
    the right widths: they run once per image in both arms of a timing, so only the transformer matters.
    Built directly on ``device`` (12B parameters: 24 GB in bfloat16)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel
    tok = write_clip_tokenizer(tmp_path / "tokenizer", max_length=77)
    config = dict(FLUX_DEV_CONFIG)
    if layers is not None:
        config["num_layers"], config["num_single_layers"] = layers
    torch.manual_seed(seed)
    with torch.device(device):
        transformer = FluxTransformer2DModel(**config).to(dtype)
        t5 = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=4096, d_kv=64, d_ff=256, num_layers=1, num_heads=2))
        pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
                            vae=_tiny_vae(latent_channels=16, levels=4), text_encoder=_tiny_clip(tok, 768),
                            tokenizer=tok, text_encoder_2=t5, tokenizer_2=tok, transformer=transformer)
    return _ready(pipe.to(device, dtype))


def tiny_sd3_pipeline(tmp_path: Path, seed: int = 0):
    """StableDiffusion3Pipeline: SD3Transformer2DModel (joint attention, patch 2, SD3.5's RMS q/k norms), two CLIP text
    encoders with projection and a T5 encoder from small configs."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import T5Config, T5EncoderModel
    tok = write_clip_tokenizer(tmp_path / "tokenizer")
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                        caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=16,
                                        qk_norm="rms_norm")
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=_tiny_vae(),
        text_encoder=_tiny_clip(tok, 16, with_projection=True), tokenizer=tok,
        text_encoder_2=_tiny_clip(tok, 16, with_projection=True), tokenizer_2=tok, text_encoder_3=t5, tokenizer_3=tok)
    return _ready(pipe)
