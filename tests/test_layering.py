"""The three layers import one way: cli -> puzzles -> trmlm (the library imports neither)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The folders are installed as trmlm.cli and trmlm.puzzles; the library is everything else in trmlm/.
FORBIDDEN = {"trmlm": ("trmlm.cli", "trmlm.puzzles", "cli", "puzzles"), "puzzles": ("trmlm.cli", "cli")}
ENTRY_POINTS = {ROOT / "trmlm" / "__main__.py"}  # `python -m trmlm` runs the CLI by design
# The package root re-exports the Python API (trmlm.load, ...), which lives in the puzzle layer
# because a solver needs the tasks; it imports exactly that module, lazily (module __getattr__).
REEXPORTS = {ROOT / "trmlm" / "__init__.py": {"trmlm.puzzles.api"}}


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def violations(layer: str, root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted((root / layer).rglob("*.py")):
        if path in ENTRY_POINTS:
            continue
        for name in imported_modules(path):
            if name in REEXPORTS.get(path, ()):
                continue
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(root)} imports {name}")
    return bad


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_run_one_way(layer):
    assert violations(layer) == []


def test_the_check_sees_a_violation(tmp_path):
    """The scanner itself finds a forbidden import (so the test above can fail)."""
    (tmp_path / "trmlm").mkdir()
    (tmp_path / "trmlm" / "bad.py").write_text("from trmlm.puzzles.sudoku import grid\n", encoding="utf-8")
    assert violations("trmlm", tmp_path) == ["trmlm/bad.py imports trmlm.puzzles.sudoku"]


def test_the_reexport_exception_is_narrow(tmp_path):
    """The package root may import the API module, and nothing else from the upper layers."""
    (tmp_path / "trmlm").mkdir()
    (tmp_path / "trmlm" / "__init__.py").write_text(
        "def __getattr__(name):\n    import trmlm.puzzles.api as api\n    import trmlm.puzzles.run\n", encoding="utf-8")
    assert imported_modules(tmp_path / "trmlm" / "__init__.py") == ["trmlm.puzzles.api", "trmlm.puzzles.run"]
    assert violations("trmlm", tmp_path) == ["trmlm/__init__.py imports trmlm.puzzles.api",
                                            "trmlm/__init__.py imports trmlm.puzzles.run"]  # tmp root: no exception
    assert violations("trmlm") == []  # the real root: the API import is allowed, and it is there
    assert "trmlm.puzzles.api" in imported_modules(ROOT / "trmlm" / "__init__.py")
