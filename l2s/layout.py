"""A planned layout beside the relation loss: where each object should go, and a pull toward it.

The relation loss reads one (subject, object) pair at a time. With three objects the pairs can be
satisfied one by one into a layout that has no room for the rest: "A left of B left of C" drawn with
B and C stacked on the right (docs/results.md, straight chains). A plan fixes one layout that holds
every relation at once, and a term pulls each object's map toward its place:

1. ``plan_layout``: every assignment of the objects to the cells of a small grid is checked with
   GenEval's rule (``geneval.relations_between``) on boxes of a nominal side; of the assignments
   where every relation holds and no two boxes touch, the one nearest to where the model has put
   the objects so far (the maps' centroids at the first steered step) wins, so the plan asks for the
   least movement the relations allow. Only prompts with two relations on one axis get a plan
   (``shares_an_axis``): with one relation per axis the pairs do not compete for room.
2. ``layout_term``: per sample, the mean over objects of the squared distance between the map's
   centroid and its planned place. ``SteeringConfig.layout_weight`` adds it to the relation loss's
   gradient; the step's loss target still reads the relation loss alone.
3. ``box_term``: per sample, the mean over objects of (1 - the map's mass inside a box around its
   planned place)^2 (layout guidance's box energy). A centroid can sit at its place while the map
   spreads over a neighbour's; the box also asks each object to stay the plan's size.
   ``SteeringConfig.layout_box_weight`` adds it like the centroid term.
"""
from __future__ import annotations

import functools
import itertools
from typing import Sequence

import numpy as np
import torch

from .geneval import DOMINANCE, MARGIN
from .relations import relation

SIDE = 0.26           # nominal object side (fraction of the image): the shapes world draws 0.22-0.38
GAP = 0.04            # space a plan leaves between two boxes
SLACK = 0.1           # a planned relation must clear GenEval's dominance by this much
SIZES = ((SIDE, GAP), (0.2, 0.02), (0.16, 0.0))   # (side, gap) a plan tries in turn
MAX_CANDIDATES = 500_000


def grid_cells(cells: int, side: float = SIDE) -> np.ndarray:
    """Centres [cells^2, 2] (x, y in [0, 1], y down) of a cells x cells grid whose boxes fit the image."""
    axis = np.linspace(side / 2 + 0.05, 1 - side / 2 - 0.05, cells)
    return np.array([(x, y) for y in axis for x in axis])


def _holds(offset: np.ndarray, name: str, side: float, slack: float) -> np.ndarray:
    """GenEval's rule for "A name B" on square boxes of ``side`` at offsets A - B [..., 2]."""
    r = relation(name)
    revised = np.sign(offset) * np.maximum(np.abs(offset) - MARGIN * 2 * side, 0.0)
    norm = np.maximum(np.hypot(offset[..., 0], offset[..., 1]), 1e-9)
    return r.sign * revised[..., r.axis] / norm > DOMINANCE + slack


@functools.lru_cache(maxsize=64)
def feasible_layouts(n_objects: int, relations: tuple[tuple[int, str, int], ...], side: float = SIDE,
                     gap: float = GAP, slack: float = SLACK) -> np.ndarray:
    """Every grid layout [F, n_objects, 2] (centres, x and y in [0, 1], y down) where each (subject,
    relation, object) holds by GenEval's rule with boxes of ``side`` (clearing its dominance by
    ``slack``) and no two boxes come closer than ``gap``; the finest grid (5, 4 or 3 cells a side)
    whose assignments stay enumerable. Empty [0, n, 2] when none does (contradictory relations, too
    many objects)."""
    for cells in (5, 4, 3):
        if cells ** (2 * n_objects) <= MAX_CANDIDATES:
            break
    else:
        none = np.zeros((0, n_objects, 2))
        none.setflags(write=False)
        return none
    centres = grid_cells(cells, side)
    choice = np.array(list(itertools.permutations(range(len(centres)), n_objects)), np.int64)
    places = centres[choice]                                         # [K, n, 2]
    ok = np.ones(len(places), bool)
    for a, b in itertools.combinations(range(n_objects), 2):
        ok &= np.abs(places[:, a] - places[:, b]).max(-1) >= side + gap
    for s, name, o in relations:
        ok &= _holds(places[:, s] - places[:, o], name, side, slack)
    places = places[ok]
    places.setflags(write=False)                 # cached: shared by every caller
    return places


