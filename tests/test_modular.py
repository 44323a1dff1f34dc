"""l2s/modular.py: the steering block inside the Modular Diffusers SDXL and Flux denoise loops,
on tiny random-weight pipelines built in code."""
import numpy as np
import pytest
import torch

from l2s.modular import SteeringLoopBlock, add_steering, remove_steering, steering
from l2s.steer import Steerer

PROMPT = "a dog to the left of a cat"


def _sdxl(tmp_path):
    from diffusers.modular_pipelines.stable_diffusion_xl import StableDiffusionXLAutoBlocks

    from l2s.testing import tiny_sdxl_pipeline
    pipe = tiny_sdxl_pipeline(tmp_path)
    blocks = StableDiffusionXLAutoBlocks()
    assert add_steering(blocks) >= 1                       # every denoise loop (text2img, inpaint, controlnet)
    mp = blocks.init_pipeline()
    mp.update_components(unet=pipe.unet, vae=pipe.vae, text_encoder=pipe.text_encoder,
                         text_encoder_2=pipe.text_encoder_2, tokenizer=pipe.tokenizer, tokenizer_2=pipe.tokenizer_2,
                         scheduler=pipe.scheduler)
    return mp, {}


def _flux(tmp_path):
    from diffusers.modular_pipelines.flux import FluxAutoBlocks

    from l2s.testing import tiny_flux_pipeline
    pipe = tiny_flux_pipeline(tmp_path)
    blocks = FluxAutoBlocks()
    assert add_steering(blocks) == 1
    mp = blocks.init_pipeline()
    mp.update_components(transformer=pipe.transformer, vae=pipe.vae, text_encoder=pipe.text_encoder,
                         text_encoder_2=pipe.text_encoder_2, tokenizer=pipe.tokenizer, tokenizer_2=pipe.tokenizer_2,
                         scheduler=pipe.scheduler)
    return mp, {"max_sequence_length": 32}


@pytest.mark.parametrize("build", [_sdxl, _flux], ids=["sdxl", "flux"])
def test_the_block_steers_inside_the_loop_and_only_when_attached(build, classifier, tmp_path):
    mp, extra = build(tmp_path)
    kw = dict(prompt=PROMPT, num_inference_steps=4, height=32, width=32, output="images", output_type="np", **extra)
    run = lambda: np.asarray(mp(generator=torch.Generator().manual_seed(0), **kw)[0], float)
    plain = run()                                          # the block is there but no steerer: nothing changes
    with Steerer(mp, classifier, PROMPT, steps=[0, 1], iterations=2, step_size=0.3, loss_target=-1.0) as st, \
            steering(mp, st):
        steered = run()
    assert [r.step for r in st.records] == [0, 0, 1, 1]                 # step 0 too (the block runs first)
    assert st.records[1].loss < st.records[0].loss                      # the iterations lower the loss
    assert np.abs(steered - plain).max() > 1e-3
    np.testing.assert_array_equal(run(), plain)                         # detached again: bit-identical
    with Steerer(mp, classifier, PROMPT, restart=(2, 1)) as st, pytest.warns(UserWarning, match="restart is not applied"):
        with steering(mp, st):
            pass
    remove_steering(mp)
    assert not any(isinstance(b, SteeringLoopBlock) for b in mp._blocks.sub_blocks.values())
    np.testing.assert_array_equal(run(), plain)
