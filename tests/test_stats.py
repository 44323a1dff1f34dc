"""l2s/stats.py: Wilson intervals, exact McNemar, paired counts, integer lists."""
import math

import pytest

from l2s.stats import mcnemar_exact, paired_counts, parse_int_list, wilson_interval


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(83, 100)
    assert lo == pytest.approx(0.7437, abs=1e-3) and hi == pytest.approx(0.8908, abs=1e-3)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_mcnemar_exact_against_the_binomial_tail():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(2, 8) == pytest.approx(2 * 56 / 1024)
    assert mcnemar_exact(8, 2) == mcnemar_exact(2, 8)
    assert mcnemar_exact(9, 8) == 1.0                       # capped
    # the README's old claim: 9 vs 8 images right in only one arm is no evidence at all
    assert mcnemar_exact(9, 8) > 0.05 and mcnemar_exact(0, 10) < 0.01


def test_paired_counts_uses_only_common_items():
    a = {("p", 0): True, ("p", 1): True, ("p", 2): False, ("q", 0): True}
    b = {("p", 0): True, ("p", 1): False, ("p", 2): True, ("p", 3): True}
    c = paired_counts(a, b)
    assert c == {"pairs": 3, "both": 1, "only_a": 1, "only_b": 1, "neither": 0, "p": 1.0}


def test_parse_int_list():
    assert parse_int_list("40-43") == [40, 41, 42, 43]
    assert parse_int_list("0,7,9") == [0, 7, 9]
    assert parse_int_list("0-2, 9") == [0, 1, 2, 9]
    for bad in ("", "a", "5-3", "1,1", "0-2,2"):
        with pytest.raises(ValueError):
            parse_int_list(bad)
