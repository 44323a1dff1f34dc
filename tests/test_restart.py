"""l2s/restart.py: re-noising and the replayed deterministic steps, against float64 formulas and
against the pipelines' own schedulers (DDIM, Euler, flow matching), and through ``Steerer``."""
import math
import types

import numpy as np
import pytest
import torch

from l2s.replay import DenoiserCall
from l2s.restart import (check_restart, noise_kind, noise_level, renoise_coefficients, restart_latents, x0_eps)
from l2s.steer import Steerer, SteeringConfig

PROMPT = "a dog to the left of a cat"


@pytest.mark.parametrize("level, back_to", [((0.9, math.sqrt(1 - 0.81)), (0.6, 0.8)),      # vp
                                             ((1.0, 0.5), (1.0, 3.0)),                     # ve
                                             ((0.7, 0.3), (0.2, 0.8))])                    # flow
def test_renoising_gives_the_noisier_levels_distribution(level, back_to, rng):
    """x = a1 x0 + s1 e re-noised must be distributed as a0 x0 + s0 e' (mean and variance, float64)."""
    x0 = rng.standard_normal(4)
    n = 200_000
    x = level[0] * x0 + level[1] * rng.standard_normal((n, 4))
    keep, add = renoise_coefficients(level, back_to)
    y = keep * x + add * rng.standard_normal((n, 4))
    np.testing.assert_allclose(y.mean(0), back_to[0] * x0, atol=5 * back_to[1] / math.sqrt(n))
    np.testing.assert_allclose(y.std(0), back_to[1], rtol=0.01)
    with pytest.raises(ValueError, match="not noisier"):
        renoise_coefficients(back_to, level)


@pytest.mark.parametrize("kind, prediction", [("vp", "epsilon"), ("vp", "v_prediction"), ("vp", "sample"),
                                              ("ve", "epsilon"), ("ve", "v_prediction"), ("flow", None)])
def test_x0_eps_inverts_each_parameterisation(kind, prediction, rng):
    x0, eps = (torch.from_numpy(rng.standard_normal((2, 3))) for _ in range(2))
    a, s = {"vp": (0.6, 0.8), "ve": (1.0, 2.5), "flow": (0.3, 0.7)}[kind]
    x = a * x0 + s * eps
    norm = math.sqrt(a * a + s * s)
    out = {"epsilon": eps, "sample": x0, "v_prediction": (a * eps - s * x0) / norm, None: eps - x0}[prediction]
    got_x0, got_eps = x0_eps(out, x, kind, (a, s), prediction or "epsilon")
    torch.testing.assert_close(got_x0, x0)
    torch.testing.assert_close(got_eps, eps)
    with pytest.raises(ValueError, match="prediction type"):
        x0_eps(out, x, "vp", (a, s), "flow_prediction")


def _pipelines():
    from l2s import testing
    return {"sd-ddim": (testing.tiny_sd_pipeline, dict(guidance_scale=3.0), "vp"),
            "sdxl-euler": (testing.tiny_sdxl_pipeline, dict(guidance_scale=3.0, height=32, width=32), "ve"),
            "flux": (testing.tiny_flux_pipeline, dict(guidance_scale=0.0, height=32, width=32,
                                                      max_sequence_length=40), "flow"),
            "sd3": (testing.tiny_sd3_pipeline, dict(guidance_scale=3.0, height=32, width=32,
                                                    max_sequence_length=16), "flow")}


@pytest.mark.parametrize("name", ["sd-ddim", "sdxl-euler", "flux", "sd3"])
def test_replayed_steps_retrace_the_pipelines_own(name, tmp_path):
    """Re-noised exactly onto the latent the pipeline held before step R+1-K, the K replayed steps
    must land on the latent the pipeline itself reached after step R: the same denoiser calls, input
    scaling, guidance and (deterministic) scheduler step. Returning that latent, the image is the
    plain one: the pipeline's scheduler state was not touched."""
    build, call, kind = _pipelines()[name]
    pipe = build(tmp_path)
    assert noise_kind(pipe.scheduler) == kind
    steps, after, back = 5, 3, 2
    kw = dict(num_inference_steps=steps, output_type="np", **call)
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    fed: list[torch.Tensor] = []                               # the denoiser's input at each step

    def record(module, args, kwargs):
        fed.append((args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))).clone())
    hook = denoiser.register_forward_pre_hook(record, with_kwargs=True)
    try:
        plain = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **kw).images
    finally:
        hook.remove()
    assert len(fed) == steps
    held: dict[int, torch.Tensor] = {}
    checked, steered = [], []

    def steer(x, j, input_at):
        """Replay steering's view: the latent it gets is the one the pipeline held before step j,
        and ``input_at`` scales it as the pipeline scaled its input at that step."""
        torch.testing.assert_close(x, held[j], atol=2e-4, rtol=1e-3)
        torch.testing.assert_close(input_at.scale_model_input(x), fed[j][:x.shape[0]], atol=2e-4, rtol=1e-3)
        steered.append(j)
        return x

    def callback(p, i, t, cb):
        held[i + 1] = cb["latents"].clone()                    # the latent step i + 1 denoises
        if i == after:
            keep, add = renoise_coefficients(noise_level(p.scheduler, kind, after + 1),
                                             noise_level(p.scheduler, kind, after + 1 - back))
            noise = (held[after + 1 - back].float() - keep * cb["latents"].float()) / add
            out = restart_latents(p, replay, cb["latents"], after, back, noise=noise, steer=steer)
            torch.testing.assert_close(out, cb["latents"], atol=2e-4, rtol=1e-3)
            checked.append(i)
            return {"latents": out}
        return cb

    with DenoiserCall(pipe) as replay:
        first = pipe(PROMPT, generator=torch.Generator().manual_seed(0), callback_on_step_end=callback, **kw).images
    assert checked == [after] and steered == list(range(after + 1 - back, after + 1))
    np.testing.assert_allclose(first, plain, atol=2e-3)


