"""Sudoku CSV loading and writing (the sapientinc/sudoku-extreme format: source,question,answer,rating)."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from trmlm.puzzles.sudoku.dataset import SudokuSet
from trmlm.puzzles.sudoku.grid import valid_solutions
from trmlm.errors import TRMError

CSV_COLUMNS = ("source", "question", "answer", "rating")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DOT, _ZERO, _NINE = ord("."), ord("0"), ord("9")


def load_sudoku_csv(source: str | os.PathLike, *, split: str = "train", limit: int | None = None,
                    min_rating: int | None = None) -> SudokuSet:
    """Load puzzles from a CSV file, a directory holding ``{split}.csv``, or a Hugging Face dataset id.

    Rows rated below ``min_rating`` are dropped first, then the first ``limit`` rows are kept.
    Every kept row is validated: 81-cell question ('.' or '0' blank), a valid 81-digit answer
    that agrees with the question's givens, an integer rating.
    """
    if limit is not None and limit < 0:
        raise TRMError(f"limit must be >= 0, got {limit}")
    path = Path(source).expanduser()
    if path.is_dir():
        csv_path = path / f"{split}.csv"
        if not csv_path.is_file():
            raise TRMError(f"{path} has no {split}.csv")
        return _load_local(csv_path, limit, min_rating)
    if path.is_file():
        return _load_local(path, limit, min_rating)
    if _HUB_ID.match(str(source)) and not str(source).endswith(".csv"):
        return _load_hub(str(source), split, limit, min_rating)
    raise TRMError(f"no such file or directory: {source}")


def _load_local(path: Path, limit: int | None, min_rating: int | None) -> SudokuSet:
    questions: list[str] = []
    answers: list[str] = []
    ratings: list[int] = []
    lines: list[int] = []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise TRMError(f"{path} is empty")
        cols = {name.strip(): i for i, name in enumerate(header)}
        missing = [name for name in ("question", "answer") if name not in cols]
        if missing:
            raise TRMError(f"{path}: header lacks {', '.join(missing)} (expected {','.join(CSV_COLUMNS)})")
        qi, ai, ri = cols["question"], cols["answer"], cols.get("rating")
        for row in reader:
            if limit is not None and len(questions) >= limit:
                break
            if not row:
                continue
            if len(row) != len(header):
                raise TRMError(f"{path} line {reader.line_num}: {len(row)} fields, expected {len(header)}")
            rating = 0 if ri is None else _parse_rating(row[ri], lambda: f"{path} line {reader.line_num}")
            if min_rating is not None and rating < min_rating:
                continue
            questions.append(row[qi])
            answers.append(row[ai])
            ratings.append(rating)
            lines.append(reader.line_num)
    return _to_set(questions, answers, ratings, lambda i: f"{path} line {lines[i]}")


def _load_hub(dataset_id: str, split: str, limit: int | None, min_rating: int | None) -> SudokuSet:
    try:
        import datasets
    except ImportError as exc:
        raise TRMError(f"loading {dataset_id} needs the 'datasets' package;"
                       " give a local CSV path instead") from exc
    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # network, auth, unknown dataset or split: every case means "use a local copy"
        raise TRMError(f"could not load {dataset_id} (split {split}) from the Hugging Face hub"
                       f" ({type(exc).__name__}); it may be unreachable: give a local CSV path or"
                       " directory instead") from exc
    missing = [name for name in ("question", "answer") if name not in ds.column_names]
    if missing:
        raise TRMError(f"hub dataset {dataset_id} lacks column(s) {', '.join(missing)}")
    ratings = [0] * len(ds)
    if "rating" in ds.column_names:
        ratings = [_parse_rating(r, lambda: f"{dataset_id} ({split}) row {i}")
                   for i, r in enumerate(ds["rating"])]
    # Filter on the small rating column first: the full train split has millions of rows.
    keep = [i for i, r in enumerate(ratings) if min_rating is None or r >= min_rating][:limit]
    ds = ds.select(keep)
    return _to_set(list(ds["question"]), list(ds["answer"]), [ratings[i] for i in keep],
                   lambda j: f"{dataset_id} ({split}) row {keep[j]}")


def _parse_rating(text: object, where: Callable[[], str]) -> int:
    try:
        rating = int(text)
    except (TypeError, ValueError):
        raise TRMError(f"{where()}: rating {text!r} is not an integer") from None
    if not -2**31 <= rating < 2**31:  # stored as int32
        raise TRMError(f"{where()}: rating {rating} does not fit in 32 bits")
    return rating


def _to_set(questions: list[str], answers: list[str], ratings: list[int],
            where: Callable[[int], str]) -> SudokuSet:
    """Validate all rows at once with numpy; name the first bad row."""
    for i, (q, a) in enumerate(zip(questions, answers)):
        if len(q) != 81 or len(a) != 81:
            raise TRMError(f"{where(i)}: question and answer need 81 characters, got {len(q)} and {len(a)}")
    n = len(questions)
    # Non-ASCII characters become '?', one byte each, so rows stay 81 bytes and fail the checks.
    q = np.frombuffer("".join(questions).encode("ascii", "replace"), np.uint8).reshape(n, 81)
    a = np.frombuffer("".join(answers).encode("ascii", "replace"), np.uint8).reshape(n, 81)
    q_ok = (q == _DOT) | ((q >= _ZERO) & (q <= _NINE))
    a_ok = (a > _ZERO) & (a <= _NINE)
    for ok, arr, what in ((q_ok, q, "question"), (a_ok, a, "answer")):
        bad = np.flatnonzero(~ok.all(axis=1))
        if bad.size:
            i = int(bad[0])
            pos = int(np.flatnonzero(~ok[i])[0])
            raise TRMError(f"{where(i)}: {what} has illegal character {chr(arr[i, pos])!r}"
                           f" at position {pos + 1}")
    questions_arr = np.where(q == _DOT, 0, q - _ZERO).astype(np.uint8)
    answers_arr = (a - _ZERO).astype(np.uint8)
    bad = np.flatnonzero(~valid_solutions(answers_arr))
    if bad.size:
        raise TRMError(f"{where(int(bad[0]))}: answer is not a valid sudoku solution")
    bad = np.flatnonzero(((questions_arr != 0) & (questions_arr != answers_arr)).any(axis=1))
    if bad.size:
        raise TRMError(f"{where(int(bad[0]))}: answer contradicts the question's givens")
    return SudokuSet(questions_arr, answers_arr, np.array(ratings, np.int32))


def write_sudoku_csv(path: str | os.PathLike, sset: SudokuSet, source_name: str) -> None:
    """Write ``sset`` as source,question,answer,rating rows ('.' for blanks), loadable by load_sudoku_csv."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chars = np.frombuffer(b".123456789", np.uint8)
    q_text = chars[sset.questions].tobytes().decode("ascii")  # (N*81) characters
    a_text = chars[sset.answers].tobytes().decode("ascii")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for i, rating in enumerate(sset.ratings.tolist()):
            writer.writerow([source_name, q_text[81 * i:81 * i + 81], a_text[81 * i:81 * i + 81], rating])
