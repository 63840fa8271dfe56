"""Validity-preserving Sudoku augmentation (TRM paper): digit relabelling, transpose, band/stack shuffles."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trmlm.errors import TRMError


def _is_band_perm(perm: np.ndarray) -> bool:
    """A permutation of 0..8 that moves whole bands (groups of 3) and rows within them."""
    if sorted(perm.tolist()) != list(range(9)):
        return False
    bands = perm.reshape(3, 3) // 3  # (band slot, row in band)
    return bool((bands == bands[:, :1]).all())


@dataclass(frozen=True, eq=False)  # numpy fields: compare with same_transform()
class SudokuTransform:
    """out[r, c] = digit_map[src[row_perm[r], col_perm[c]]], src = grid.T if transpose else grid.

    The same order as the reference build_sudoku_dataset.py: transpose first, then pick rows
    and columns, then relabel digits. digit_map[0] == 0 keeps blanks blank.
    """

    digit_map: np.ndarray  # (10,) uint8, a permutation of 1..9 with 0 -> 0
    transpose: bool
    row_perm: np.ndarray  # (9,) int64, band-preserving
    col_perm: np.ndarray  # (9,) int64, stack-preserving
    index_map: np.ndarray = field(init=False, repr=False)  # (81,) source cell of each output cell

    def __post_init__(self) -> None:
        digit_map = np.asarray(self.digit_map, dtype=np.uint8)
        row_perm = np.asarray(self.row_perm, dtype=np.int64)
        col_perm = np.asarray(self.col_perm, dtype=np.int64)
        if digit_map.shape != (10,) or sorted(digit_map.tolist()) != list(range(10)) or digit_map[0] != 0:
            raise TRMError("digit_map must map 0 -> 0 and permute 1..9")
        if row_perm.shape != (9,) or col_perm.shape != (9,) or not (
                _is_band_perm(row_perm) and _is_band_perm(col_perm)):
            raise TRMError("row_perm/col_perm must permute bands/stacks and the lines within each")
        r, c = np.meshgrid(row_perm, col_perm, indexing="ij")  # (9, 9) source row, column
        index_map = (c * 9 + r) if self.transpose else (r * 9 + c)
        object.__setattr__(self, "digit_map", digit_map)
        object.__setattr__(self, "transpose", bool(self.transpose))
        object.__setattr__(self, "row_perm", row_perm)
        object.__setattr__(self, "col_perm", col_perm)
        object.__setattr__(self, "index_map", index_map.reshape(81))


def same_transform(a: SudokuTransform, b: SudokuTransform) -> bool:
    """True if two transforms have the same parameters."""
    return (a.transpose == b.transpose and np.array_equal(a.digit_map, b.digit_map)
            and np.array_equal(a.row_perm, b.row_perm) and np.array_equal(a.col_perm, b.col_perm))


def identity_transform() -> SudokuTransform:
    """The transform that changes nothing (augmentation copy 0)."""
    return SudokuTransform(np.arange(10), False, np.arange(9), np.arange(9))


def _line_perm(rng: np.random.Generator) -> np.ndarray:
    # Shuffle the 3 bands, then the 3 lines inside each, as the reference does.
    return np.concatenate([3 * b + rng.permutation(3) for b in rng.permutation(3)])


def random_transform(rng: np.random.Generator) -> SudokuTransform:
    """Uniform digit permutation, transpose with p=0.5, random band/row and stack/column shuffles."""
    digit_map = np.concatenate([[0], rng.permutation(9) + 1])
    transpose = bool(rng.random() < 0.5)
    return SudokuTransform(digit_map, transpose, _line_perm(rng), _line_perm(rng))


def transform_for(seed: int, index: int) -> SudokuTransform:
    """Deterministic transform for augmentation copy ``index`` of a run seeded ``seed`` (0 = identity)."""
    if seed < 0 or index < 0:
        raise TRMError(f"seed and augmentation index must be >= 0, got {seed}, {index}")
    if index == 0:
        return identity_transform()
    return random_transform(np.random.default_rng([seed, index]))


def apply_transform(t: SudokuTransform, grids: np.ndarray) -> np.ndarray:
    """Apply ``t`` to a (81,) grid or a (N, 81) batch of grids (values 0..9, not tokens)."""
    arr = np.asarray(grids)
    if arr.ndim not in (1, 2) or arr.shape[-1] != 81:
        raise TRMError(f"apply_transform expects shape (81,) or (N, 81), got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > 9):
        raise TRMError("apply_transform expects grid values 0..9; convert tokens with from_tokens first")
    return t.digit_map[arr[..., t.index_map]].astype(arr.dtype)


def invert_transform(t: SudokuTransform) -> SudokuTransform:
    """The transform u with apply(u, apply(t, g)) == g."""
    digit_inv = np.zeros(10, np.uint8)
    digit_inv[t.digit_map] = np.arange(10)
    row_inv = np.argsort(t.row_perm)
    col_inv = np.argsort(t.col_perm)
    # out = D[src[R][:, C]] inverts to src = Dinv[out[Rinv][:, Cinv]]; when src was the
    # transposed grid, transposing that back swaps the roles of the row and column orders.
    if t.transpose:
        return SudokuTransform(digit_inv, True, col_inv, row_inv)
    return SudokuTransform(digit_inv, False, row_inv, col_inv)


def augment_pair(question: np.ndarray, answer: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random transform applied to both a puzzle and its solution (or to matching batches)."""
    t = random_transform(rng)
    return apply_transform(t, question), apply_transform(t, answer)
