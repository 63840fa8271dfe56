"""Puzzle runs: task registry, preset/YAML/--set config resolution, training and loading models."""

from __future__ import annotations

import types
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from trmlm.puzzles.arc import task as arc_task
from trmlm.puzzles.maze import task as maze_task
from trmlm.puzzles.sudoku import task as sudoku_task
from trmlm.checkpoint import load_checkpoint, load_weights_into, refuse_wrong_kind
from trmlm.config import TRMConfig, TrainConfig
from trmlm.configtools import apply_overrides, from_dict, load_yaml, merge
from trmlm.puzzle.data import PuzzleData
from trmlm.errors import TRMError
from trmlm.puzzle.registry import build_puzzle_model
from trmlm.puzzle.model import TRMPuzzleModel

# name -> module with NAME, VOCAB, SEQ, <Task>DataConfig, build_data, parse_input, render, ...
# Optional hooks: seq_len(data_cfg) when SEQ depends on the data (maze size), score(...) for a
# task-specific "solved" test (maze), evaluate_model(...) for a task's own protocol (ARC voting).
TASKS: dict[str, types.ModuleType] = {sudoku_task.NAME: sudoku_task, maze_task.NAME: maze_task,
                                      arc_task.NAME: arc_task}
DATA_CONFIGS = {sudoku_task.NAME: sudoku_task.SudokuDataConfig,
                maze_task.NAME: maze_task.MazeDataConfig, arc_task.NAME: arc_task.ArcDataConfig}
DEFAULT_PRESETS = {sudoku_task.NAME: "sudoku-cpu", maze_task.NAME: "maze-cpu",
                   arc_task.NAME: "arc-cpu"}


@dataclass
class PuzzleRunConfig:
    task: str
    model: TRMConfig
    train: TrainConfig
    data: Any  # the task's data config dataclass


def get_task(name: str) -> types.ModuleType:
    if not isinstance(name, str) or name not in TASKS:
        raise TRMError(f"unknown puzzle task '{name}' (available: {', '.join(sorted(TASKS))})")
    return TASKS[name]


def preset_path(name: str, configs_dir: Path) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    candidate = configs_dir / f"{name}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in configs_dir.glob("*.yaml"))
        raise TRMError(f"unknown preset '{name}' (available: {', '.join(known)})")
    return candidate


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """A config section as a (copied) dict; left out or empty = {}; anything else is an error."""
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TRMError(f"{name}: expected a mapping, got {value!r}")
    return dict(value)


def build_run_config(raw: dict[str, Any], task: str | None = None) -> PuzzleRunConfig:
    """Strictly validate a nested dict {task, model, train, data} into typed configs."""
    raw = dict(raw)
    name = raw.pop("task", task)
    if task is not None and name != task:
        raise TRMError(f"config is for task '{name}', not '{task}'")
    mod = get_task(name)
    unknown = sorted(set(raw) - {"model", "train", "data"})
    if unknown:
        raise TRMError(f"unknown config key '{unknown[0]}' (known: task, model, train, data)")
    model_raw = _section(raw, "model")
    data = from_dict(DATA_CONFIGS[name], _section(raw, "data"), "data")
    seq = mod.seq_len(data) if hasattr(mod, "seq_len") else mod.SEQ
    for key, value in (("vocab_size", mod.VOCAB), ("seq_len", seq)):
        if model_raw.setdefault(key, value) != value:
            raise TRMError(f"model.{key} is fixed to {value} by task '{name}'")
    return PuzzleRunConfig(
        task=name,
        model=from_dict(TRMConfig, model_raw, "model"),
        train=from_dict(TrainConfig, _section(raw, "train"), "train"),
        data=data,
    )


def fit_model_to_data(run: PuzzleRunConfig, data: PuzzleData) -> PuzzleRunConfig:
    """Check that the puzzle-embedding table has a row for every puzzle id the data uses."""
    if data.num_puzzle_ids > run.model.num_puzzle_ids:
        raise TRMError(f"model.num_puzzle_ids is {run.model.num_puzzle_ids} but the data uses "
                       f"{data.num_puzzle_ids} puzzle ids")
    return run


def resolve_config(task: str, configs_dir: Path, preset: str | None = None,
                   config_file: str | None = None, overrides: list[str] | None = None
                   ) -> PuzzleRunConfig:
    """preset (default: the task's CPU preset) <- --config FILE <- --set key=value."""
    get_task(task)
    raw = load_yaml(preset_path(preset or DEFAULT_PRESETS[task], configs_dir))
    if config_file:
        raw = merge(raw, load_yaml(config_file))
    raw = apply_overrides(raw, overrides or [])
    run = build_run_config(raw, task)
    mod = TASKS[task]
    if hasattr(mod, "num_puzzle_ids"):  # ARC: one embedding row per (task, augmentation)
        run.model = replace(run.model, num_puzzle_ids=mod.num_puzzle_ids(run.data))
    return run


def solved(mod: types.ModuleType, inputs: np.ndarray, preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(B,) bool: the task's own test (maze: valid and shortest), else exact match on labelled cells."""
    if hasattr(mod, "score"):
        return mod.score(inputs, preds, labels)
    return ((preds == labels) | (labels < 0)).all(-1)


def load_model(checkpoint: str | Path, task: str | None = None) -> tuple[TRMPuzzleModel, PuzzleRunConfig, dict]:
    """A trained puzzle model from a checkpoint directory (one-line errors on any problem)."""
    ckpt = load_checkpoint(checkpoint)
    refuse_wrong_kind(ckpt, "puzzle")
    try:
        run = build_run_config(ckpt.config)
    except TRMError as exc:
        raise TRMError(f"checkpoint {ckpt.path} has an invalid config: {exc}") from None
    if task is not None and run.task != task:
        raise TRMError(f"checkpoint {ckpt.path} was trained on '{run.task}', not '{task}'")
    model = build_puzzle_model(run.model)
    load_weights_into(model, ckpt.weights, ckpt.path)
    model.eval()
    return model, run, ckpt.meta
