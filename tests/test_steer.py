"""l2s/steer.py on a tiny random-weight StableDiffusionPipeline: the hook end to end."""
import math
import warnings

import numpy as np
import pytest
import torch

from l2s.capture import find_cross_attention_layers
from l2s.classifier import ClassifierConfig, RelationClassifier, relation_index
from l2s.prompts import make_triplets
from l2s.steer import Steerer, SteeringConfig
from helpers import sd_replay
from reference import classifier_torch
from l2s.testing import tiny_sd_pipeline

PROMPT = "a dog to the left of a cat"


def _run(pipe, steer=None, steps=4, seed=0, prompt=PROMPT):
    args = dict(num_inference_steps=steps, guidance_scale=3.0, output_type="np", generator=torch.Generator().manual_seed(seed))
    if steer is None:
        return pipe(prompt, **args).images
    return steer.generate(pipe, prompt, **args).images


def test_steering_lowers_the_classifier_loss(sd, classifier):
    with Steerer(sd, classifier, PROMPT, iterations=4, step_size=0.3, loss_target=0.0) as steer:
        images = _run(sd, steer)
    assert np.isfinite(images).all()
    assert {r.step for r in steer.records} == {0, 1}                       # first half of 4 steps
    for step in (0, 1):
        losses = [r.loss for r in steer.records if r.step == step]
        assert len(losses) == 4
        assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.9 * losses[0], losses
    rec = steer.records[0]
    assert rec.relation == "left of" and rec.maps.shape == (1, 2, 8, 8) and len(rec.grad_norm) == 1
    assert abs(sum(rec.probs[0]) - 1) < 1e-5


def test_no_relation_prompt_is_bit_identical_and_untouched(sd, classifier):
    before = dict(sd.unet.attn_processors)
    hooks_before = len(sd.unet._forward_pre_hooks)
    steer = Steerer(sd, classifier, "a dog and a cat")
    assert not steer.active and len(sd.unet._forward_pre_hooks) == hooks_before
    plain = _run(sd, prompt="a dog and a cat")
    out = steer.generate(sd, "a dog and a cat", num_inference_steps=4, guidance_scale=3.0, output_type="np",
                         generator=torch.Generator().manual_seed(0)).images
    np.testing.assert_array_equal(out, plain)
    assert steer.records == []
    assert all(sd.unet.attn_processors[k] is v for k, v in before.items())


def test_zero_step_size_reproduces_the_unhooked_pipeline(sd, classifier):
    """The hook's own plumbing (initial latents, step-0 probe, callback) changes nothing by itself."""
    plain = _run(sd)
    with Steerer(sd, classifier, PROMPT, iterations=2, step_size=0.0, loss_target=0.0) as steer:
        out = _run(sd, steer)
    np.testing.assert_array_equal(out, plain)
    assert len(steer.records) == 4


def test_processors_and_hooks_restored(sd, classifier):
    before = dict(sd.unet.attn_processors)
    n_hooks = len(sd.unet._forward_pre_hooks)
    with Steerer(sd, classifier, PROMPT, iterations=1) as steer:
        _run(sd, steer, steps=2)
        assert all(sd.unet.attn_processors[k] is v for k, v in before.items())
    assert len(sd.unet._forward_pre_hooks) == n_hooks


def test_callback_form_steers_steps_after_the_first(sd, classifier):
    with Steerer(sd, classifier, PROMPT, iterations=1, loss_target=0.0) as steer:
        sd(PROMPT, num_inference_steps=6, guidance_scale=3.0, output_type="np",
           generator=torch.Generator().manual_seed(1), callback_on_step_end=steer,
           callback_on_step_end_tensor_inputs=steer.tensor_inputs)
    assert [r.step for r in steer.records] == [1, 2]
    assert [r.timestep for r in steer.records] == [float(t) for t in sd.scheduler.timesteps[1:3]]


