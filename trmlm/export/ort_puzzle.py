"""Supervision steps of an exported puzzle model with onnxruntime and numpy only (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trmlm.errors import TRMError
from trmlm.export.manifest import read_manifest
from trmlm.export.ort_lm import make_session


@dataclass
class PuzzleRun:
    predictions: np.ndarray   # (S, B, L) argmax tokens after each supervision step
    halt_logit: np.ndarray    # (S, B) > 0 = the halt head says stop
    logits: np.ndarray        # (B, L, V) after the last step


class OnnxPuzzle:
    def __init__(self, export_dir: str | Path, threads: int = 1) -> None:
        self.dir = Path(export_dir)
        self.manifest = read_manifest(self.dir, "puzzle")
        self.sessions = {name: make_session(self.dir / f, threads)
                         for name, f in self.manifest["graphs"].items()}
        self.shapes = self.manifest["shapes"]

    def _run(self, graph: str, **inputs: np.ndarray) -> list[np.ndarray]:
        session = self.sessions[graph]
        names = {i.name for i in session.get_inputs()}  # an unused input (puzzle ids) is dropped
        return session.run(None, {k: v for k, v in inputs.items() if k in names})

    def solve(self, tokens: np.ndarray, puzzle_ids: np.ndarray | None = None, steps: int | None = None,
              halt: bool = False) -> PuzzleRun:
        """`steps` (default N_sup) supervision steps from the initial state for tokens (B, L);
        with halt=True the run stops once every puzzle's halt logit is > 0."""
        tokens = np.asarray(tokens, np.int64)
        if tokens.ndim != 2 or tokens.shape[1] != self.shapes["seq_len"]:
            raise TRMError(f"tokens must be (B, {self.shapes['seq_len']}), got {tokens.shape}")
        ids = np.zeros(len(tokens), np.int64) if puzzle_ids is None else np.asarray(puzzle_ids, np.int64)
        steps = steps or self.shapes["max_sup_steps"]
        y, z = self._run("init", tokens=tokens)
        preds, qs = [], []
        for _ in range(steps):
            y, z, logits, q = self._run("step", y=y, z=z, tokens=tokens, puzzle_ids=ids)
            preds.append(logits.argmax(-1))
            qs.append(q)
            if halt and bool((q > 0).all()):
                break
        return PuzzleRun(np.stack(preds), np.stack(qs), logits)
