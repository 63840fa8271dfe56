"""Built-in reasoning-text tasks for the LM (`trm train-lm --task NAME`): a registry of generators.

Names: `add-D` / `mul-D` (D digits per operand), `arith` (the ladder below, mixed), `hops-K`
(follow a random cycle of 8 letters K hops) and `hops` (K = 1..6 mixed), each with a `-cot`
variant that writes a scratchpad first. Tasks that need the puzzle layer (Sudoku as text)
register themselves from trmlm.puzzles (`register_task`), which keeps trmlm free of puzzle imports.
"""

from __future__ import annotations

import re
from typing import Callable

from trmlm.errors import TRMError
from trmlm.lm.tasks.arithmetic import Addition, Mixture, Multiplication
from trmlm.lm.tasks.hops import Hops
from trmlm.lm.tasks.base import CATEGORIES, EASY, END, HARD, Example, TextTask, pack_rows

# The arithmetic ladder: easy to hard for a 2-layer model without a scratchpad. Reversed
# addition is local (each digit needs its column and one carry); multiplication digits need
# sums of several digit products and multi-valued carries.
LADDER = ("add-2", "add-4", "add-6", "mul-1", "mul-2", "mul-3")
# The pointer-chasing ladder: one lookup per hop, the answer one letter whatever K.
HOPS_LADDER = tuple(f"hops-{k}" for k in range(1, 7))

_EXTRA: dict[str, Callable[[], TextTask]] = {}


def register_task(name: str, factory: Callable[[], TextTask]) -> None:
    """Add a task built outside trmlm (e.g. Sudoku as text, from trmlm.puzzles)."""
    _EXTRA[name] = factory


def _arith(name: str) -> TextTask | None:
    m = re.fullmatch(r"(add|mul)-(\d+)(-cot)?", name)
    if m:
        digits = int(m.group(2))
        limit = 12 if m.group(1) == "add" else 6
        if not 1 <= digits <= limit:
            raise TRMError(f"task {name!r}: {m.group(1)} takes 1 to {limit} digits per operand")
        cls = Addition if m.group(1) == "add" else Multiplication
        return cls(digits, cot=bool(m.group(3)))
    return _ladder(name, "arith", LADDER, _arith)


def _ladder(name: str, family: str, ladder: tuple[str, ...], rung: Callable[[str], TextTask | None]) -> TextTask | None:
    """`family` (or `family-cot`): the mixture of the ladder's rungs (their -cot forms)."""
    if name not in (family, family + "-cot"):
        return None
    cot = name[len(family):]
    return Mixture(name, [rung(r + cot) for r in ladder])


def _hops(name: str) -> TextTask | None:
    m = re.fullmatch(r"hops-(\d+)(-cot)?", name)
    if m:
        try:
            return Hops(int(m.group(1)), cot=bool(m.group(2)))
        except ValueError as e:
            raise TRMError(f"task {name!r}: {e}") from None
    return _ladder(name, "hops", HOPS_LADDER, _hops)


def get_task(name: str) -> TextTask:
    """The task called `name`; a one-line TRMError naming the known ones otherwise."""
    task = _arith(name) or _hops(name)
    if task is not None:
        return task
    if name in _EXTRA:
        return _EXTRA[name]()
    known = ", ".join(["add-D", "mul-D", "arith", "hops-K", "hops", "(each also -cot)", *sorted(_EXTRA)])
    raise TRMError(f"unknown task {name!r} (known: {known})")


def rungs(task: TextTask) -> list[TextTask]:
    """The task's rungs: a mixture's members, else the task itself."""
    return list(task.tasks) if isinstance(task, Mixture) else [task]


__all__ = ["CATEGORIES", "EASY", "END", "HARD", "HOPS_LADDER", "LADDER", "Example", "TextTask", "get_task",
           "pack_rows", "register_task", "rungs"]