def test_gradient_matches_a_pure_torch_loss(sd, classifier, rng):
    """The steering gradient (early-exit forward, C extraction/resize/normalise/classifier) equals
    torch autograd through the whole UNet with torch maps and a torch classifier."""
    steer = Steerer(sd, classifier, PROMPT, loss_target=-1.0)
    latents, t, cond, args = sd_replay(steer, sd, PROMPT, rng)
    trip = steer.parsed.triplets[0]
    label = relation_index(classifier.config, [trip.relation])
    with steer.loss_pass(sd, latents, torch.float32, t, args, trip, label, np.array([2], np.int32)) as (_, losses, _, grad):
        g = grad()                                   # one graph: maps -> classifier loss -> latent
    loss = float(losses.sum())
    steer.close()

    z = latents.clone().requires_grad_(True)
    tokens = [list(o.tokens) for o in steer.parsed.objects]
    store = {}

    def hook(name):
        def fn(mod, a, kw, out):
            q = mod.to_q(a[0]).unflatten(-1, (mod.heads, -1)).transpose(1, 2)
            k = mod.to_k(kw["encoder_hidden_states"]).unflatten(-1, (mod.heads, -1)).transpose(1, 2)
            p = torch.softmax(q @ k.transpose(-1, -2) * mod.scale, -1)
            store[name] = torch.stack([p[..., tk].sum(-1).mean(1) for tk in tokens], 1)
        return fn
    chosen = {l.name for l in steer.layers}
    handles = [l.module.register_forward_hook(hook(l.name), with_kwargs=True)
               for l in find_cross_attention_layers(sd.unet) if l.name in chosen]
    try:
        sd.unet(sd.scheduler.scale_model_input(z, t), t, encoder_hidden_states=cond)
    finally:
        for h in handles:
            h.remove()
    maps = []
    for l in steer.layers:
        m = store[l.name]
        side = int(m.shape[-1] ** 0.5)
        m = m.reshape(1, 2, side, side)
        maps.append(torch.nn.functional.interpolate(m, size=(8, 8), mode="bilinear", align_corners=False)
                    if side != 8 else m)
    xr = torch.stack(maps).mean(0)
    xr = xr / (xr.sum((-2, -1), keepdim=True) + 1e-8)
    params = torch.tensor(classifier.params)
    _, losses = classifier_torch(params, classifier.layout, classifier.config.core_fields(), xr, [2], label)
    losses.mean().backward()
    np.testing.assert_allclose(loss, losses.item(), rtol=1e-4)
    torch.testing.assert_close(g, z.grad, rtol=2e-3, atol=1e-5 * z.grad.abs().max().item())


@pytest.mark.parametrize("early_exit", [True, False])
def test_gradient_checkpointing_gives_the_same_steering(sd, classifier, early_exit):
    """Checkpointed blocks are re-run during backward: the capture must recompute, not re-record."""
    def run():
        with Steerer(sd, classifier, PROMPT, iterations=2, loss_target=0.0, early_exit=early_exit) as s:
            out = _run(sd, s, steps=2)
        return out, [r.loss for r in s.records], [r.grad_norm for r in s.records]
    plain = run()
    sd.unet.enable_gradient_checkpointing()
    try:
        ckpt = run()
    finally:
        sd.unet.disable_gradient_checkpointing()
    np.testing.assert_allclose(ckpt[1], plain[1], rtol=1e-5)
    np.testing.assert_allclose(ckpt[2], plain[2], rtol=1e-4)
    np.testing.assert_allclose(ckpt[0], plain[0], atol=1e-5)


