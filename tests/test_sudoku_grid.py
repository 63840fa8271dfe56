"""Sudoku grid parsing, validation, formatting and token encoding."""

import numpy as np
import pytest

from trmlm.puzzles.sudoku.grid import (VOCAB_SIZE, conflicts, format_grid, from_tokens, grid_to_string,
                                 is_valid_solution, parse_puzzle, parse_solution, to_tokens)
from trmlm.errors import TRMError

PUZZLE = ".5..83.17...1..4..3.4..56.8....3...9.9.8245....6....7...9....5...729..861.36.72.4"
SOLUTION = "652483917978162435314975628825736149791824563436519872269348751547291386183657294"


def test_parse_puzzle_reads_digits_and_blanks():
    g = parse_puzzle(PUZZLE)
    assert g.shape == (81,) and g.dtype == np.uint8
    assert grid_to_string(g) == PUZZLE
    assert np.array_equal(parse_puzzle(PUZZLE.replace(".", "0")), g)


def test_pretty_printed_grid_pastes_back():
    g = parse_puzzle(PUZZLE)
    plain = format_grid(g, color=False)
    assert "[" not in plain and len(plain.splitlines()) == 11
    assert np.array_equal(parse_puzzle(plain), g)


def test_wrong_cell_count_is_reported():
    with pytest.raises(TRMError, match="puzzle has 80 cells, expected 81"):
        parse_puzzle(PUZZLE[:-1])


def test_illegal_character_is_named_with_position():
    with pytest.raises(TRMError, match=r"illegal character 'x' at position 3"):
        parse_puzzle(".5x" + PUZZLE[3:])


@pytest.mark.parametrize("second, unit", [(8, "row 1"), (72, "column 1"), (20, "box 1")])
def test_contradiction_names_digit_and_unit(second, unit):
    cells = ["."] * 81
    cells[0] = cells[second] = "5"
    text = "".join(cells)
    with pytest.raises(TRMError, match=f"contradictory puzzle: digit 5 appears twice in {unit}$"):
        parse_puzzle(text)
    assert conflicts(np.array([5 if ch == "5" else 0 for ch in text])) == [f"digit 5 appears twice in {unit}"]


def test_parse_solution_checks_blanks_and_rules():
    assert is_valid_solution(parse_solution(SOLUTION))
    with pytest.raises(TRMError, match="blank"):
        parse_solution(PUZZLE)
    swapped = SOLUTION[1] + SOLUTION[0] + SOLUTION[2:]  # breaks two columns
    with pytest.raises(TRMError, match="invalid solution: digit"):
        parse_solution(swapped)


def test_is_valid_solution_rejects_partial_and_broken_grids():
    sol = parse_solution(SOLUTION)
    assert is_valid_solution(sol)
    assert not is_valid_solution(parse_puzzle(PUZZLE))
    broken = sol.copy()
    broken[0], broken[1] = broken[1], broken[0]
    assert not is_valid_solution(broken)
    assert conflicts(sol) == []


def test_tokens_round_trip():
    g = np.stack([parse_puzzle(PUZZLE), parse_solution(SOLUTION)])
    tokens = to_tokens(g)
    assert tokens.dtype == np.int64 and tokens.min() >= 1 and tokens.max() < VOCAB_SIZE
    assert (tokens[0][g[0] == 0] == 1).all()
    assert np.array_equal(from_tokens(tokens), g)
    assert np.array_equal(from_tokens(np.array([0, 1, 2, 10, 11])), [0, 0, 1, 9, 0])


def test_color_format_marks_givens_and_wrong_cells():
    puzzle = parse_puzzle(PUZZLE)
    sol = parse_solution(SOLUTION)
    wrong = np.zeros(81, bool)
    wrong[0] = True
    text = format_grid(sol, givens=puzzle, wrong=wrong)
    assert text.startswith("[bold red]6[/bold red]")
    assert "[bold]5[/bold]" in text and "[cyan]" in text
