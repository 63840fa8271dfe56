"""Puzzle generator: uniqueness, blank count, determinism, rating filter, cache."""

import numpy as np
import pytest

from trmlm.puzzles.sudoku.generator import (generate_puzzle, generate_puzzles, generate_puzzles_cached,
                                      generate_solution)
from trmlm.puzzles.sudoku.grid import is_valid_solution
from trmlm.puzzles.sudoku.solver import count_solutions, rate
from trmlm.errors import TRMError


def test_generate_solution_is_valid_and_random():
    rng = np.random.default_rng(0)
    a, b = generate_solution(rng), generate_solution(rng)
    assert is_valid_solution(a) and is_valid_solution(b) and not np.array_equal(a, b)


@pytest.mark.parametrize("n_blanks", [30, 52])
def test_puzzles_are_unique_with_exact_blanks(n_blanks):
    sset = generate_puzzles(6, n_blanks=n_blanks, seed=3)
    assert len(sset) == 6
    for q, a, r in zip(sset.questions, sset.answers, sset.ratings):
        assert (q == 0).sum() == n_blanks
        assert is_valid_solution(a) and (q[q > 0] == a[q > 0]).all()
        assert count_solutions(q, limit=2) == 1
        assert rate(q) == r


def test_deterministic_and_prefix_stable():
    a = generate_puzzles(4, n_blanks=45, seed=7)
    b = generate_puzzles(6, n_blanks=45, seed=7)
    c = generate_puzzles(4, n_blanks=45, seed=8)
    assert np.array_equal(a.questions, b.questions[:4]) and np.array_equal(a.ratings, b.ratings[:4])
    assert not np.array_equal(a.questions, c.questions)


def test_rating_filter_is_respected():
    sset = generate_puzzles(3, n_blanks=54, min_rating=1, seed=1)
    assert (sset.ratings >= 1).all()
    sset = generate_puzzles(3, n_blanks=54, max_rating=0, seed=1)
    assert (sset.ratings == 0).all()


def test_impossible_requests_raise():
    with pytest.raises(TRMError, match="n_blanks"):
        generate_puzzles(1, n_blanks=70)
    with pytest.raises(TRMError, match="below min_rating"):
        generate_puzzles(1, n_blanks=40, min_rating=3, max_rating=1)
    with pytest.raises(TRMError, match="after 2 tries"):
        generate_puzzle(np.random.default_rng(0), n_blanks=20, min_rating=5, max_tries=2)


def test_cache_writes_once_and_reloads(tmp_path):
    first = generate_puzzles_cached(3, n_blanks=40, seed=5, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    again = generate_puzzles_cached(3, n_blanks=40, seed=5, cache_dir=tmp_path)
    assert np.array_equal(first.questions, again.questions) and np.array_equal(first.ratings, again.ratings)
    files[0].write_bytes(b"corrupt")  # a damaged entry is regenerated, not trusted
    healed = generate_puzzles_cached(3, n_blanks=40, seed=5, cache_dir=tmp_path)
    assert np.array_equal(first.answers, healed.answers)


def test_difficulty_summary():
    summary = generate_puzzles(4, n_blanks=45, seed=0).difficulty_summary()
    assert summary["n"] == 4 and summary["mean_blanks"] == 45.0
    assert 0.0 <= summary["share_guessing"] <= 1.0 and summary["p90_rating"] >= summary["median_rating"]
