"""l2s/capture.py on tiny random-weight SD UNet and Flux transformer: maps and gradients vs pure torch."""
import numpy as np
import pytest
import torch

from l2s.capture import (EarlyExit, MapCapture, combine_maps, find_cross_attention_layers, select_layers)
from reference import attn_maps_torch
from l2s.testing import flux_inputs, tiny_flux, tiny_sd_pipeline

TOKENS = [[3], [5, 6]]


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_sd_pipeline(tmp_path_factory.mktemp("sd"))


def _unet_inputs(unet, seed, batch=2, side=16):
    g = torch.Generator().manual_seed(seed)
    return dict(sample=torch.randn(batch, 4, side, side, generator=g), timestep=torch.tensor(500),
                encoder_hidden_states=torch.randn(batch, 12, unet.config.cross_attention_dim, generator=g))


def _reference_unet_maps(unet, inputs, tokens, dtype=torch.float64):
    """Maps of every attn2 layer from the layer's own inputs, in pure torch (forward hooks)."""
    maps = {}

    def hook(name):
        def fn(mod, args, kwargs, out):
            x, ctx = args[0] if args else kwargs["hidden_states"], kwargs["encoder_hidden_states"]
            q = mod.to_q(x).unflatten(-1, (mod.heads, -1)).transpose(1, 2).to(dtype)
            k = mod.to_k(ctx).unflatten(-1, (mod.heads, -1)).transpose(1, 2).to(dtype)
            maps[name] = attn_maps_torch(q, k, tokens, mod.scale)
        return fn
    handles = [l.module.register_forward_hook(hook(l.name), with_kwargs=True) for l in find_cross_attention_layers(unet)]
    try:
        unet(**inputs)
    finally:
        for h in handles:
            h.remove()
    return maps


def test_layer_discovery_and_selection(sd):
    layers = find_cross_attention_layers(sd.unet)
    assert [l.block for l in layers] == ["down", "down", "mid", "up", "up", "up", "up"]
    assert [l.side for l in layers] == [16, 8, 8, 8, 8, 16, 16]
    assert [l.block for l in select_layers(sd.unet)] == ["up", "up", "up", "up"]
    assert {l.side for l in select_layers(sd.unet, blocks=("up",), sides=(16,))} == {16}
    with pytest.raises(ValueError, match="no cross-attention layer"):
        select_layers(sd.unet, blocks=("up",), sides=(64,))
    with pytest.raises(ValueError, match="unknown"):
        select_layers(sd.unet, names=["nope"])
    with pytest.raises(TypeError):
        find_cross_attention_layers(torch.nn.Linear(2, 2))


def test_unet_maps_match_pure_torch(sd, rng):
    unet = sd.unet
    inputs = _unet_inputs(unet, int(rng.integers(1 << 30)))
    with torch.no_grad():
        ref = _reference_unet_maps(unet, inputs, TOKENS)
    layers = find_cross_attention_layers(unet)
    with torch.no_grad(), MapCapture(unet, layers, early_exit=False) as cap:
        cap.begin(TOKENS, (16, 16))
        out = unet(**inputs).sample
        maps = cap.end()
    assert set(maps) == set(ref)
    for name, m in maps.items():
        side = 16 if m.shape[-1] == 16 else 8
        assert m.shape == (2, 2, side, side) and m.dtype == torch.float32
        np.testing.assert_allclose(m.reshape(2, 2, -1).numpy(), ref[name].numpy(), rtol=1e-4, atol=1e-6)
    # the layer outputs are untouched by the capture
    with torch.no_grad():
        np.testing.assert_array_equal(unet(**inputs).sample.numpy(), out.numpy())


def test_processors_restored_even_after_an_error(sd):
    before = dict(sd.unet.attn_processors)
    layers = select_layers(sd.unet)
    with pytest.raises(RuntimeError, match="boom"):
        with MapCapture(sd.unet, layers):
            assert any(type(p).__name__ == "UNetCaptureProcessor" for p in sd.unet.attn_processors.values())
            raise RuntimeError("boom")
    after = sd.unet.attn_processors
    assert all(after[k] is before[k] for k in before)


def test_inactive_capture_records_nothing(sd):
    with torch.no_grad(), MapCapture(sd.unet, select_layers(sd.unet)) as cap:
        sd.unet(**_unet_inputs(sd.unet, 0))
        assert cap.maps == {}


