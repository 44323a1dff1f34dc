"""Small shared steps of the steering tests."""
import numpy as np
import torch


def sd_replay(steer, sd, prompt, rng, step=1, num_steps=4):
    """Arm ``steer`` with the call the tiny SD pipeline makes at ``step``: random latents, the prompt's
    conditional embeddings. Returns (latents, t, cond, bound call arguments)."""
    latents = torch.tensor(rng.normal(size=(1, 4, 16, 16)), dtype=torch.float32)
    sd.scheduler.set_timesteps(num_steps)
    t = sd.scheduler.timesteps[step]
    ids = sd.tokenizer(prompt, padding="max_length", max_length=sd.tokenizer.model_max_length,
                       return_tensors="pt").input_ids
    with torch.no_grad():
        cond = sd.text_encoder(ids)[0]
    steer.replay.last = ((latents, t), {"encoder_hidden_states": cond})
    return latents, t, cond, steer.replay.arguments(1, t, t)


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
