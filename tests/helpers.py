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
