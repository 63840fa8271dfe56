"""The Python API: `trmlm.load(path or hub id)` -> a PuzzleSolver or a TextGenerator.

Thin: every piece is the one the `trm` commands use (puzzles.run.load_model and the task
modules' parsers, trmlm.puzzle.eval.trace_supervision, trmlm.lm.checkpoint.load_lm,
trmlm.lm.generate.generate, the checkpoint writers). It lives in the puzzle layer because a
solver needs the puzzle tasks; `trmlm/__init__.py` re-exports it lazily.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from trmlm import hub, modelcard
from trmlm.checkpoint import CONFIG, load_checkpoint, read_json, save_checkpoint
from trmlm.errors import TRMError
from trmlm.lm.checkpoint import LoadedLM, load_lm, save_lm
from trmlm.lm.generate import GenerationConfig, Piece, generate
from trmlm.puzzle.eval import trace_supervision
from trmlm.puzzle.model import TRMPuzzleModel
from trmlm.puzzle.train import run_config_dict
from trmlm.puzzles.arc.encode import decode as arc_decode
from trmlm.puzzles.maze.grid import side as maze_side, tokens_to_text
from trmlm.puzzles.run import PuzzleRunConfig, get_task, load_model, solved
from trmlm.puzzles.sudoku.grid import as_grid, from_tokens, grid_to_string, is_valid_solution
from trmlm.runtime import Runtime, resolve_runtime

__all__ = ["load", "PuzzleSolver", "SolveResult", "TextGenerator", "Piece"]


def load(name: str | Path, *, device: str = "auto", threads: int = 0,
         revision: str | None = None) -> PuzzleSolver | TextGenerator:
    """A checkpoint directory, or a Hugging Face Hub id `user/repo` (HF_HUB_OFFLINE honoured), ->
    a PuzzleSolver (a train-puzzle checkpoint) or a TextGenerator (a train-lm checkpoint).

    device: auto | cpu | cuda (auto = CUDA when present); threads > 0 sets torch's CPU threads.
    Every problem (missing, corrupt, offline and not cached) is a one-line TRMError."""
    path = hub.resolve(name, revision)
    if not (path / CONFIG).is_file():
        load_checkpoint(path)  # raises the one-line error saying what is missing
    # A puzzle run config is {task, model, train, data}; an LM config has no top-level `task`.
    if "task" in read_json(path / CONFIG, "checkpoint config"):
        model, run, meta = load_model(path)
        return PuzzleSolver(model, run, meta, resolve_runtime(device, "auto", threads), source=str(name))
    lm = load_lm(path)
    return TextGenerator(lm, resolve_runtime(device, "float32", threads), source=str(name))


class _Pretrained:
    """save_pretrained / push_to_hub shared by both kinds: write the checkpoint, upload the folder."""

    source: str

    def _save(self, directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """Write the checkpoint; returns (config, meta) as written."""
        raise NotImplementedError

    def save_pretrained(self, directory: str | Path) -> Path:
        """A checkpoint directory (model.safetensors, config.json, meta.json, README.md model card,
        and for a language model its tokenizer and generation_config.json) that `trmlm.load`,
        `trm solve` / `trm generate` read."""
        directory = Path(directory)
        self._save(directory)
        return directory

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload trmlm checkpoint") -> str:
        """save_pretrained into a temporary directory (its card names `repo_id`) and upload it to
        the Hub model repository `repo_id` (created if missing); returns the commit URL."""
        with tempfile.TemporaryDirectory(prefix="trmlm-push-") as tmp:
            config, meta = self._save(Path(tmp))
            modelcard.write(tmp, config, meta, self._numel(), location=repo_id)
            return hub.push_folder(tmp, repo_id, private=private, token=token, commit_message=commit_message)

    def _numel(self) -> int:
        return sum(t.numel() for t in self.model.state_dict().values())  # type: ignore[attr-defined]


# -- puzzles ------------------------------------------------------------------------------------

@dataclass
class SolveResult:
    """One solved puzzle: the answer after the last supervision step used, and every step's."""

    task: str
    grid: np.ndarray            # the answer: sudoku (9, 9) digits (0 = blank); maze (N, N) characters
                                # of "# SGo"; arc (H, W) colours ((0, 0) if no grid was predicted)
    text: str                   # the same in the task's text form (what `trm solve --json` prints)
    valid: bool                 # obeys the task's rules: sudoku full, consistent, givens kept; maze a
                                # valid shortest S-G path; arc a well-formed grid
    correct: bool | None        # equals the known answer (sudoku's unique solution, maze: = valid,
                                # arc: the task's test output when given); None when none is known
    steps: int                  # supervision steps whose answer this is
    halt_step: int | None       # first step whose halt logit is > 0 (None: the head never fired)
    halt_logits: list[float]    # (S,) per step (> 0 = halt)
    confidence: list[float]     # (S,) mean max-probability over cells per step
    trace: list[np.ndarray] = field(repr=False)  # (S,) the grid after every step
    seconds: float = 0.0
    rendered: str = field(default="", repr=False)  # what `trm solve` prints (no colour)

    def __str__(self) -> str:
        return self.rendered


