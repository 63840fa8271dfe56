"""ARC voting evaluator: crop at EOS, invert the augmentation, vote, rank, pass@k, submission.json."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from trmlm.puzzles.arc.augment import ArcAug
from trmlm.puzzles.arc.encode import decode

Key = tuple[str, int]  # (task id, test index)


@dataclass
class Candidate:
    grid: np.ndarray        # (H, W) colours, in the original (un-augmented) frame
    votes: int              # augmented copies that predicted it
    confidence: float       # mean halting confidence sigmoid(q_halt) of those copies


def vote(keys: Sequence[Key], augs: Sequence[ArcAug], tokens: np.ndarray,
         q_halt: np.ndarray) -> dict[Key, list[Candidate]]:
    """Ranked candidates per test output: by votes, then mean halting confidence (official
    evaluators/arc.py). Predictions that do not decode to a grid cast no vote."""
    tally: dict[Key, dict[bytes, list]] = defaultdict(dict)
    conf = 1.0 / (1.0 + np.exp(-np.asarray(q_halt, np.float64)))
    for key, aug, tok, c in zip(keys, augs, tokens, conf):
        grid = decode(tok)
        if grid is None:
            continue
        grid = aug.invert(grid)
        h = np.array(grid.shape, np.int16).tobytes() + grid.tobytes()
        entry = tally[key].setdefault(h, [grid, 0, 0.0])
        entry[1] += 1
        entry[2] += float(c)
    ranked = {}
    for key, entries in tally.items():
        cands = [Candidate(g, n, s / n) for g, n, s in entries.values()]
        ranked[key] = sorted(cands, key=lambda x: (-x.votes, -x.confidence))
    return ranked


def pass_at_k(ranked: dict[Key, list[Candidate]], truths: dict[Key, np.ndarray],
              ks: Sequence[int] = (1, 2)) -> dict[str, float]:
    """pass@k per test output (truth among the top k), averaged per task, then over tasks (the
    official ARC scoring for k=2). Test outputs without any candidate score 0."""
    per_task: dict[str, list[list[float]]] = defaultdict(list)
    for key, truth in truths.items():
        cands = ranked.get(key, [])
        hits = [float(any(np.array_equal(c.grid, truth) for c in cands[:k])) for k in ks]
        per_task[key[0]].append(hits)
    if not per_task:
        return {f"pass@{k}": 0.0 for k in ks} | {"n_tasks": 0}
    task_means = np.array([np.mean(v, axis=0) for v in per_task.values()])  # (tasks, len(ks))
    out = {f"pass@{k}": float(task_means[:, i].mean()) for i, k in enumerate(ks)}
    out["n_tasks"] = len(per_task)
    out["n_test_outputs"] = len(truths)
    return out


def submission(ranked: dict[Key, list[Candidate]], n_tests: dict[str, int]) -> dict:
    """The official two-attempt format: {task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}
    with one dict per test input; missing attempts are [[0]]."""
    sub = {}
    for tid in sorted(n_tests):
        entries = []
        for j in range(n_tests[tid]):
            cands = ranked.get((tid, j), [])
            attempts = [c.grid.tolist() for c in cands[:2]]
            attempts += [[[0]]] * (2 - len(attempts))
            entries.append({"attempt_1": attempts[0], "attempt_2": attempts[1]})
        sub[tid] = entries
    return sub


def write_submission(path: str | Path, sub: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sub))
    return path
