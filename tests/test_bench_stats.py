"""The uncertainty of exact-answer figures: Wilson intervals and the exact McNemar test, on values
worked by hand."""

from __future__ import annotations

import math

import pytest

from trmlm.bench.stats import mcnemar_exact, paired, wilson_interval


def test_wilson_interval_on_hand_worked_values():
    # 5 of 10: centre 0.5, half-width 1.96 * sqrt(0.025 + 0.0096) / 1.384 = 0.2634
    assert wilson_interval(5, 10) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    # 0 of 10: the lower end is 0 and the upper (z^2 / n) / (1 + z^2 / n) = 0.2775
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.3842 / 1.3842, abs=1e-4)
    assert wilson_interval(10, 10)[0] == pytest.approx(1 - 0.3842 / 1.3842, abs=1e-4)
    # 24 of 100 (a Sudoku-text figure): about 0.167 to 0.332, not +-0.01
    lo, hi = wilson_interval(24, 100)
    assert 0.16 < lo < 0.17 and 0.33 < hi < 0.34
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_mcnemar_exact_on_hand_worked_values():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)            # all five discordant one way
    assert mcnemar_exact(0, 5) == mcnemar_exact(5, 0)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    assert mcnemar_exact(3, 3) == 1.0                              # capped
    assert mcnemar_exact(2, 6) == pytest.approx(2 * sum(math.comb(8, i) for i in range(3)) / 256)


def test_paired_counts_the_disagreements():
    a = [True, True, False, False, True, False]
    b = [True, False, True, False, False, False]
    assert paired(a, b) == {"problems": 6, "both": 1, "only_a": 2, "only_b": 1,
                            "mcnemar_p": round(mcnemar_exact(2, 1), 4)}
    with pytest.raises(ValueError):
        paired(a, b[:-1])
