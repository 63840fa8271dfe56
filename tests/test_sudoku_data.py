"""Sudoku CSV loading and writing."""

import sys
import types

import numpy as np
import pytest

from trmlm.puzzles.sudoku.data import load_sudoku_csv, write_sudoku_csv
from trmlm.puzzles.sudoku.dataset import SudokuSet
from trmlm.puzzles.sudoku.grid import parse_puzzle, parse_solution
from trmlm.errors import TRMError

Q = ".5..83.17...1..4..3.4..56.8....3...9.9.8245....6....7...9....5...729..861.36.72.4"
A = "652483917978162435314975628825736149791824563436519872269348751547291386183657294"


def _set() -> SudokuSet:
    q, a = parse_puzzle(Q), parse_solution(A)
    q2 = q.copy()
    q2[1] = 0
    return SudokuSet(np.stack([q, q2, q]), np.stack([a, a, a]), np.array([0, 3, 7]))


def test_write_then_load_round_trips(tmp_path):
    sset = _set()
    write_sudoku_csv(tmp_path / "train.csv", sset, "generated")
    assert (tmp_path / "train.csv").read_text().splitlines()[:2] == ["source,question,answer,rating",
                                                                   f"generated,{Q},{A},0"]
    for source in (tmp_path / "train.csv", tmp_path):  # a file, or a directory holding {split}.csv
        back = load_sudoku_csv(str(source))
        assert np.array_equal(back.questions, sset.questions) and np.array_equal(back.answers, sset.answers)
        assert back.ratings.tolist() == [0, 3, 7] and back.ratings.dtype == np.int32


def test_limit_and_min_rating(tmp_path):
    write_sudoku_csv(tmp_path / "test.csv", _set(), "generated")
    assert len(load_sudoku_csv(tmp_path, split="test", limit=2)) == 2
    assert load_sudoku_csv(tmp_path, split="test", min_rating=1).ratings.tolist() == [3, 7]
    assert load_sudoku_csv(tmp_path, split="test", min_rating=1, limit=1).ratings.tolist() == [3]


@pytest.mark.parametrize("question, answer, message", [
    (Q[:-1], A, "line 3: question and answer need 81 characters"),
    (Q[:-1] + "x", A, "line 3: question has illegal character 'x' at position 81"),
    (Q, A[1] + A[0] + A[2:], "line 3: answer is not a valid sudoku solution"),
    ("1" + Q[1:], A, "line 3: answer contradicts the question's givens"),
])
def test_malformed_row_names_file_and_line(tmp_path, question, answer, message):
    path = tmp_path / "bad.csv"
    path.write_text(f"source,question,answer,rating\nok,{Q},{A},0\nbad,{question},{answer},1\n")
    with pytest.raises(TRMError, match=message) as info:
        load_sudoku_csv(path)
    assert "bad.csv" in str(info.value)


def test_bad_header_rating_and_missing_path(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text(f"source,puzzle,answer\nok,{Q},{A}\n")
    with pytest.raises(TRMError, match="header lacks question"):
        load_sudoku_csv(path)
    path.write_text(f"source,question,answer,rating\nok,{Q},{A},hard\n")
    with pytest.raises(TRMError, match="line 2: rating 'hard' is not an integer"):
        load_sudoku_csv(path)
    with pytest.raises(TRMError, match="no such file"):
        load_sudoku_csv(tmp_path / "missing.csv")
    with pytest.raises(TRMError, match="has no valid.csv"):
        load_sudoku_csv(tmp_path, split="valid")


def test_unreachable_hub_gives_one_line_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(TRMError, match="could not load someone/sudoku-set .* local CSV path") as info:
        load_sudoku_csv("someone/sudoku-set")
    assert "\n" not in str(info.value)


def test_shared_collection_loads(shared_data_dir):
    path = shared_data_dir / "sudoku" / "tdoku_collections_solved.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    sset = load_sudoku_csv(path, limit=300)
    assert len(sset) == 300 and (sset.questions > 0).sum(axis=1).min() >= 17
