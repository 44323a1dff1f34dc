"""Statistics for accuracy tables: Wilson intervals and exact paired (McNemar) comparisons.

An accuracy over n images is a binomial proportion; with n = 100 its 95% interval is about +-0.09
wide, so a difference between two arms is read from the images they were given in common: the
pairs where exactly one arm is right carry all the evidence (McNemar's test), and the exact test
asks how likely a split that uneven is when either arm is equally likely to be the right one.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

Z95 = 1.959963984540054          # two-sided 95% quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); (nan, nan) for n = 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the binomial(only_a + only_b, 1/2) probability of a split at
    least as uneven as the one seen (1.0 when no pair differs)."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"counts must be non-negative, got {only_a}, {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def paired_counts(a: Mapping[object, bool], b: Mapping[object, bool]) -> dict:
    """Compare two arms on the items both judged (keys such as (prompt, seed)).

    Returns ``pairs`` (items in common), ``both``, ``only_a``, ``only_b``, ``neither`` and the exact
    McNemar ``p`` of only_a vs only_b.
    """
    keys = [k for k in a if k in b]
    only_a = sum(1 for k in keys if a[k] and not b[k])
    only_b = sum(1 for k in keys if b[k] and not a[k])
    both = sum(1 for k in keys if a[k] and b[k])
    return {"pairs": len(keys), "both": both, "only_a": only_a, "only_b": only_b,
            "neither": len(keys) - both - only_a - only_b, "p": mcnemar_exact(only_a, only_b)}


def parse_int_list(text: str) -> list[int]:
    """"40-43" -> [40, 41, 42, 43]; "0,7,9" -> [0, 7, 9]; parts may be combined ("0-3,9").
    Duplicates are refused (a repeated seed would count one image twice)."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"{part!r} is not an integer or a range A-B") from None
        if b < a:
            raise ValueError(f"empty range {part!r}")
        out.extend(range(a, b + 1))
    if not out:
        raise ValueError(f"no integers in {text!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"{text!r} repeats a value")
    return out


def ci_text(interval: Iterable[float]) -> str:
    lo, hi = interval
    return f"{lo:.2f}-{hi:.2f}"
