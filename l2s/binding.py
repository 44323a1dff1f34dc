"""Attribute binding beside the relation loss: each object's modifiers on its own noun.

With several objects a model often draws an object's colour on ANOTHER object's shape ("a red
circle, a blue square and a green triangle" -> a red square): in the shapes world most "missing"
objects of two-relation prompts are exactly that (docs/results.md). The cross-attention maps show
it: the modifier token's map ("red") sits where another object's noun ("square") is drawn.

``binding_term`` asks, per object with modifiers, for its modifier map to look like its own noun's
map and unlike every other object's noun map (cosine similarity of the maps, which does not reward
sharpening a map the way a peak or overlap term does):

    term_b = mean_i [ (1 - cos(M_i, H_i)) + mean_{j != i} cos(M_i, H_j) ]

M_i: the map of object i's modifier tokens (all words of its name but the last), H_j: the map of
object j's noun (the name's last word). An idea in the line of syntax-guided binding losses
(SynGen), written here for l2s's maps; ``SteeringConfig.binding_weight`` adds it to the relation
loss's gradient.
"""
from __future__ import annotations

from typing import Any

import torch

from .prompts import ParsedPrompt, token_indices


def binding_groups(parsed: ParsedPrompt, tokenizer: Any) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Token groups of ``binding_term``: (modifier groups, noun groups), one noun group per object
    and one modifier group per object whose name has more than one word, those objects first (so
    modifier group k belongs to noun group k). Empty when fewer than two objects or no modifier."""
    mods: list[tuple[int, ...]] = []
    nouns_with: list[tuple[int, ...]] = []
    nouns_without: list[tuple[int, ...]] = []
    for obj in parsed.objects:
        words = obj.name.split()
        start, end = obj.span
        if not obj.tokens or parsed.prompt[start:end] != obj.name:
            return [], []                   # indices given by hand (make_triplets): nothing to split
        noun = token_indices(tokenizer, parsed.prompt, (end - len(words[-1]), end))
        modifier = tuple(t for t in obj.tokens if t not in noun)
        if len(words) > 1 and modifier:
            mods.append(modifier)
            nouns_with.append(noun)
        else:
            nouns_without.append(noun)
    if not mods or len(parsed.objects) < 2:
        return [], []
    return mods, nouns_with + nouns_without


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of maps [B, S, S] -> [B]."""
    a, b = a.flatten(1), b.flatten(1)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def binding_term(mod_maps: torch.Tensor, noun_maps: torch.Tensor) -> torch.Tensor:
    """Per-sample binding term [B] (module doc) of modifier maps [B, M, S, S] and noun maps
    [B, N, S, S], N >= max(M, 2), modifier k belonging to noun k. Differentiable."""
    M, N = mod_maps.shape[1], noun_maps.shape[1]
    if M < 1 or N < 2 or N < M:
        raise ValueError(f"binding_term needs 1 <= modifiers <= nouns and >= 2 nouns, got {M} and {N}")
    total = mod_maps.new_zeros(mod_maps.shape[0], dtype=torch.float64)
    for i in range(M):
        own = 1 - _cosine(mod_maps[:, i], noun_maps[:, i])
        others = torch.stack([_cosine(mod_maps[:, i], noun_maps[:, j]) for j in range(N) if j != i]).mean(0)
        total = total + (own + others).double()
    return total / M
