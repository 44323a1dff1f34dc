"""Map stacks (the authors' classifier input): per-(layer, head) maps in their channel order,
tokens averaged, resized to 16x16 and renormalised — against a plain recording of the attention
probabilities on a tiny SD-layout UNet — and steering a tiny SD pipeline with a converted
checkpoint end to end."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import sd_replay
from l2s.capture import find_cross_attention_layers
from l2s.models import adapter_for
from l2s.steer import Steerer

PROMPT = "a dog to the left of a cat"


def _recorded_stack(sd, latents, t, cond, tokens, size=16):
    """The authors' recipe from full probabilities recorded by forward hooks (no l2s op)."""
    store = {}

    def hook(name):
        def fn(mod, args, kwargs, out):
            x = args[0]
            q = mod.to_q(x).unflatten(-1, (mod.heads, -1)).transpose(1, 2)
            k = mod.to_k(kwargs["encoder_hidden_states"]).unflatten(-1, (mod.heads, -1)).transpose(1, 2)
            p = torch.softmax(q @ k.transpose(-1, -2) * mod.scale, -1)               # [B, H, N, 77]
            side = int(round(p.shape[2] ** 0.5))
            store[name] = torch.stack([p[..., tk].mean(-1) for tk in tokens], 1).reshape(p.shape[0], len(tokens),
                                                                                           mod.heads, side, side)
        return fn
    layers = find_cross_attention_layers(sd.unet)
    handles = [l.module.register_forward_hook(hook(l.name), with_kwargs=True) for l in layers]
    try:
        with torch.no_grad():
            sd.unet(sd.scheduler.scale_model_input(latents, t), t, encoder_hidden_states=cond)
    finally:
        for h in handles:
            h.remove()
    by_side = sorted(layers, key=lambda l: l.side)                       # ascending side, forward order within
    out = []
    for l in by_side:
        m = store[l.name]
        B, T, H = m.shape[:3]
        m = F.interpolate(m.reshape(B * T * H, 1, *m.shape[-2:]), size=(size, size), mode="bilinear",
                          align_corners=False).reshape(B, T, H, size, size)
        out.append(m / (m.sum((-2, -1), keepdim=True) + 1e-8))
    return torch.cat(out, 2), by_side


def test_stack_channels_and_values_match_a_plain_recording(sd, tmp_path):
    from test_authors import _checkpoint
    from l2s import load_classifier
    from l2s.authors import convert_checkpoint
    path, _, _ = _checkpoint(tmp_path, "sd14")
    clf = load_classifier(convert_checkpoint(path, tmp_path / "clf"))
    steer = Steerer(sd, clf, PROMPT, loss_target=-1.0)
    assert steer.stack and [l.name for l in steer.layers] == \
        [l.name for l in adapter_for(sd.unet).stack_order(find_cross_attention_layers(sd.unet))]
    latents, t, cond, args = sd_replay(steer, sd, PROMPT, np.random.default_rng(0))
    trip = steer.parsed.triplets[0]
    tokens = [list(steer.parsed.objects[trip.subject].tokens), list(steer.parsed.objects[trip.object].tokens)]
    call, grid, n_text = steer.replay.with_sample(args, latents, t, sd.scheduler)
    with steer.replay.capture_maps(call, steer.layers, tokens, grid, n_text, 16, True, stack=True) as (x, _):
        got = x.detach()
    steer.close()
    want, by_side = _recorded_stack(sd, latents, t, cond, tokens)
    heads = sum(l.module.heads for l in by_side)
    assert got.shape == (1, 2, heads, 16, 16) == want.shape
    torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=1e-6)


def test_steering_a_tiny_sd_pipeline_with_a_converted_checkpoint(sd, tmp_path):
    from test_authors import _checkpoint
    from l2s import load_classifier
    from l2s.authors import convert_checkpoint
    path, _, order = _checkpoint(tmp_path, "sd14", shuffle=True)       # the authors' class names, shuffled
    clf = load_classifier(convert_checkpoint(path, tmp_path / "clf"))
    with Steerer(sd, clf, PROMPT, steps=[1], iterations=3, step_size=0.3, loss_target=-1.0) as steer:
        steer.generate(sd, PROMPT, num_inference_steps=4, guidance_scale=3.0, output_type="np",
                       generator=torch.Generator().manual_seed(0))
    losses = [r.loss for r in steer.records]
    assert len(losses) == 3 and losses[-1] < losses[0]                  # the updates lower the loss
    assert steer.records[0].label == order.index("to the left of")     # labels in the checkpoint's order
    assert steer.records[0].maps.shape[2] == sum(l.module.heads for l in steer.layers)


