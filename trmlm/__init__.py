"""trmlm: Tiny Recursive Models for puzzles and autoregressive language modelling.

`trmlm.load(path or hub id)` returns a PuzzleSolver or a TextGenerator (docs/api.md). The API
lives in the puzzle layer (trmlm.puzzles.api: a solver needs the puzzle tasks) and is imported
on first use, so `import trmlm` stays light (no torch).
"""

__version__ = "0.1.0"

_API = ("load", "PuzzleSolver", "TextGenerator", "SolveResult", "Piece")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        # The library's one upward import (tests/test_layering.py allows exactly this module here).
        import trmlm.puzzles.api as api

        return getattr(api, name)
    raise AttributeError(f"module 'trmlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
