"""The shapes-world text-to-image stack, all real diffusers/transformers classes built from configs:
a word-level tokenizer over the world's vocabulary, a small CLIP text encoder, a pixel-space
UNet2DConditionModel (64 px, cross-attention at 16x16 and 8x8) and a DDIM scheduler.
"""
from __future__ import annotations

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from l2s.relations import RELATIONS
from .scenes import COLOURS, SHAPES

SPECIAL = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
# every word the caption templates and common relation phrasings use
WORDS = sorted(set(" ".join(RELATIONS).split()) | set(COLOURS) | set(SHAPES) | {
    "a", "an", "the", "photo", "of", "and", ",", "on", "plain", "background", "to", "left", "right",
    "top", "over", "under", "beneath", "next", "image", "picture", "with"})
MAX_LENGTH = 24      # "a photo of a red circle to the left of a blue square above a green triangle" + BOS/EOS fits

UNET_CONFIG = dict(
    sample_size=64, in_channels=3, out_channels=3, layers_per_block=1,
    block_out_channels=(32, 48, 64, 64),
    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    cross_attention_dim=64, attention_head_dim=8, norm_num_groups=8,
)
TEXT_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                   max_position_embeddings=MAX_LENGTH, projection_dim=64)
# v-prediction: with epsilon-prediction the image's global brightness (light backgrounds, mean ~ +0.7)
# must be read off x0 = (x_t - sqrt(1-a) eps) / sqrt(a), which amplifies errors ~20000x at t=999; a first
# run learned to denoise (x0 MSE 0.004 at t=400) yet sampled dark, noisy images. v keeps x0 = sqrt(a) x_t -
# sqrt(1-a) v well conditioned. Sampling starts at t=999 (trailing spacing: pure noise, as trained) and
# clips x0 to the pixel range.
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                        timestep_spacing="trailing", clip_sample=True, set_alpha_to_one=False, steps_offset=0)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer: lower-case words and commas; unknown words map to [UNK]."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]",
                                   unk_token="[UNK]", model_max_length=MAX_LENGTH)


def caption_ids(tokenizer: PreTrainedTokenizerFast, captions: list[str]):
    """Token ids [N, MAX_LENGTH] of captions, padded and truncated as the text encoder reads them."""
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def build_text_encoder(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> CLIPTextModel:
    import torch
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **TEXT_CONFIG)
    return CLIPTextModel(cfg)


def build_unet(seed: int = 0, coords: bool = False, **overrides):
    """The shipped UNet architecture; ``coords``: the variant that also reads pixel coordinates
    (``coord_unet.CoordUNet2DConditionModel``)."""
    import torch
    from diffusers import UNet2DConditionModel
    torch.manual_seed(seed)
    if coords:
        from .coord_unet import CoordUNet2DConditionModel as cls
    else:
        cls = UNet2DConditionModel
    return cls(**{**UNET_CONFIG, **overrides})


def build_scheduler():
    from diffusers import DDIMScheduler
    return DDIMScheduler(**SCHEDULER_CONFIG)
