"""Small shared steps of the steering tests."""
import numpy as np
import torch


def sd_replay(steer, sd, prompt, rng, step=1, num_steps=4, latents=None):
    """Arm ``steer`` with the call the tiny SD pipeline makes at ``step``: ``latents`` (default: random,
    batch 1), the prompt's conditional embeddings for each. Returns (latents, t, cond, bound call arguments)."""
    if latents is None:
        latents = torch.tensor(rng.normal(size=(1, 4, 16, 16)), dtype=torch.float32)
    sd.scheduler.set_timesteps(num_steps)
    t = sd.scheduler.timesteps[step]
    ids = sd.tokenizer([prompt] * latents.shape[0], padding="max_length", max_length=sd.tokenizer.model_max_length,
                       return_tensors="pt").input_ids
    with torch.no_grad():
        cond = sd.text_encoder(ids)[0]
    steer.replay.last = ((latents, t), {"encoder_hidden_states": cond})
    return latents, t, cond, steer.replay.arguments(latents.shape[0], t, t)


def flux_joint_qk(attn, hidden_states, encoder_hidden_states, image_rotary_emb):
    """A Flux attention's query and key [B, heads, text + image, d] the way FluxAttnProcessor orders
    the joint sequence ([text, image]; rotary on the whole): the tests' reference, not l2s's path."""
    from diffusers.models.embeddings import apply_rotary_emb
    q = attn.norm_q(attn.to_q(hidden_states).unflatten(-1, (attn.heads, -1)))
    k = attn.norm_k(attn.to_k(hidden_states).unflatten(-1, (attn.heads, -1)))
    if encoder_hidden_states is not None:
        eq = attn.norm_added_q(attn.add_q_proj(encoder_hidden_states).unflatten(-1, (attn.heads, -1)))
        ek = attn.norm_added_k(attn.add_k_proj(encoder_hidden_states).unflatten(-1, (attn.heads, -1)))
        q, k = torch.cat([eq, q], 1), torch.cat([ek, k], 1)
    return (apply_rotary_emb(q, image_rotary_emb, sequence_dim=1).transpose(1, 2),
            apply_rotary_emb(k, image_rotary_emb, sequence_dim=1).transpose(1, 2))


def assert_term_linear_in_weight(sd, classifier, prompt, rng, setting, check=None, **fixed):
    """A term added with weight ``setting`` enters loss_pass's gradient as d(relation loss)/dz + w * d(term)/dz:
    linear in w and not zero, while the relation losses stay the classifier's alone. ``check(steer, w)``
    runs on each steerer after its pass; ``fixed`` are other settings of every steerer."""
    from l2s.steer import Steerer
    grads, losses = [], []
    latents = args = t = None
    for w in (0.0, 1.0, 2.0):
        steer = Steerer(sd, classifier, prompt, loss_target=-1.0, **{setting: w}, **fixed)
        if latents is None:
            latents, t, _, args = sd_replay(steer, sd, prompt, rng)
        else:
            sd_replay(steer, sd, prompt, np.random.default_rng(0))
        with steer.loss_pass(sd, latents, torch.float32, t, args, steer.parsed.triplets[0], np.array([0], np.int32),
                             np.array([2], np.int32)) as (x, loss, _, grad):
            assert x.shape[1] == 2
            grads.append(grad())
            losses.append(loss.detach())
        if check is not None:
            check(steer, w)
        steer.close()
    torch.testing.assert_close(losses[1], losses[0])
    torch.testing.assert_close(losses[2], losses[0])
    d1, d2 = grads[1] - grads[0], grads[2] - grads[0]
    scale = float(max(g.abs().max() for g in grads))
    assert float(d1.abs().max()) > 1e-4 * scale
    # float32 gradients: the differences carry rounding of the whole gradient's size
    torch.testing.assert_close(d2, 2 * d1, rtol=0, atol=1e-5 * scale)
