"""Float64 reference implementations of every l2s._C op (NumPy and torch autograd), for the tests."""
import numpy as np
import torch


def attn_maps(q, k, tokens, scale, per_head=False, token_mean=False):
    """q [B,H,N,D], k [B,H,L,D] float64 -> maps [B,T,N] (head mean) or [B,T,H,N] (per head) of the
    summed (or, token_mean, averaged) token probabilities."""
    logits = np.einsum("bhnd,bhld->bhnl", q, k) * scale
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(-1, keepdims=True)
    maps = []
    for row in tokens:
        cols = [t for t in row if t >= 0]
        m = p[..., cols].mean(-1) if token_mean else p[..., cols].sum(-1)        # [B, H, N]
        maps.append(m if per_head else m.mean(1))
    return np.stack(maps, 1)


def attn_maps_torch(q, k, tokens, scale, per_head=False, token_mean=False):
    p = torch.softmax(torch.einsum("bhnd,bhld->bhnl", q, k) * scale, -1)
    maps = []
    for row in tokens:
        cols = [t for t in row if t >= 0]
        m = p[..., cols].mean(-1) if token_mean else p[..., cols].sum(-1)
        maps.append(m if per_head else m.mean(1))
    return torch.stack(maps, 1)


def resize_torch(x, size, mode):
    """torch's own resize in float64: bilinear (align_corners=False) or adaptive average."""
    x = torch.as_tensor(x, dtype=torch.float64)
    lead = x.shape[:-2]
    x4 = x.reshape(-1, 1, *x.shape[-2:])
    if mode == "bilinear":
        y = torch.nn.functional.interpolate(x4, size=size, mode="bilinear", align_corners=False, antialias=False)
    else:
        y = torch.nn.functional.adaptive_avg_pool2d(x4, size)
    return y.reshape(*lead, *size)


def normalize(x, mode, eps):
    x = torch.as_tensor(x, dtype=torch.float64)
    c = x.sum(-1, keepdim=True) if mode == "sum" else x.max(-1, keepdim=True).values
    return x / (c + eps)


def classifier_torch(params, layout, cfg, x, steps, labels):
    """The 'mlp' classifier in float64 torch: returns (probs, per-sample losses). cfg: the config's
    named core fields (``ClassifierConfig.core_fields()``)."""
    E, slope, eps = cfg["step_dim"], cfg["leaky_slope"], cfg["ln_eps"]
    P = {name: params[off: off + int(np.prod(shape))].reshape(shape) for name, (off, shape) in layout.items()}
    h = x.reshape(x.shape[0], -1)
    if E > 0:
        h = torch.cat([h, P["step_embedding"][torch.as_tensor(steps, dtype=torch.long)]], 1)
    for i in (1, 2):
        a = h @ P[f"fc{i}.weight"].T + P[f"fc{i}.bias"]
        n = torch.nn.functional.layer_norm(a, (a.shape[1],), P[f"ln{i}.weight"], P[f"ln{i}.bias"], eps)
        h = torch.nn.functional.leaky_relu(n, slope)
    logits = h @ P["fc3.weight"].T + P["fc3.bias"]
    probs = torch.softmax(logits, 1)
    losses = torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels, dtype=torch.long), reduction="none") \
        if labels is not None else None
    return probs, losses


def adamw(p, g, m, v, lr, b1, b2, eps, wd, t):
    p, g, m, v = (np.asarray(a, np.float64).copy() for a in (p, g, m, v))
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    p -= lr * (mhat / (np.sqrt(vhat) + eps) + wd * p)
    return p, m, v
