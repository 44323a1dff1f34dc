"""shapes/l2s_shapes/pipeline.py and model.py: the diffusers stack, its callback contract and persistence."""
import numpy as np
import pytest
import torch

from l2s_shapes.model import MAX_LENGTH, build_tokenizer
from l2s_shapes.pipeline import ShapesPipeline, load_shipped


def test_tokenizer_words_and_unknowns():
    tok = build_tokenizer()
    ids = tok("A red circle, to the left of a teddy")["input_ids"]
    toks = tok.convert_ids_to_tokens(ids)
    assert toks[0] == "[BOS]" and toks[-1] == "[EOS]" and "red" in toks and "," in toks and toks[-2] == "[UNK]"
    assert len(tok(["x " * 100], truncation=True, max_length=MAX_LENGTH)["input_ids"][0]) == MAX_LENGTH


def test_generates_uint8_images(tiny_pipe):
    out = tiny_pipe(["a red circle", "a blue square"], num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 64, 64, 3) and out.images.dtype == np.uint8


def test_callback_sees_every_step_and_can_replace_latents(tiny_pipe):
    calls = []

    def cb(pipe, i, t, kw):
        calls.append((i, int(t), sorted(kw)))
        assert kw["prompt_embeds"].shape[0] == 1 and kw["negative_prompt_embeds"] is not None
        return {"latents": torch.zeros_like(kw["latents"])} if i == 2 else {}

    out = tiny_pipe("a red circle", num_inference_steps=3, callback_on_step_end=cb,
                    callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "negative_prompt_embeds"])
    assert [c[0] for c in calls] == [0, 1, 2] and calls[0][1] > calls[-1][1]
    assert (out.images == 128).all()           # the zeroed latents after the last step are what decodes


def test_bad_callback_inputs(tiny_pipe):
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        tiny_pipe("a red circle", num_inference_steps=1, callback_on_step_end=lambda *a: {},
                  callback_on_step_end_tensor_inputs=["noise_pred"])


def test_guidance_off_and_seeds(tiny_pipe):
    g = lambda s: torch.Generator().manual_seed(s)
    a = tiny_pipe("a red circle", num_inference_steps=2, guidance_scale=1.0, generator=g(1)).images
    b = tiny_pipe("a red circle", num_inference_steps=2, guidance_scale=1.0, generator=g(1)).images
    c = tiny_pipe("a red circle", num_inference_steps=2, guidance_scale=1.0, generator=g(2)).images
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_save_and_from_pretrained_roundtrip(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path)
    assert not list(tmp_path.rglob("*.bin")) and list(tmp_path.rglob("*.safetensors"))
    loaded = load_shipped(tmp_path)
    assert isinstance(loaded, ShapesPipeline)
    kw = dict(num_inference_steps=2, generator=torch.Generator().manual_seed(3))
    a = tiny_pipe("a green cross above a red circle", **kw).images
    kw["generator"] = torch.Generator().manual_seed(3)
    assert np.array_equal(a, loaded("a green cross above a red circle", **kw).images)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train one"):
        load_shipped(tmp_path / "nothing")