def test_batches_steer_every_sample(sd, classifier):
    """num_images_per_prompt=2 with CFG: the replay takes the positive half (2 of 4 rows) and each
    sample is updated with its own normalised gradient."""
    with Steerer(sd, classifier, PROMPT, iterations=1, loss_target=0.0, steps=[0]) as steer:
        out = steer.generate(sd, PROMPT, num_inference_steps=2, guidance_scale=3.0, num_images_per_prompt=2,
                             output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert out.shape[0] == 2
    rec = steer.records[0]
    assert len(rec.probs) == 2 and len(rec.grad_norm) == 2 and rec.maps.shape == (2, 2, 8, 8)
    assert rec.grad_norm[0] != rec.grad_norm[1]


def test_multi_relation_prompts_alternate(sd, classifier):
    prompt = "a dog above a cat to the left of a ball"
    with Steerer(sd, classifier, prompt, iterations=3, loss_target=0.0) as steer:
        assert steer.parsed.describe() == ["dog | above | cat", "cat | left of | ball"]
        steer.generate(sd, prompt, num_inference_steps=2, guidance_scale=3.0, output_type="np",
                       generator=torch.Generator().manual_seed(0))
    assert [r.relation for r in steer.records] == ["above", "left of", "above"]


class _LossPerRelation:
    """A stand-in ``RelationLoss``: a fixed loss per relation, a nonzero gradient."""
    relations, map_size, n_maps, meta = ("left of", "right of", "above", "below"), 8, 2, {}

    def __init__(self, losses):
        self.losses = losses

    def step_row(self, step, num_steps):
        return 0

    def to(self, device):
        return self

    def losses_and_grad(self, x, labels, steps):
        rel = self.relations[int(np.asarray(labels)[0])]
        return (torch.full((x.shape[0],), self.losses[rel]), torch.ones_like(x) * 1e-3,
                torch.full((x.shape[0], 4), 0.25))


@pytest.mark.parametrize("losses, expected", [
    ({"above": 0.0, "left of": 1.0}, [("above", True), ("left of", False), ("above", True), ("left of", False)]),
    ({"above": 0.0, "left of": 0.0}, [("above", True), ("left of", True)]),      # all satisfied: the step ends
])
def test_a_satisfied_relation_hands_over_to_the_next(sd, losses, expected):
    prompt = "a dog above a cat to the left of a ball"
    with Steerer(sd, _LossPerRelation(losses), prompt, steps=[1], iterations=4, loss_target=0.5) as steer:
        steer.generate(sd, prompt, num_inference_steps=2, guidance_scale=3.0, output_type="np",
                       generator=torch.Generator().manual_seed(0))
    assert [(r.relation, r.skipped == "loss under target") for r in steer.records] == expected


@pytest.mark.parametrize("box_target", [1.0, 0.0])
def test_loose_boxes_keep_a_step_going_after_the_relations_are_met(sd, box_target):
    """layout_box_target: the relation losses are under their target, yet every iteration updates while
    the mean box term is above layout_box_target; at 1.0 (its maximum) the relation losses alone gate."""
    prompt = "a dog left of a cat left of a bird"
    with Steerer(sd, _LossPerRelation({"left of": 0.0}), prompt, steps=[1], iterations=3, loss_target=0.5,
                 layout_box_weight=1.0, layout_box_target=box_target) as steer:
        steer.generate(sd, prompt, num_inference_steps=2, guidance_scale=3.0, output_type="np",
                       generator=torch.Generator().manual_seed(0))
    assert all(r.layout_box is not None and 0.0 < r.layout_box < 1.0 for r in steer.records)
    if box_target == 1.0:
        assert [r.skipped for r in steer.records] == ["loss under target"] * 2     # both relations met: ends
    else:
        assert len(steer.records) == 3 and not any(r.skipped for r in steer.records)


def test_explicit_triplets_override_the_parser(sd, classifier):
    parsed = make_triplets([[2], [4]], [(1, "below", 0)])
    with Steerer(sd, classifier, parsed=parsed, iterations=1, loss_target=0.0) as steer:
        steer.generate(sd, "anything at all", num_inference_steps=2, guidance_scale=1.0, output_type="np",
                       generator=torch.Generator().manual_seed(0))
    assert [r.relation for r in steer.records] == ["below"]


def test_nan_gradient_keeps_the_latent_and_warns_once(sd):
    broken = RelationClassifier(ClassifierConfig(map_size=8, hidden1=8, hidden2=8, n_steps=10, step_dim=4))
    broken.params[:] = np.nan
    plain = _run(sd)
    with Steerer(sd, broken, PROMPT, iterations=2) as steer:
        with pytest.warns(RuntimeWarning, match="non-finite") as caught:
            out = _run(sd, steer)
    assert len([w for w in caught if "l2s" in str(w.message)]) == 1
    np.testing.assert_array_equal(out, plain)
    assert all(r.skipped for r in steer.records)


def test_bf16_unet(sd, classifier, rng):
    """bf16 model: maps and the classifier stay float32, the update lands in the latent's dtype."""
    sd.unet.to(torch.bfloat16)
    try:
        with Steerer(sd, classifier, PROMPT, iterations=2, loss_target=0.0) as steer:
            latents = torch.tensor(rng.normal(size=(1, 4, 16, 16)), dtype=torch.bfloat16)
            sd.scheduler.set_timesteps(4)
            t = sd.scheduler.timesteps[0]
            cond = torch.randn(1, sd.tokenizer.model_max_length, 32, dtype=torch.bfloat16)
            steer.replay.last = ((latents, t), {"encoder_hidden_states": cond})
            out = steer.steer_latents(sd, latents, 0, 4, recorded_t=t)
        assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
        assert not torch.equal(out, latents)
        assert steer.records[0].maps.dtype == np.float32
    finally:
        sd.unet.to(torch.float32)


def test_config_schedule():
    assert SteeringConfig().steered_steps(50) == list(range(25))
    assert SteeringConfig(steer_fraction=0.1).steered_steps(4) == []
    assert SteeringConfig(steps=[0, 3, 99]).steered_steps(4) == [0, 3]


def test_classifier_recommended_settings_apply_unless_overridden(sd, classifier):
    rec = RelationClassifier(classifier.config.__class__(**{**classifier.config.__dict__,
                                                            "meta": {"steering": {"steps": [1, 2], "loss_target": 0.3}}}),
                             params=classifier.params)
    steer = Steerer(sd, rec, PROMPT)
    assert steer.config.steps == [1, 2] and steer.config.loss_target == 0.3 and steer.config.iterations == 3
    steer.close()
    steer = Steerer(sd, rec, PROMPT, loss_target=0.1)                 # keywords override the recommendation
    assert steer.config.steps == [1, 2] and steer.config.loss_target == 0.1
    steer.close()
    steer = Steerer(sd, rec, PROMPT, config=SteeringConfig())         # an explicit config replaces it
    assert steer.config.steps is None and steer.config.loss_target == SteeringConfig().loss_target
    steer.close()
    rec.config.meta["steering"] = {"step_sise": 0.1}
    with pytest.raises(ValueError, match="step_sise"):
        Steerer(sd, rec, PROMPT)


def test_layers_come_from_the_classifier_unless_chosen(sd, classifier):
    from l2s.capture import select_layers
    default = [l.name for l in select_layers(sd.unet)]
    trained_on = default[-1:]
    rec = RelationClassifier(classifier.config.__class__(**{**classifier.config.__dict__,
                                                            "meta": {"layers": trained_on}}), params=classifier.params)
    with Steerer(sd, rec, PROMPT) as steer:
        assert [l.name for l in steer.layers] == trained_on               # the maps it learned from
    with Steerer(sd, rec, PROMPT, layers=default[:1]) as steer:
        assert [l.name for l in steer.layers] == default[:1]              # an explicit choice wins
    rec.config.meta["layers"] = ["transformer_blocks.0.attn"]             # trained on another model
    with pytest.warns(UserWarning, match="lacks"):
        steer = Steerer(sd, rec, PROMPT)
    assert [l.name for l in steer.layers] == default
    steer.close()


def test_classifier_must_read_two_maps(sd):
    three = RelationClassifier(ClassifierConfig(map_size=8, n_maps=3, hidden1=8, hidden2=8))
    with pytest.raises(ValueError, match="2"):
        Steerer(sd, three, PROMPT)


def test_flux_transformer_steering(classifier):
    """Flux path: the recorded transformer call is replayed on packed latents with the pipeline's
    t / 1000 timestep convention, the maps come from the joint attention, and the loss falls."""
    from types import SimpleNamespace

    from diffusers import FlowMatchEulerDiscreteScheduler
    from l2s.testing import flux_inputs, tiny_flux
    model = tiny_flux()
    sched = FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(4)
    pipe = SimpleNamespace(transformer=model, scheduler=sched)
    grid = (8, 8)
    with Steerer(pipe, classifier, parsed=make_triplets([[1], [4, 5]], [(0, "above", 1)]), iterations=4,
                 step_size=0.3, loss_target=0.0) as steer:
        inputs = flux_inputs(model, batch=1, grid=grid, seed=3)
        t0 = sched.timesteps[0]
        inputs["timestep"] = (t0 / 1000).expand(1)
        seen = []
        model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["timestep"].clone()), with_kwargs=True)
        with torch.no_grad():
            model(**inputs)                                    # the pipeline's step-0 call (recorded)
        out = steer(pipe, 0, t0, {"latents": inputs["hidden_states"]})["latents"]
    assert out.shape == inputs["hidden_states"].shape and not torch.equal(out, inputs["hidden_states"])
    losses = [r.loss for r in steer.records]
    assert [r.step for r in steer.records] == [1] * 4 and losses[-1] < losses[0], losses
    torch.testing.assert_close(seen[1], (sched.timesteps[1] / 1000).expand(1))   # replayed at step 1
    assert steer.records[0].maps.shape == (1, 2, 8, 8)


