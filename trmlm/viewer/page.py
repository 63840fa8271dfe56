"""The viewer page: one self-contained HTML file (inline CSS and JS, the trace as inline JSON).

Two kinds of document, both plain JSON (`trm view TRACE.json` renders a saved one):
- "puzzle": per puzzle the input, the target (if known) and the grid after every supervision
  step with its halt logit; grids are rows x cols of short cell labels plus an optional colour
  per label (the task layer decides the labels: digits, maze characters, ARC colours);
- "text": per sample every generated token with its supervision steps and, per step, the top-5
  next-token predictions and the halt probability (trmlm/viewer/record.py).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from trmlm.checkpoint import atomic_write_bytes
from trmlm.errors import TRMError

TEMPLATE = "template.html"
DATA_MARK = "/*TRM_DATA*/null"
TITLE_MARK = "<!--TRM_TITLE-->"
KINDS = ("puzzle", "text")


def grid(rows: int, cols: int, cells: Sequence[str]) -> dict[str, Any]:
    """A grid of rows x cols cell labels (row-major)."""
    cells = [str(c) for c in cells]
    if len(cells) != rows * cols:
        raise ValueError(f"{len(cells)} cells for a {rows}x{cols} grid")
    return {"rows": rows, "cols": cols, "cells": cells}


def halt_probability(q: float) -> float:
    """sigmoid of a halt logit (> 0 logit = probability > 0.5 = the head says halt)."""
    return 1.0 / (1.0 + math.exp(-q)) if q >= 0 else math.exp(q) / (1.0 + math.exp(q))


def puzzle_entry(name: str, input_grid: dict, steps: list[dict], q_halt: Sequence[float],
                 target: dict | None = None, givens: Sequence[bool] | None = None,
                 correct: Sequence[bool] | None = None) -> dict[str, Any]:
    """One puzzle of a "puzzle" document: `steps` are the predicted grids after each supervision
    step, q_halt their halt logits, correct the task's own verdict per step (when known)."""
    if len(steps) != len(q_halt) or (correct is not None and len(correct) != len(steps)):
        raise ValueError("one grid, one halt logit and one verdict per step")
    fired = [i + 1 for i, q in enumerate(q_halt) if q > 0]
    return {
        "name": name, "input": input_grid, "target": target,
        "givens": list(map(bool, givens)) if givens is not None else None,
        "halt_step": fired[0] if fired else None,
        "steps": [{**g, "q_halt": round(float(q), 4), "halt_prob": round(halt_probability(float(q)), 5),
                   "correct": None if correct is None else bool(correct[i])}
                  for i, (g, q) in enumerate(zip(steps, q_halt))],
    }


def puzzle_document(task: str, puzzles: list[dict], title: str = "", palette: dict[str, str] | None = None,
                    note: str = "") -> dict[str, Any]:
    return {"kind": "puzzle", "task": task, "title": title or f"trm {task}", "note": note,
            "palette": palette or {}, "puzzles": puzzles}


def check_document(data: Any, where: str = "trace") -> dict[str, Any]:
    """The minimal shape the page needs; one-line TRMError otherwise."""
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        raise TRMError(f"{where}: not a viewer trace (needs \"kind\": \"puzzle\" or \"text\")")
    if data["kind"] == "puzzle":
        puzzles = data.get("puzzles")
        if not isinstance(puzzles, list) or not puzzles:
            raise TRMError(f"{where}: a puzzle trace needs a non-empty \"puzzles\" list")
        for i, p in enumerate(puzzles):
            steps = p.get("steps") if isinstance(p, dict) else None
            if not isinstance(steps, list) or not steps:
                raise TRMError(f"{where}: puzzle {i} has no \"steps\"")
            for g in [p.get("input"), *steps]:
                if not (isinstance(g, dict) and isinstance(g.get("cells"), list)
                        and isinstance(g.get("rows"), int) and isinstance(g.get("cols"), int)
                        and len(g["cells"]) == g["rows"] * g["cols"]):
                    raise TRMError(f"{where}: puzzle {i} has a grid without rows x cols cells")
    else:
        samples = data.get("samples")
        if not isinstance(samples, list) or not samples or not all(
                isinstance(s, dict) and isinstance(s.get("tokens"), list) for s in samples):
            raise TRMError(f"{where}: a text trace needs \"samples\", each with a \"tokens\" list")
    return data


def render_html(data: dict[str, Any]) -> str:
    """The page for a document: the template with the JSON inlined (no network, no server)."""
    check_document(data)
    template = resources.files("trmlm.viewer").joinpath(TEMPLATE).read_text(encoding="utf-8")
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # Inside <script>, "</" could close the element and "<!--" open a comment: escape "<".
    payload = payload.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    title = str(data.get("title", "trm view")).replace("&", "&amp;").replace("<", "&lt;")
    return template.replace(DATA_MARK, payload, 1).replace(TITLE_MARK, title, 1)


def write_html(path: str | Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    if path.is_dir():
        raise TRMError(f"--html {path} is a directory; give a file name such as {path / 'trace.html'}")
    atomic_write_bytes(path, render_html(data).encode("utf-8"))
    return path


def write_view(path: str | Path, data: dict[str, Any]) -> Path:
    """--html FILE: the page, or (FILE.json) the document itself for a later `trm view`."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        if path.is_dir():
            raise TRMError(f"--html {path} is a directory")
        atomic_write_bytes(path, (json.dumps(check_document(data), ensure_ascii=False) + "\n").encode("utf-8"))
        return path
    return write_html(path, data)


def read_document(path: str | Path) -> dict[str, Any]:
    """A saved trace: a .json document, or the JSON inside an HTML page this module wrote."""
    path = Path(path)
    if not path.is_file():
        raise TRMError(f"trace file not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() in (".html", ".htm"):
        text = extract_json(text, str(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TRMError(f"{path}: invalid JSON (line {exc.lineno}, column {exc.colno})") from None
    return check_document(data, str(path))


def extract_json(html: str, where: str = "page") -> str:
    """The inline JSON of a viewer page."""
    start_tag = '<script id="trm-data" type="application/json">'
    start = html.find(start_tag)
    end = html.find("</script>", start + 1)
    if start < 0 or end < 0:
        raise TRMError(f"{where}: not a trm viewer page")
    return html[start + len(start_tag):end]
