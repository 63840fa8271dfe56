"""ARC augmentation: one of 8 dihedral transforms + a permutation of colours 1-9 (0 fixed), deduplicated."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from trmlm.puzzles.arc.load import ArcTask
from trmlm.puzzles.dihedral import dihedral, inverse_dihedral


@dataclass(frozen=True)
class ArcAug:
    """out = colours[dihedral(grid, k)]; colours is a permutation of 0..9 with colours[0] == 0."""

    k: int                       # dihedral index 0..7 (puzzles/dihedral.py)
    colours: tuple[int, ...]     # (10,)

    def apply(self, grid: np.ndarray) -> np.ndarray:
        return np.asarray(self.colours, np.uint8)[dihedral(grid, self.k)]

    def invert(self, grid: np.ndarray) -> np.ndarray:
        inverse = np.argsort(np.asarray(self.colours)).astype(np.uint8)
        return inverse_dihedral(inverse[np.asarray(grid)], self.k)


IDENTITY = ArcAug(0, tuple(range(10)))


def random_aug(rng: np.random.Generator) -> ArcAug:
    colours = np.concatenate([[0], 1 + rng.permutation(9)])  # background 0 stays 0 (paper)
    return ArcAug(int(rng.integers(0, 8)), tuple(int(c) for c in colours))


def task_fingerprint(task: ArcTask, aug: ArcAug) -> str:
    """A hash of every augmented grid of the task (demos and test inputs): equal = duplicate."""
    h = hashlib.sha1()
    for inp, out in task.train + task.test:
        for g in (inp, out):
            if g is not None:
                a = aug.apply(g)
                h.update(np.array(a.shape, np.int16).tobytes())
                h.update(a.tobytes())
    return h.hexdigest()


def task_augs(task: ArcTask, n_aug: int, seed: int, max_tries: int = 4) -> list[ArcAug]:
    """n_aug distinct augmentations of a task, identity first. Draws whose augmented task equals
    an earlier one (a symmetric or colour-free task) are dropped (official: dedup by hash), so
    fewer than n_aug may come back."""
    rng = np.random.default_rng(seed)
    augs, seen = [IDENTITY], {task_fingerprint(task, IDENTITY)}
    tries = 0
    while len(augs) < n_aug and tries < max_tries * n_aug:
        tries += 1
        aug = random_aug(rng)
        fp = task_fingerprint(task, aug)
        if fp not in seen:
            seen.add(fp)
            augs.append(aug)
    return augs