PIPELINES = {
    "sdxl": (lambda tmp: __import__("l2s.testing", fromlist=["x"]).tiny_sdxl_pipeline(tmp),
             dict(guidance_scale=3.0, height=32, width=32)),
    "flux": (lambda tmp: __import__("l2s.testing", fromlist=["x"]).tiny_flux_pipeline(tmp),
             dict(guidance_scale=0.0, height=32, width=32, max_sequence_length=40)),
    "sd3": (lambda tmp: __import__("l2s.testing", fromlist=["x"]).tiny_sd3_pipeline(tmp),
            dict(guidance_scale=3.0, height=32, width=32, max_sequence_length=16)),
}


@pytest.mark.parametrize("kind", list(PIPELINES))
def test_other_pipelines_end_to_end(kind, classifier, tmp_path):
    """SDXL (added text/time conditions, Euler's input scaling), Flux (packed latents, joint
    attention, T5 tokens; steering step 0 as Flux-schnell does) and SD3 (joint attention, image
    tokens first, patch 2, CFG): plumbing is neutral at step size 0, and steering lowers the loss."""
    build, call = PIPELINES[kind]
    pipe = build(tmp_path)

    def run(steer=None):
        kw = dict(num_inference_steps=4, output_type="np", generator=torch.Generator().manual_seed(0), **call)
        return (steer.generate(pipe, PROMPT, **kw) if steer else pipe(PROMPT, **kw)).images

    plain = run()
    with Steerer(pipe, classifier, PROMPT, iterations=2, step_size=0.0, loss_target=0.0) as steer:
        np.testing.assert_array_equal(run(steer), plain)
    with Steerer(pipe, classifier, PROMPT, iterations=4, step_size=0.3, loss_target=0.0) as steer:
        out = run(steer)
    assert np.isfinite(out).all() and not np.array_equal(out, plain)
    losses = [r.loss for r in steer.records if r.step == 0]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    side = 8 if kind == "flux" else 16
    assert steer.records[0].maps.shape == (1, 2, 8, 8) and steer.layers[0].side >= side // 2
    # screening: the image is the plain pipeline's from the best-scored of the generator's noises
    with Steerer(pipe, classifier, PROMPT, iterations=1, step_size=0.0, screen_noises=3) as steer:
        screened = run(steer)
        kw = dict(num_inference_steps=4, generator=torch.Generator().manual_seed(0), **call)
        candidates = [steer.replay.initial_latents(pipe, PROMPT, kw) for _ in range(3)]
    assert steer.screen_scores.shape == (3, 1) and np.isfinite(steer.screen_scores).all()
    best = candidates[int(np.argmin(steer.screen_scores[:, 0]))]
    np.testing.assert_array_equal(screened, pipe(PROMPT, num_inference_steps=4, output_type="np", latents=best,
                                                 **call).images)