def test_a_stack_wider_than_the_checkpoint_is_refused(sd, tmp_path):
    from test_authors import _checkpoint
    from l2s import load_classifier
    from l2s.authors import convert_checkpoint
    path, _, _ = _checkpoint(tmp_path, "sd14")
    clf = load_classifier(convert_checkpoint(path, tmp_path / "clf"))
    clf.meta["input_channels"] = 4
    with pytest.raises(ValueError, match="reads at most 4"):
        Steerer(sd, clf, PROMPT)


class _RecordFluxProbs:
    """Wraps a Flux processor and keeps the full image-query x text-key probabilities per head,
    recomputed the way FluxAttnProcessor orders the sequence ([text, image], rotary on the whole)."""

    def __init__(self, inner, store, name, n_text):
        self.inner, self.store, self.name, self.n_text = inner, store, name, n_text

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        from helpers import flux_joint_qk
        q, k = (t.double() for t in flux_joint_qk(attn, hidden_states, encoder_hidden_states, image_rotary_emb))
        L = self.n_text                                               # softmax over the text keys only
        self.store[self.name] = torch.softmax(q[:, :, L:] @ k[:, :, :L].transpose(-1, -2) * attn.head_dim ** -0.5, -1)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)


def test_flux_stack_matches_a_plain_recording():
    """Flux stacks: double-stream blocks then single-stream ones, every head, tokens averaged, the
    6x4 grid resized to 16x16 and renormalised — against full probabilities recorded per head."""
    from l2s.capture import MapCapture
    from l2s.ops import combine_stacks
    from l2s.testing import flux_inputs, tiny_flux
    model = tiny_flux()
    inputs = flux_inputs(model, batch=1, seed=5)
    adapter = adapter_for(model)
    layers = adapter.stack_order(find_cross_attention_layers(model))
    assert [l.block for l in layers] == ["double", "double", "single", "single"]
    tokens = [[1], [2, 4]]
    store, originals = {}, {l.name: l.module.processor for l in layers}
    for l in layers:
        l.module.set_processor(_RecordFluxProbs(originals[l.name], store, l.name, 7))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for l in layers:
            l.module.set_processor(originals[l.name])
    want = []
    for l in layers:
        p = store[l.name]                                             # [1, H, 24, 7]
        m = torch.stack([p[..., tk].mean(-1) for tk in tokens], 1).reshape(1, 2, p.shape[1], 6, 4)
        m = F.interpolate(m.reshape(-1, 1, 6, 4), size=(16, 16), mode="bilinear", align_corners=False)
        want.append(m.reshape(1, 2, p.shape[1], 16, 16))
    want = torch.cat(want, 2)
    want = want / (want.sum((-2, -1), keepdim=True) + 1e-8)
    with torch.no_grad(), MapCapture(model, layers, early_exit=False, stack=True) as cap:
        cap.begin(tokens, (6, 4), n_text=7)
        model(**inputs)
        maps = cap.end()
    got = combine_stacks([maps[l.name] for l in layers], 16)
    assert got.shape == (1, 2, sum(l.module.heads for l in layers), 16, 16) == want.shape
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)


def test_steering_a_tiny_flux_pipeline_with_a_converted_checkpoint(tmp_path):
    from test_authors import _checkpoint
    from l2s import load_classifier
    from l2s.authors import convert_checkpoint
    from l2s.testing import tiny_flux_pipeline
    pipe = tiny_flux_pipeline(tmp_path)
    path, _, order = _checkpoint(tmp_path, "flux_dev")
    clf = load_classifier(convert_checkpoint(path, tmp_path / "clf"))
    with Steerer(pipe, clf, PROMPT, steps=[1], iterations=3, step_size=0.3, loss_target=-1.0) as steer:
        assert steer.stack and [l.block for l in steer.layers] == ["double", "double", "single", "single"]
        steer.generate(pipe, PROMPT, num_inference_steps=4, height=32, width=32, output_type="np",
                       generator=torch.Generator().manual_seed(0))
    losses = [r.loss for r in steer.records]
    assert len(losses) == 3 and losses[-1] < losses[0]                  # the updates lower the loss
    assert steer.records[0].label == order.index("to the left of")
    assert steer.records[0].maps.shape[2] == sum(l.module.heads for l in steer.layers)
