"""Maze CSV loading (sapientinc/maze-30x30-hard-1k format: source,question,answer,rating) and a cache."""

from __future__ import annotations

import csv
import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from trmlm.puzzles.maze.generator import generate_mazes
from trmlm.puzzles.maze.grid import GOAL, OPEN, PATH, START, path_connects, text_to_tokens
from trmlm.errors import TRMError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
GENERATOR_VERSION = 1

MazeSet = tuple[np.ndarray, np.ndarray, np.ndarray]  # questions (N, L), answers (N, L), ratings (N,)


def load_maze_csv(source: str | os.PathLike, *, split: str = "train", size: int = 30,
                  limit: int | None = None) -> MazeSet:
    """Mazes from a CSV file, a directory holding {split}.csv, or a Hugging Face dataset id."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / f"{split}.csv"
        if not path.is_file():
            raise TRMError(f"{source} has no {split}.csv")
    if path.is_file():
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.DictReader(f)
            missing = {"question", "answer"} - set(reader.fieldnames or [])
            if missing:
                raise TRMError(f"{path}: header lacks {', '.join(sorted(missing))}")
            rows = [(r["question"], r["answer"], r.get("rating") or "0") for _, r in
                    zip(range(limit if limit is not None else 10**12), reader)]
        where = str(path)
    elif _HUB_ID.match(str(source)) and not str(source).endswith(".csv"):
        try:
            import datasets
            ds = datasets.load_dataset(str(source), split=split)
        except Exception as exc:  # offline, unknown id: every case means "use a local copy"
            raise TRMError(f"could not load {source} (split {split}) from the Hugging Face hub"
                           f" ({type(exc).__name__}); give a local CSV file or directory instead") from exc
        n = len(ds) if limit is None else min(limit, len(ds))
        rating = ds["rating"][:n] if "rating" in ds.column_names else [0] * n
        rows = list(zip(ds["question"][:n], ds["answer"][:n], rating))
        where = f"{source} ({split})"
    else:
        raise TRMError(f"no such file or directory: {source}")
    return _validate(rows, size, where)


def _validate(rows: list[tuple[str, str, object]], size: int, where: str) -> MazeSet:
    L = size * size
    qs, ans, ratings = [], [], []
    for i, (q, a, r) in enumerate(rows):
        at = f"{where} row {i + 1}"
        if len(q) != L or len(a) != L:
            raise TRMError(f"{at}: question/answer have {len(q)}/{len(a)} cells, expected {L}"
                           f" (set data.size to the maze side)")
        qt, at_ = text_to_tokens(q, at), text_to_tokens(a, at)
        if (qt == START).sum() != 1 or (qt == GOAL).sum() != 1:
            raise TRMError(f"{at}: maze needs exactly one start 'S' and one goal 'G'")
        if ((qt != at_) & ~((qt == OPEN) & (at_ == PATH))).any():
            raise TRMError(f"{at}: answer differs from the question outside the path")
        qs.append(qt)
        ans.append(at_)
        try:
            ratings.append(int(r))
        except (TypeError, ValueError):
            raise TRMError(f"{at}: rating {r!r} is not an integer") from None
    if not qs:
        raise TRMError(f"{where}: no mazes")
    qs_arr, ans_arr = np.stack(qs), np.stack(ans)
    for i in range(len(ans_arr)):
        if not path_connects(ans_arr[i], size):
            raise TRMError(f"{where} row {i + 1}: answer is not a connected S-to-G path")
    return qs_arr, ans_arr, np.array(ratings, np.int32)


def generate_mazes_cached(n: int, size: int, min_path: int, seed: int, unique: bool = False) -> MazeSet:
    """generate_mazes() stored as .npz under $TRM_CACHE_DIR/maze (default ~/.cache/trmlm/maze)."""
    root = os.environ.get("TRM_CACHE_DIR")
    directory = Path(root) / "maze" if root else Path.home() / ".cache" / "trmlm" / "maze"
    path = directory / (f"maze_v{GENERATOR_VERSION}_n{n}_size{size}_min{min_path}_seed{seed}"
                         f"{'_unique' if unique else ''}.npz")
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                return f["questions"], f["answers"], f["ratings"]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            pass  # unreadable cache entry: regenerate
    sets = generate_mazes(n, size, min_path, seed, unique)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, questions=sets[0], answers=sets[1], ratings=sets[2])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sets