def test_unsupported_scheduler_and_bad_lengths_are_refused(sd):
    with pytest.raises(ValueError, match="not supported"):
        noise_kind(types.SimpleNamespace(init_noise_sigma=1.0))
    with pytest.raises(ValueError, match="no step follows"):
        check_restart((3, 2), 4)
    check_restart((2, 3), 4)
    with pytest.raises(ValueError, match="before step 0"):
        check_restart((2, 4), 10)


@pytest.mark.parametrize("value", [(3,), (3, 0), (-1, 1), (2, 4), "12 8", (1.5, 1), (True, 1), 5])
def test_bad_restart_settings_raise_at_construction(value):
    with pytest.raises(ValueError, match="SteeringConfig.restart"):
        SteeringConfig(restart=value)


@pytest.mark.parametrize("value", [-0.5, float("nan"), float("inf"), "1", True])
def test_bad_restart_steer_raises_at_construction(value):
    with pytest.raises(ValueError, match="SteeringConfig.restart_steer"):
        SteeringConfig(restart=(3, 2), restart_steer=value)


def test_restart_steer_without_restart_is_refused():
    """A steered replay with no restart would silently do nothing: refused; 0 without restart is fine."""
    with pytest.raises(ValueError, match="SteeringConfig.restart_steer.*needs restart"):
        SteeringConfig(restart_steer=0.5)
    assert SteeringConfig(restart_steer=0.0).restart is None


def test_replayed_steps_are_steered_when_asked(sd, classifier):
    """``restart_steer``: the replayed steps that are in ``steps`` get gradient iterations at that
    fraction of the step size (records marked ``replayed``), the others none; 0 steers no replay.
    With the loss target out of reach every replayed steered step updates the latent."""
    args = dict(num_inference_steps=6, guidance_scale=3.0, output_type="np")
    common = dict(iterations=1, step_size=0.1, steps=[0, 1, 2], loss_target=-1.0, restart=(3, 3))

    def run(**kw):
        with Steerer(sd, classifier, PROMPT, **common, **kw) as steer:
            image = steer.generate(sd, PROMPT, generator=torch.Generator().manual_seed(0), **args).images
        return image, steer.records

    unsteered, records = run()
    assert not any(r.replayed for r in records) and [r.step for r in records] == [0, 1, 2]
    image, records = run(restart_steer=0.5)
    replayed = [r for r in records if r.replayed]
    assert [r.step for r in records if not r.replayed] == [0, 1, 2]
    assert [r.step for r in replayed] == [1, 2]                 # steps 1..3 replayed, 3 is not steered
    assert all(r.step_size == pytest.approx(0.05) and all(np.isfinite(r.grad_norm)) for r in replayed)
    assert np.isfinite(image).all() and not np.allclose(image, unsteered, atol=1e-3)
    from l2s.plots import first_iterations
    assert [r.step for r in first_iterations(records)] == [0, 1, 2]     # one plot row per step


def test_steerer_restarts_each_image_from_its_own_generator(sd, classifier):
    """Through ``Steerer.generate``: restart changes the image, runs once per call, draws its noise
    from each image's own generator (a batch gives each image its single run) and is reproducible;
    a run too short for it runs without it (warned); an unsupported scheduler fails at construction."""
    args = dict(num_inference_steps=6, guidance_scale=3.0, output_type="np")

    def run(steer, seeds):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return steer.generate(sd, [PROMPT] * len(seeds), generator=gens, **args).images

    with Steerer(sd, classifier, PROMPT, iterations=1, step_size=0.0) as steer:
        plain = run(steer, [0, 1])
    calls = []
    with Steerer(sd, classifier, PROMPT, iterations=1, step_size=0.0, restart=(3, 2)) as steer:
        hook = sd.unet.register_forward_pre_hook(lambda m, a: calls.append(1))
        try:
            both = run(steer, [0, 1])
        finally:
            hook.remove()
        one = run(steer, [1])
        again = run(steer, [0, 1])
    # 6 pipeline steps + 2 replayed + 3 steered iterations (the step-0 probe stops in l2s's own
    # pre-hook, registered before this one)
    assert len(calls) == 6 + 2 + 3
    assert np.isfinite(both).all() and not np.allclose(both, plain, atol=1e-3)
    np.testing.assert_allclose(one[0], both[1], atol=1e-5)
    np.testing.assert_array_equal(again, both)
    with Steerer(sd, classifier, PROMPT, iterations=1, step_size=0.0, restart=(5, 2)) as steer:
        with pytest.warns(UserWarning, match="no step follows.*no restart in this run"):
            short = run(steer, [0, 1])
    np.testing.assert_array_equal(short, plain)
    saved = sd.scheduler
    try:                                # past diffusers' __setattr__, which would register a module
        object.__setattr__(sd, "scheduler", types.SimpleNamespace(init_noise_sigma=1.0))
        with pytest.raises(ValueError, match="not supported"):
            Steerer(sd, classifier, PROMPT, restart=(3, 2))
    finally:
        object.__setattr__(sd, "scheduler", saved)
