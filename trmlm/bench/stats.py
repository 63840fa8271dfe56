"""How far an exact-answer figure can be trusted on the problems it was measured on: the Wilson
interval of one accuracy, and the exact McNemar test of two exit rules scored on the same problems
(only the problems they disagree on tell them apart)."""

from __future__ import annotations

import math
from typing import Sequence


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of correct / n (95% at z = 1.96); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= correct <= n:
        raise ValueError(f"correct must lie in [0, {n}], got {correct}")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: under "the rules are equally good" each of the
    only_a + only_b discordant problems goes either way with probability 1/2."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(a: Sequence[bool], b: Sequence[bool]) -> dict[str, float | int]:
    """Rule a against rule b on the same problems (per-problem correctness, same order): the
    problems both solve, only a solves, only b solves, and the exact McNemar p-value."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same problems, got {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    return {"problems": len(a), "both": sum(1 for x, y in zip(a, b) if x and y), "only_a": only_a,
            "only_b": only_b, "mcnemar_p": round(mcnemar_exact(only_a, only_b), 4)}
