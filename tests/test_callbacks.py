"""l2s/callbacks.py: the diffusers-native callback (chained in MultiPipelineCallbacks) and MapRecorder."""
import numpy as np
import pytest
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from l2s.callbacks import L2SCallback, MapRecorder
from l2s.capture import select_layers, stack_layers
from l2s.prompts import parse_prompt
from l2s.steer import Steerer

PROMPT = "a dog to the left of a cat"


class _Counter(PipelineCallback):
    """Another callback: counts its calls and sees the latents the previous callback returned."""
    tensor_inputs = ["latents"]

    def __init__(self):
        super().__init__()
        self.seen = []

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
        self.seen.append(callback_kwargs["latents"].clone())
        return callback_kwargs


def _args(steps=4):
    return dict(num_inference_steps=steps, guidance_scale=3.0, output_type="np", generator=torch.Generator().manual_seed(0))


def test_callback_chains_in_multipipelinecallbacks(sd, classifier):
    with Steerer(sd, classifier, PROMPT, steps=[1, 2], iterations=1, step_size=0.2, loss_target=-1.0) as alone:
        solo = sd(PROMPT, callback_on_step_end=alone.callback(), **_args()).images
    counter = _Counter()
    with Steerer(sd, classifier, PROMPT, steps=[1, 2], iterations=1, step_size=0.2, loss_target=-1.0) as steer:
        cb = steer.callback()
        assert isinstance(cb, L2SCallback) and isinstance(cb, PipelineCallback) and cb.tensor_inputs == ["latents"]
        chained = sd(PROMPT, callback_on_step_end=MultiPipelineCallbacks([cb, counter]), **_args()).images
    assert [r.step for r in steer.records] == [1, 2]                          # steered steps 1 and 2
    assert len(counter.seen) == 4                                              # the next callback ran every step
    np.testing.assert_allclose(chained, solo, atol=1e-6)                       # and changed nothing
    # a step the steerer leaves alone: it hands back the very kwargs it got (never {})
    out = steer.on_step_end(sd, 3, sd.scheduler.timesteps[3], {"latents": counter.seen[0], "extra": 1})
    assert out["extra"] == 1 and out["latents"] is counter.seen[0]


def test_map_recorder_reads_the_steering_maps_and_changes_nothing(sd, classifier):
    plain = sd(PROMPT, **_args()).images
    layers = select_layers(sd.unet)
    parsed = parse_prompt(PROMPT, sd.tokenizer)
    with MapRecorder(sd, parsed, steps=[0, 2], layers=layers, map_size=8) as rec:
        images = rec.generate(sd, PROMPT, **_args()).images
    np.testing.assert_array_equal(images, plain)
    assert sorted(rec.maps) == [0, 2] and rec.maps[0].shape == (1, 1, 2, 8, 8)
    np.testing.assert_allclose(rec.maps[2].sum((-2, -1)), 1.0, rtol=1e-5)
    # the maps a steerer's classifier reads at the same steps (step size 0: the same latents)
    with Steerer(sd, classifier, PROMPT, steps=[0, 2], iterations=1, step_size=0.0, loss_target=-1.0) as steer:
        steer.generate(sd, PROMPT, **_args())
    for r in steer.records:
        np.testing.assert_allclose(rec.maps[r.step][:, 0], r.maps, rtol=1e-5, atol=1e-7)


def test_map_recorder_records_stacks(sd):
    """stack=True: per-(layer, head) maps of the given layers, in their order: [B, triplets, 2, C, S, S]."""
    layers = stack_layers(sd.unet)
    parsed = parse_prompt(PROMPT, sd.tokenizer)
    with MapRecorder(sd, parsed, steps=[1], layers=layers, map_size=8, stack=True) as rec:
        rec.generate(sd, PROMPT, **_args())
    channels = sum(int(l.module.heads) for l in layers)
    assert rec.maps[1].shape == (1, 1, 2, channels, 8, 8)
    np.testing.assert_allclose(rec.maps[1].sum((-2, -1)), 1.0, rtol=1e-4)