@pytest.mark.cuda
def test_steering_on_cuda_matches_cpu(classifier, tmp_path):
    """The whole hook on a GPU (maps, resize, normalise, classifier and latent update in CUDA
    kernels, zero-copy through DLPack) gives the CPU run's losses and gradient norms."""
    from l2s.testing import tiny_sd_pipeline
    runs = []
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False   # the UNet in full float32
    try:
        _steer_on(("cpu", "cuda"), classifier, tmp_path, runs, tiny_sd_pipeline)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    cpu, gpu = runs
    np.testing.assert_allclose([r.loss for r in gpu], [r.loss for r in cpu], rtol=2e-3)
    np.testing.assert_allclose([r.grad_norm for r in gpu], [r.grad_norm for r in cpu], rtol=5e-3)


def _steer_on(devices, classifier, tmp_path, runs, tiny_sd_pipeline):
    for device in devices:
        pipe = tiny_sd_pipeline(tmp_path / device).to(device)
        clf = RelationClassifier(classifier.config, params=np.array(classifier.params, copy=True))
        with Steerer(pipe, clf, PROMPT, iterations=3, step_size=0.3, loss_target=0.0) as steer:
            steer.generate(pipe, PROMPT, num_inference_steps=4, guidance_scale=3.0, output_type="np",
                           generator=torch.Generator(device).manual_seed(0) if device == "cpu" else None,
                           latents=torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)).to(device))
        if device == "cuda":
            assert torch.is_tensor(clf.params) and clf.params.is_cuda
        runs.append(steer.records)