class PuzzleSolver(_Pretrained):
    """A trained puzzle model with its task: `solve(puzzle)` -> SolveResult."""

    def __init__(self, model: TRMPuzzleModel, run: PuzzleRunConfig, meta: dict[str, Any], runtime: Runtime,
                 source: str = "") -> None:
        self.model, self.run, self.meta, self.runtime, self.source = model.to(runtime.device).eval(), run, meta, runtime, source
        self.task = run.task
        self.mod = get_task(run.task)

    def __repr__(self) -> str:
        m = self.run.model
        return (f"PuzzleSolver(task={self.task!r}, arch={m.arch!r}, params={self.model.num_parameters():,}, "
                f"N_sup={m.max_sup_steps}, device={self.runtime.device.type!r}, source={self.source!r})")

    def solve(self, puzzle: str | Sequence | dict | np.ndarray, steps: int | None = None,
              halt: bool = False) -> SolveResult:
        """Solve one puzzle: a sudoku string ('.' or 0 = blank) or (9, 9) / (81,) digits; maze text
        (N lines of '# SG') or a list of lines; an ARC grid (list of rows) or task (dict or JSON
        text: its first test input, scored against its output when the task gives one).

        steps: supervision steps to run (default N_sup). halt: answer at the first step the halt
        head fires (as ACT would stop), not after the last step run."""
        if steps is not None and steps < 1:
            raise TRMError("steps must be >= 1")
        text, answer = self._as_text(puzzle)
        tokens = self.mod.parse_input(text)
        if len(tokens) != self.model.cfg.seq_len:
            raise TRMError(f"the puzzle has {len(tokens)} cells but the model was trained on {self.model.cfg.seq_len}")
        t0 = time.perf_counter()
        inputs = torch.as_tensor(tokens[None], device=self.runtime.device)
        tr = trace_supervision(self.model, inputs, None, steps, self.runtime)
        seconds = time.perf_counter() - t0
        q = tr.q_halt[:, 0]
        fired = np.nonzero(q > 0)[0]
        halt_step = int(fired[0]) + 1 if len(fired) else None
        used = halt_step if halt and halt_step else len(tr.predictions)
        final = tr.predictions[used - 1, 0]
        reference = self.mod.reference_solution(tokens)
        return SolveResult(
            task=self.task, grid=self._grid(final), text=self.mod.to_text(final),
            valid=self._valid(tokens, final, reference), correct=self._correct(tokens, final, reference, answer),
            steps=used, halt_step=halt_step, halt_logits=[float(v) for v in q[:used]],
            confidence=[float(v) for v in tr.confidence[:used, 0]],
            trace=[self._grid(p) for p in tr.predictions[:used, 0]], seconds=seconds,
            rendered=self.mod.render(tokens, final, reference, color=False))

    def _as_text(self, puzzle: Any) -> tuple[str, Any]:
        """The puzzle as the text `trm solve` reads, and the ARC task's known test output (if any)."""
        if self.task == "arc":
            obj = puzzle
            if isinstance(puzzle, str):
                try:
                    obj = json.loads(puzzle)
                except json.JSONDecodeError:
                    return puzzle, None  # parse_input gives the one-line error
            if isinstance(obj, np.ndarray):
                obj = obj.tolist()
            answer = None
            if isinstance(obj, dict) and isinstance(obj.get("test"), list) and obj["test"] \
                    and isinstance(obj["test"][0], dict):
                answer = obj["test"][0].get("output")
            return (puzzle if isinstance(puzzle, str) else json.dumps(obj)), answer
        if isinstance(puzzle, str):
            return puzzle, None
        if self.task == "sudoku":
            return grid_to_string(as_grid(puzzle)), None
        if self.task == "maze" and isinstance(puzzle, (list, tuple)) and all(isinstance(r, str) for r in puzzle):
            return "\n".join(puzzle), None
        raise TRMError(f"a {self.task} puzzle is given as text" + (" or a list of lines" if self.task == "maze" else ""))

    def _grid(self, tokens: np.ndarray) -> np.ndarray:
        if self.task == "sudoku":
            return from_tokens(tokens).reshape(9, 9)
        if self.task == "maze":
            n = maze_side(len(tokens))
            return np.array(list(tokens_to_text(tokens))).reshape(n, n)
        grid = arc_decode(tokens)
        return np.zeros((0, 0), np.uint8) if grid is None else grid

    def _valid(self, tokens: np.ndarray, pred: np.ndarray, reference: np.ndarray | None) -> bool:
        if self.task == "sudoku":
            puzzle, answer = from_tokens(tokens), from_tokens(pred)
            return is_valid_solution(answer) and bool(((puzzle == 0) | (answer == puzzle)).all())
        if self.task == "maze":
            return reference is not None and bool(solved(self.mod, tokens[None], pred[None], reference[None])[0])
        return arc_decode(pred) is not None

    def _correct(self, tokens: np.ndarray, pred: np.ndarray, reference: np.ndarray | None,
                 answer: Any) -> bool | None:
        if self.task == "arc":
            grid = arc_decode(pred)
            return None if answer is None else bool(grid is not None and np.array_equal(grid, np.asarray(answer)))
        if reference is None:
            return None
        return bool(solved(self.mod, tokens[None], pred[None], reference[None])[0])

    def _save(self, directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        r = self.run
        config = run_config_dict(r.task, r.model, r.train, r.data)
        save_checkpoint(directory, self.model.state_dict(), config, self.meta)
        return config, self.meta


# -- language models ----------------------------------------------------------------------------

class TextGenerator(_Pretrained):
    """A trained per-token recursive LM (or a baseline) with its tokenizer: generate / stream."""

    def __init__(self, lm: LoadedLM, runtime: Runtime, source: str = "") -> None:
        self.lm, self.runtime, self.source = lm, runtime, source
        self.model = lm.model.to(runtime.device).eval()
        self.tokenizer, self.config, self.generation = lm.tokenizer, lm.cfg, lm.generation

    def __repr__(self) -> str:
        n = self.config.model
        return (f"TextGenerator(arch={self.config.arch!r}, params={self.model.num_parameters():,}, "
                f"context={self.config.context}, N_sup={n.max_sup_steps}, device={self.runtime.device.type!r}, "
                f"source={self.source!r})")

    def _config(self, max_new_tokens, temperature, top_k, top_p, stop, seed, halt_threshold,
                repetition_penalty, min_steps, max_steps, no_halting, cache) -> GenerationConfig:
        """The checkpoint's generation_config.json with the given options over it (as `trm generate`)."""
        given = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                     seed=seed, halt_threshold=halt_threshold, repetition_penalty=repetition_penalty,
                     min_steps=min_steps, max_steps=max_steps)
        stops = self.generation.stop if stop is None else [stop] if isinstance(stop, str) else list(stop)
        return dataclasses.replace(self.generation, **{k: v for k, v in given.items() if v is not None},
                                   stop=stops, num_samples=1, no_halting=no_halting,
                                   cache=cache or self.generation.cache)

    def stream(self, prompt: str, max_new_tokens: int | None = None, temperature: float | None = None,
               top_k: int | None = None, top_p: float | None = None, stop: str | Sequence[str] | None = None,
               seed: int | None = None, halt_threshold: float | None = None, *,
               repetition_penalty: float | None = None, min_steps: int | None = None,
               max_steps: int | None = None, no_halting: bool = False,
               cache: str | None = None) -> Iterator[Piece]:
        """Yield the continuation as it becomes final: Piece(text, steps), `steps[i]` = the
        supervision steps spent on the token behind character text[i]. Options left None take the
        checkpoint's generation config (`cache`: its own decoder, "per-step" for a cache_levels
        model, else "commit-last"); stop strings are cut, never yielded."""
        gcfg = self._config(max_new_tokens, temperature, top_k, top_p, stop, seed, halt_threshold,
                            repetition_penalty, min_steps, max_steps, no_halting, cache)
        for event in generate(self.model, self.tokenizer, prompt, gcfg):
            if isinstance(event, Piece):
                yield event

    def generate(self, prompt: str, max_new_tokens: int | None = None, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, stop: str | Sequence[str] | None = None,
                 seed: int | None = None, halt_threshold: float | None = None, **options: Any) -> str:
        """The continuation of `prompt` (without the prompt); options as in `stream`."""
        return "".join(p.text for p in self.stream(prompt, max_new_tokens, temperature, top_k, top_p, stop,
                                                   seed, halt_threshold, **options))

    def _save(self, directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        save_lm(directory, self.model.state_dict(), self.config, self.tokenizer, self.lm.meta,
                generation=self.generation)
        return read_json(directory / CONFIG, "checkpoint config"), self.lm.meta

