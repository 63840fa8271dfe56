"""Shared CLI plumbing: one-line errors with exit code 2, consoles, preset lookup."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, TypeVar

import typer
from rich.console import Console

from trmlm.errors import TRMError

F = TypeVar("F", bound=Callable)

out = Console(highlight=False)              # results (stdout)
err = Console(stderr=True, highlight=False)  # progress, stats, errors (stderr)


def fail(message: str) -> None:
    """Print `error: message` on one line to stderr and exit 2."""
    first = str(message).strip().splitlines()[0] if str(message).strip() else "unknown error"
    print(f"error: {first}", file=sys.stderr)
    raise typer.Exit(code=2)


def user_errors(fn: F) -> F:
    """Turn TRMError (bad input) into a one-line message and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TRMError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def configs_dir() -> Path:
    """configs/ beside the packages (repo checkout or editable install)."""
    return Path(__file__).resolve().parents[1] / "configs"
