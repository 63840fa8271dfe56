"""Sudoku augmentation: validity, puzzle/solution consistency, inverse, structure."""

import numpy as np
import pytest

from trmlm.puzzles.sudoku.augment import (SudokuTransform, apply_transform, augment_pair, identity_transform,
                                    invert_transform, random_transform, same_transform, transform_for)
from trmlm.puzzles.sudoku.grid import is_valid_solution, parse_puzzle, parse_solution
from trmlm.puzzles.sudoku.solver import solve
from trmlm.errors import TRMError

PUZZLE = parse_puzzle(".5..83.17...1..4..3.4..56.8....3...9.9.8245....6....7...9....5...729..861.36.72.4")
SOLUTION = parse_solution("652483917978162435314975628825736149791824563436519872269348751547291386183657294")


def test_solution_stays_valid_and_puzzle_maps_to_its_solution():
    rng = np.random.default_rng(0)
    for _ in range(5):
        q, a = augment_pair(PUZZLE, SOLUTION, rng)
        assert is_valid_solution(a)
        assert (q == 0).sum() == (PUZZLE == 0).sum()
        result = solve(q)
        assert result.n_solutions == 1 and np.array_equal(result.solution, a)


@pytest.mark.parametrize("seed", range(4))
def test_inverse_round_trips_grids_and_batches(seed):
    t = random_transform(np.random.default_rng(seed))
    batch = np.stack([PUZZLE, SOLUTION])
    out = apply_transform(t, batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert np.array_equal(apply_transform(invert_transform(t), out), batch)
    assert np.array_equal(apply_transform(t, PUZZLE), out[0])


def test_transpose_inverse_round_trips():
    t = random_transform(np.random.default_rng(1))
    t = SudokuTransform(t.digit_map, True, t.row_perm, t.col_perm)
    assert np.array_equal(apply_transform(invert_transform(t), apply_transform(t, SOLUTION)), SOLUTION)


def test_band_and_stack_structure_preserved():
    # Cells sharing a row, column or box before must share one after (same unit kind up to transpose).
    t = random_transform(np.random.default_rng(3))
    ids = np.arange(81)
    src = t.index_map.reshape(9, 9)  # source cell of each output cell
    for r in range(9):
        src_rows = {int(i) // 9 for i in src[r]}
        src_cols = {int(i) % 9 for i in src[r]}
        assert len(src_rows) == 1 or len(src_cols) == 1  # an output row is one source row/column
    boxes = ids.reshape(3, 3, 3, 3).transpose(0, 2, 1, 3).reshape(9, 9)
    for box in boxes:
        cells = src.reshape(81)[box]
        assert len({(int(c) // 27, int(c) % 9 // 3) for c in cells}) == 1  # one source box


def test_blanks_stay_blank_and_identity():
    t = random_transform(np.random.default_rng(5))
    out = apply_transform(t, PUZZLE)
    assert (out == 0).sum() == (PUZZLE == 0).sum()
    assert np.array_equal(apply_transform(identity_transform(), PUZZLE), PUZZLE)


def test_transform_for_is_deterministic():
    assert same_transform(transform_for(0, 0), identity_transform())
    assert same_transform(transform_for(3, 7), transform_for(3, 7))
    assert not same_transform(transform_for(3, 7), transform_for(3, 8))
    assert not same_transform(transform_for(3, 7), transform_for(4, 7))


def test_rejects_bad_input():
    with pytest.raises(TRMError, match="tokens"):
        apply_transform(identity_transform(), PUZZLE + 1)
    with pytest.raises(TRMError, match="row_perm"):
        SudokuTransform(np.arange(10), False, np.array([1, 2, 3, 0, 4, 5, 6, 7, 8]), np.arange(9))