def test_gaussian_blur_matches_a_numpy_reference(rng):
    from l2s.steer import gaussian_blur
    x = rng.standard_normal((2, 3, 12, 10))
    sigma = 1.3
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k2 = np.outer(k, k) / k.sum() ** 2
    padded = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)), mode="reflect")
    want = np.zeros_like(x)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            want += k2[dy, dx] * padded[:, :, dy: dy + 12, dx: dx + 10]
    got = gaussian_blur(torch.from_numpy(x), sigma).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="B, C, H, W"):
        gaussian_blur(torch.zeros(1, 16, 4), 1.0)
    with pytest.raises(ValueError, match="too wide"):
        gaussian_blur(torch.zeros(1, 1, 4, 4), 2.0)


@pytest.mark.parametrize("field, value", [
    ("iterations", -1), ("iterations", 100000), ("iterations", 2.5), ("step_size", float("nan")),
    ("step_size", -0.1), ("steer_fraction", 1.5), ("step_decay", 0.0), ("loss_target", float("inf")),
    ("steps", [1, -2]), ("steps", "1,2"), ("normalize", "yes"), ("grad_blur", -1.0), ("blocks", "up"),
    ("distinct_tokens", 1), ("implied_relations", "yes"),
])
def test_bad_steering_settings_raise_at_construction(field, value):
    with pytest.raises(ValueError, match=f"SteeringConfig.{field}"):
        SteeringConfig(**{field: value})


def test_unknown_override_is_refused(sd, classifier):
    with pytest.raises(TypeError, match="unknown steering setting"):
        Steerer(sd, classifier, PROMPT, step_sise=0.1)