def test_early_exit_skips_the_rest_of_the_unet(sd):
    unet = sd.unet
    inputs = _unet_inputs(unet, 3)
    calls = []
    handle = unet.up_blocks[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        layers = select_layers(unet, blocks=("down", "mid"))
        with torch.no_grad(), MapCapture(unet, layers, early_exit=True) as cap:
            cap.begin(TOKENS, (16, 16))
            with pytest.raises(EarlyExit):
                unet(**inputs)
            early = cap.end()
        assert calls == [] and len(early) == len(layers)
        with torch.no_grad(), MapCapture(unet, layers, early_exit=False) as cap:
            cap.begin(TOKENS, (16, 16))
            unet(**inputs)
            full = cap.end()
        assert calls == [1]
        for name in early:
            torch.testing.assert_close(early[name], full[name], rtol=0, atol=0)
    finally:
        handle.remove()


def test_gradient_to_the_latent_matches_pure_torch(sd, rng):
    """d/d(sample) of a weighted sum of the combined 8x8 maps: C ops + autograd Functions vs torch."""
    unet = sd.unet
    inputs = _unet_inputs(unet, int(rng.integers(1 << 30)))
    weights = torch.tensor(rng.normal(size=(2, 2, 8, 8)), dtype=torch.float32)
    layers = select_layers(unet)

    z = inputs["sample"].clone().requires_grad_(True)
    with MapCapture(unet, layers) as cap:
        cap.begin(TOKENS, (16, 16))
        try:
            unet(**{**inputs, "sample": z})
        except EarlyExit:
            pass
        maps = cap.end()
    x = combine_maps([maps[l.name] for l in layers], 8)
    (x * weights).sum().backward()

    z_ref = inputs["sample"].clone().requires_grad_(True)
    ref = _reference_unet_maps(unet, {**inputs, "sample": z_ref}, TOKENS, dtype=torch.float32)
    per_layer = []
    for l in layers:
        m = ref[l.name]
        side = int(m.shape[-1] ** 0.5)
        m = m.reshape(2, 2, side, side)
        if side != 8:
            m = torch.nn.functional.interpolate(m, size=(8, 8), mode="bilinear", align_corners=False)
        per_layer.append(m)
    x_ref = torch.stack(per_layer).mean(0)
    x_ref = x_ref / (x_ref.sum((-2, -1), keepdim=True) + 1e-8)
    (x_ref * weights).sum().backward()
    torch.testing.assert_close(x.detach(), x_ref.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=2e-3, atol=1e-6 * z_ref.grad.abs().max().item())


# ---------------------------------------------------------------------------------------------- Flux

class _ReferenceFluxProbs:
    """Wraps a Flux processor; recomputes the joint attention's query/key the way FluxAttnProcessor
    orders it (concatenate [text, image], then rotary on the whole sequence) and keeps the
    image-query x text-key softmax over text keys of the chosen tokens."""

    def __init__(self, inner, store, name, n_text, tokens):
        self.inner, self.store, self.name, self.n_text, self.tokens = inner, store, name, n_text, tokens

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        from helpers import flux_joint_qk
        q, k = flux_joint_qk(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        L = self.n_text
        self.store[self.name] = attn_maps_torch(q[:, :, L:].double(), k[:, :, :L].double(), self.tokens,
                                                attn.head_dim ** -0.5)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)


def test_flux_maps_match_pure_torch(rng):
    model = tiny_flux()
    inputs = flux_inputs(model, seed=int(rng.integers(1 << 30)))
    layers = find_cross_attention_layers(model)
    assert [l.block for l in layers] == ["double", "double", "single", "single"]
    assert [l.block for l in select_layers(model)] == ["double", "double"]
    tokens = [[1], [2, 4]]
    ref = {}
    originals = {l.name: l.module.processor for l in layers}
    for l in layers:
        l.module.set_processor(_ReferenceFluxProbs(originals[l.name], ref, l.name, 7, tokens))
    with torch.no_grad():
        out_ref = model(**inputs)[0]
    for l in layers:
        l.module.set_processor(originals[l.name])
    with torch.no_grad(), MapCapture(model, layers, early_exit=False) as cap:
        cap.begin(tokens, (6, 4), n_text=7)
        out = model(**inputs)[0]
        maps = cap.end()
    torch.testing.assert_close(out, out_ref, rtol=0, atol=0)
    for name, m in maps.items():
        assert m.shape == (2, 2, 6, 4)
        np.testing.assert_allclose(m.reshape(2, 2, -1).numpy(), ref[name].numpy(), rtol=1e-4, atol=1e-6)


def test_flux_gradient_matches_pure_torch(rng):
    model = tiny_flux()
    inputs = flux_inputs(model, seed=int(rng.integers(1 << 30)))
    layers = find_cross_attention_layers(model)
    tokens = [[0, 3], [5]]
    w = torch.tensor(rng.normal(size=(2, 2, 6, 4)), dtype=torch.float32)

    z = inputs["hidden_states"].clone().requires_grad_(True)
    with MapCapture(model, layers) as cap:
        cap.begin(tokens, (6, 4), n_text=7)
        try:
            model(**{**inputs, "hidden_states": z})
        except EarlyExit:
            pass
        maps = cap.end()
    (torch.stack([maps[l.name] for l in layers]).sum(0) * w).sum().backward()

    ref = {}
    originals = {l.name: l.module.processor for l in layers}
    z_ref = inputs["hidden_states"].clone().double().requires_grad_(True)
    model.double()
    try:
        for l in layers:
            l.module.set_processor(_ReferenceFluxProbs(originals[l.name], ref, l.name, 7, tokens))
        model(**{k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in inputs.items()}
              | {"hidden_states": z_ref})
        (torch.stack([ref[l.name] for l in layers]).sum(0).reshape(2, 2, 6, 4) * w.double()).sum().backward()
    finally:
        for l in layers:
            l.module.set_processor(originals[l.name])
        model.float()
    torch.testing.assert_close(z.grad.double(), z_ref.grad, rtol=2e-3, atol=1e-5 * z_ref.grad.abs().max().item())


def test_sd3_maps_match_pure_torch(rng, tmp_path):
    """SD3 joint attention: the reference concatenates [image, text] as JointAttnProcessor2_0 does
    and takes image-query rows x text-key columns, softmax over the text keys."""
    from l2s.testing import tiny_sd3_pipeline
    model = tiny_sd3_pipeline(tmp_path).transformer
    layers = find_cross_attention_layers(model)
    assert [(l.block, l.side) for l in layers] == [("joint", 8), ("joint", 8)]
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    inputs = dict(hidden_states=torch.randn(2, 4, 16, 12, generator=g), encoder_hidden_states=torch.randn(2, 9, 32, generator=g),
                  pooled_projections=torch.randn(2, 32, generator=g), timestep=torch.tensor([500.0, 500.0]),
                  return_dict=False)
    tokens = [[2], [4, 5]]
    ref = {}

    def hook(name):
        def fn(mod, args, kwargs, out):
            x, ctx = kwargs["hidden_states"], kwargs["encoder_hidden_states"]
            q = torch.cat([mod.norm_q(mod.to_q(x).unflatten(-1, (mod.heads, -1))),
                           mod.norm_added_q(mod.add_q_proj(ctx).unflatten(-1, (mod.heads, -1)))], 1)
            k = torch.cat([mod.norm_k(mod.to_k(x).unflatten(-1, (mod.heads, -1))),
                           mod.norm_added_k(mod.add_k_proj(ctx).unflatten(-1, (mod.heads, -1)))], 1)
            n = x.shape[1]
            ref[name] = attn_maps_torch(q[:, :n].transpose(1, 2).double(), k[:, n:].transpose(1, 2).double(), tokens,
                                        q.shape[-1] ** -0.5)
        return fn
    handles = [l.module.register_forward_hook(hook(l.name), with_kwargs=True) for l in layers]
    with torch.no_grad():
        model(**inputs)
    for h in handles:
        h.remove()
    with torch.no_grad(), MapCapture(model, layers, early_exit=False) as cap:
        cap.begin(tokens, (8, 6))
        model(**inputs)
        maps = cap.end()
    for name, m in maps.items():
        assert m.shape == (2, 2, 8, 6)
        np.testing.assert_allclose(m.reshape(2, 2, -1).numpy(), ref[name].numpy(), rtol=1e-4, atol=1e-6)


def test_grid_mismatch_is_a_clear_error(sd):
    with torch.no_grad(), MapCapture(sd.unet, select_layers(sd.unet)) as cap:
        cap.begin(TOKENS, (15, 16))
        with pytest.raises(RuntimeError, match="do not tile"):
            sd.unet(**_unet_inputs(sd.unet, 0))


def test_flux_fused_projections_give_the_same_maps():
    model = tiny_flux()
    inputs = flux_inputs(model, seed=7)
    layers = find_cross_attention_layers(model)

    def maps():
        with torch.no_grad(), MapCapture(model, layers, early_exit=False) as cap:
            cap.begin([[1], [2, 4]], (6, 4), n_text=7)
            model(**inputs)
            return cap.end()
    plain = maps()
    model.fuse_qkv_projections()
    assert all(l.module.fused_projections for l in layers)
    fused = maps()
    for name in plain:
        torch.testing.assert_close(fused[name], plain[name], rtol=1e-5, atol=1e-7)