def plan_layout(n_objects: int, relations: Sequence[tuple[int, str, int]], current: np.ndarray | None = None,
                sizes: Sequence[tuple[float, float]] = SIZES, slack: float = SLACK) -> np.ndarray | None:
    """Of ``feasible_layouts`` at the first (side, gap) of ``sizes`` that has any (smaller objects
    only when the larger ones leave no room: four in a row), the one nearest (summed squared
    distance) to ``current`` centres [n_objects, 2] (None: to the image centre, i.e. the most
    central); None when no size has one."""
    if n_objects < 1:
        return None
    rels = tuple((int(s), str(r), int(o)) for s, r, o in relations)
    for side, gap in sizes:
        places = feasible_layouts(int(n_objects), rels, float(side), float(gap), float(slack))
        if len(places):
            break
    else:
        return None
    ref = np.full((n_objects, 2), 0.5) if current is None else np.asarray(current, np.float64).reshape(n_objects, 2)
    return places[int(np.argmin(((places - ref) ** 2).sum((1, 2))))].copy()


def shares_an_axis(relations: Sequence[tuple[int, str, int]]) -> bool:
    """True when two of the (subject, relation, object) relations lie on one image axis: a straight
    chain or one that folds back, where satisfying the pairs one at a time can leave no room for
    the third object. Chains that turn (one relation per axis) are left to the relation loss: on
    them a plan cost accuracy (docs/results.md, stop 27)."""
    axes = [relation(r).axis for _, r, _ in relations]
    return len(axes) > len(set(axes))


def pixel_centres(maps: torch.Tensor) -> torch.Tensor:
    """Coordinates [S] in [0, 1] of the pixel centres along either side of maps [..., S, S]: the one
    convention ``centroids`` and ``box_term`` both read positions in."""
    S = maps.shape[-1]
    return (torch.arange(S, dtype=maps.dtype, device=maps.device) + 0.5) / S


def centroids(maps: torch.Tensor) -> torch.Tensor:
    """Centroids [B, N, 2] (x, y in [0, 1]) of maps [B, N, S, S] (rows: y down). Differentiable."""
    grid = pixel_centres(maps)
    mass = maps.sum((-2, -1)).clamp_min(1e-8)
    cx = (maps.sum(-2) * grid).sum(-1) / mass
    cy = (maps.sum(-1) * grid).sum(-1) / mass
    return torch.stack([cx, cy], -1)


def layout_term(maps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample term [B]: mean over objects of |centroid - target|^2, for maps [B, N, S, S] and
    targets [B, N, 2]. Differentiable in the maps."""
    c = centroids(maps)
    return ((c - targets.to(c)) ** 2).sum(-1).mean(-1)


def box_side(targets: torch.Tensor, side: float = SIDE) -> torch.Tensor:
    """Per-sample side [B] of the boxes ``box_term`` puts around planned centres [B, N, 2]: ``side``
    (default the plan's nominal ``SIDE``), shrunk to the sample's closest spacing (largest coordinate
    gap) of two centres so that no two of its boxes overlap (four in a row is planned closer)."""
    t = targets.detach().double()
    B, n = t.shape[0], t.shape[-2]
    if n < 2:
        return torch.full((B,), float(side), dtype=t.dtype, device=t.device)
    gap = (t[:, :, None] - t[:, None]).abs().amax(-1)                   # [B, N, N] Chebyshev distance
    gap = gap + torch.eye(n, dtype=gap.dtype, device=gap.device) * 1e9
    return gap.amin((-2, -1)).clamp_max(float(side))


def box_term(maps: torch.Tensor, targets: torch.Tensor, side: float | torch.Tensor) -> torch.Tensor:
    """Per-sample term [B]: mean over objects of (1 - mass of the map inside the square of ``side``
    (a number, or one per sample [B]) centred at its target)^2, for maps [B, N, S, S] that each sum to
    1 and targets [B, N, 2] (x, y in [0, 1], y down). Differentiable in the maps."""
    grid = pixel_centres(maps)
    t = targets.to(maps)
    half = torch.as_tensor(side, dtype=maps.dtype, device=maps.device).reshape(-1, 1, 1) / 2
    in_x = ((grid - t[..., 0:1]).abs() <= half).to(maps.dtype)          # [B, N, S] columns inside
    in_y = ((grid - t[..., 1:2]).abs() <= half).to(maps.dtype)          # [B, N, S] rows inside
    inside = (maps * in_y[..., :, None] * in_x[..., None, :]).sum((-2, -1))
    return ((1 - inside) ** 2).mean(-1)