def test_judge_relation_reads_any_pipeline(sd, classifier):
    from l2s.judge import judge_relation
    classifier.meta.update({"step_indices": [1, 2], "num_inference_steps": 4})
    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    try:
        out = judge_relation(sd, classifier, PROMPT, image)
    finally:
        del classifier.meta["step_indices"], classifier.meta["num_inference_steps"]
    assert out["judged"] == "dog | left of | cat" and sorted(out["per_step"]) == [1, 2]
    assert abs(sum(out["probabilities"].values()) - 1) < 1e-3 and out["classifier_says"] in classifier.relations
    with pytest.raises(ValueError, match="no spatial relation"):
        judge_relation(sd, classifier, "a dog and a cat", image)


def test_one_nan_sample_skips_only_itself(sd, classifier, rng):
    """A batch of 2 where one latent is NaN: that sample is left as it is (and reported), the other
    is steered (it used to skip both)."""
    steer = Steerer(sd, classifier, PROMPT, iterations=1, step_size=0.3, loss_target=-1.0)
    latents = torch.tensor(rng.normal(size=(2, 4, 16, 16)), dtype=torch.float32)
    latents[1] = float("nan")
    _, t, _, _ = sd_replay(steer, sd, PROMPT, rng, latents=latents)
    with pytest.warns(RuntimeWarning, match=r"sample\(s\) \[1\]"):
        out = steer.steer_latents(sd, latents, 1, 4, recorded_t=t)
    steer.close()
    assert torch.isnan(out[1]).all()
    assert torch.isfinite(out[0]).all() and (out[0] - latents[0]).abs().max() > 1e-3
    rec = steer.records[-1]
    assert math.isfinite(rec.loss) and math.isfinite(rec.grad_norm[0]) and math.isnan(rec.grad_norm[1])


def test_list_prompt_from_makes_the_denoiser_read_only_the_objects(sd, classifier):
    prompt = "a dog above a cat to the left of a ball"
    with Steerer(sd, classifier, prompt, list_prompt_from=2, step_size=0.0) as steer:
        assert steer.prompt == "a dog, a cat and a ball"
        assert steer.parsed.describe() == ["dog | above | cat", "cat | left of | ball"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")            # generate swaps the text itself: nothing to warn about
            steered = _run(sd, steer, prompt=prompt)
    # step size 0: the image is the plain pipeline's on the list text, not on the relational one
    np.testing.assert_array_equal(steered, _run(sd, prompt="a dog, a cat and a ball"))
    assert not np.array_equal(steered, _run(sd, prompt=prompt))
    with pytest.warns(UserWarning, match="steer.prompt"):
        steer.callback()
    with Steerer(sd, classifier, PROMPT, list_prompt_from=2) as one:
        assert one.prompt is None and one.parsed.prompt == PROMPT     # fewer relations: untouched
    with pytest.raises(ValueError, match="list_prompt_from"):
        SteeringConfig(list_prompt_from=-1)


def test_distinct_tokens_read_each_object_from_its_own_words(sd, classifier):
    """``distinct_tokens``: a word two objects share is left out of both objects' maps (in the list
    prompt too), which changes what the classifier reads; a prompt without shared words is unchanged."""
    prompt = "a red dog above a red cat to the left of a ball"
    kw = dict(iterations=1, step_size=0.1, loss_target=-1.0, steps=[1])
    with Steerer(sd, classifier, prompt, **kw) as full, \
            Steerer(sd, classifier, prompt, distinct_tokens=True, **kw) as own:
        ids = sd.tokenizer(prompt).input_ids
        words = ["".join(sd.tokenizer.convert_ids_to_tokens([ids[i] for i in o.tokens])).replace("</w>", "")
                 for o in own.parsed.objects]
        assert words == ["dog", "cat", "ball"] and own.parsed.describe() == full.parsed.describe()
        a, b = _run(sd, full, prompt=prompt), _run(sd, own, prompt=prompt)
        assert full.records[0].loss != own.records[0].loss and not np.array_equal(a, b)
    with Steerer(sd, classifier, prompt, distinct_tokens=True, list_prompt_from=2) as listed:
        ids = sd.tokenizer(listed.prompt).input_ids
        assert [sd.tokenizer.convert_ids_to_tokens([ids[i] for i in o.tokens]) for o in listed.parsed.objects] \
            == [["dog</w>"], ["cat</w>"], ["ball</w>"]]
    with Steerer(sd, classifier, PROMPT, distinct_tokens=True) as plain, Steerer(sd, classifier, PROMPT) as ref:
        assert plain.parsed.token_lists() == ref.parsed.token_lists()


@pytest.mark.parametrize("screen_step", [0, 2])
def test_screen_noises_starts_each_image_from_its_best_scored_noise(sd, classifier, screen_step):
    """screen_noises=3: each image's k-th candidate is the k-th draw of its own generator; the image
    is the plain pipeline's from the candidate with the lowest loss at step ``screen_step``, the loss
    read on the maps a MapRecorder captures at that step of the plain pipeline run from that candidate
    (DDIM: the screening's deterministic steps are the pipeline's own)."""
    from l2s.callbacks import MapRecorder
    from l2s.losses import relation_loss
    seeds, K = (0, 1), 3
    args = dict(num_inference_steps=4, guidance_scale=3.0, output_type="np")
    with Steerer(sd, classifier, PROMPT, screen_noises=K, screen_step=screen_step, step_size=0.0) as steer:
        out = steer.generate(sd, [PROMPT] * 2, generator=[torch.Generator().manual_seed(s) for s in seeds],
                             **args).images
        scores, layers, label = steer.screen_scores, steer.layers, int(steer.labels[0])
    assert scores.shape == (K, 2) and np.isfinite(scores).all()
    side = sd.unet.config.sample_size
    shape = (1, sd.unet.config.in_channels, side, side)
    for b, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(seed)
        candidates = [torch.randn(shape, generator=g) for _ in range(K)]
        for k, z in enumerate(candidates):
            with MapRecorder(sd, steer.parsed, [screen_step], layers, classifier.map_size) as rec:
                rec.generate(sd, PROMPT, latents=z, **args)
            loss, _ = relation_loss(classifier, torch.from_numpy(rec.maps[screen_step][:, 0]), np.array([label], np.int32),
                                    np.array([classifier.step_row(screen_step, 4)], np.int32))
            assert abs(float(loss[0]) - scores[k, b]) < 1e-4 * max(1.0, abs(scores[k, b]))
        best = int(np.argmin(scores[:, b]))
        np.testing.assert_allclose(out[b], sd(PROMPT, latents=candidates[best], **args).images[0], atol=1e-5)
    with pytest.raises(ValueError, match="screen_noises"):
        SteeringConfig(screen_noises=0)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="screen_step"):
            SteeringConfig(screen_step=bad)


def test_implied_relations_steer_the_chain_ends_too(sd, classifier):
    """``implied_relations``: a straight chain's ends become a third steered pair, in the round robin
    after the stated ones; a chain that turns steers only what it states."""
    prompt = "a dog left of a cat left of a ball"
    kw = dict(iterations=3, step_size=0.1, loss_target=-1.0, steps=[1])
    with Steerer(sd, classifier, prompt, implied_relations=True, **kw) as steer:
        assert steer.parsed.describe() == ["dog | left of | cat", "cat | left of | ball", "dog | left of | ball"]
        _run(sd, steer, prompt=prompt)
        assert [r.triplet for r in steer.records] == [0, 1, 2]
    with Steerer(sd, classifier, "a dog above a cat left of a ball", implied_relations=True, **kw) as turn:
        assert len(turn.parsed.triplets) == 2
