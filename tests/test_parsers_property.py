"""Property tests (hypothesis): whatever text, bytes or JSON reaches the Sudoku / maze / ARC parsers,
they either parse it or raise TRMError with a one-line message (the CLI's `error:` line), never
anything else."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from trmlm.cli.main import app
from trmlm.errors import TRMError
from trmlm.puzzles.arc import task as arc
from trmlm.puzzles.arc.load import load_tasks
from trmlm.puzzles.maze import task as maze
from trmlm.puzzles.sudoku import task as sudoku
from trmlm.puzzles.sudoku.data import load_sudoku_csv
from trmlm.puzzles.sudoku.grid import parse_puzzle
from trmlm.puzzles.sudoku.solver import solve

# Fast and reproducible in CI: a fixed example sequence, no example database written to disk, no
# per-example deadline (a loaded CPU must not turn into a failure).
FAST = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
TASKS = {"sudoku": sudoku, "maze": maze, "arc": arc}
EASY = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
MAZE6 = "#S  ##\n# # # \n#   G#\n## ## \n      \n######\n"
WORK = Path(tempfile.mkdtemp(prefix="trm-parsers-"))  # one scratch file per parser, rewritten


def parsed_or_refused(fn, *args):
    """fn(*args), or None when it refuses with a one-line TRMError; any other exception fails."""
    try:
        return fn(*args)
    except TRMError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        return None


def check_tokens(name: str, tokens) -> None:
    """What a parser returns is a flat int array of the task's vocabulary."""
    if tokens is None:
        return
    mod = TASKS[name]
    assert isinstance(tokens, np.ndarray) and tokens.ndim == 1 and np.issubdtype(tokens.dtype, np.integer)
    assert tokens.min() >= 0 and tokens.max() < mod.VOCAB
    if name != "maze":  # a maze is any square size
        assert tokens.shape == (mod.SEQ,)


# -- the CLI's solve argument: text of any kind, for each task ------------------------------------

@FAST
@given(st.sampled_from(sorted(TASKS)), st.text(max_size=300))
def test_any_text(name, text):
    check_tokens(name, parsed_or_refused(TASKS[name].parse_input, text))


def _mutated(base: str, alphabet: str):
    """`base` with a few characters replaced, inserted or deleted: deep into the parser."""
    edits = st.lists(st.tuples(st.integers(0, len(base)), st.sampled_from(["set", "ins", "del"]),
                               st.sampled_from(alphabet)), max_size=6)

    def apply(ops):
        s = list(base)
        for pos, op, ch in ops:
            pos = min(pos, len(s))
            if op == "ins":
                s.insert(pos, ch)
            elif s and pos < len(s):
                if op == "set":
                    s[pos] = ch
                else:
                    del s[pos]
        return "".join(s)

    return edits.map(apply)


@FAST
@given(st.one_of(_mutated(EASY, "0123456789.x \n|+-"), st.text("0123456789.", min_size=75, max_size=90)))
def test_sudoku_like_text(text):
    check_tokens("sudoku", parsed_or_refused(sudoku.parse_input, text))


@FAST
@given(st.one_of(_mutated(MAZE6, "# SGo\n\rx"), st.text("# SGo\n", max_size=120)))
def test_maze_like_text(text):
    check_tokens("maze", parsed_or_refused(maze.parse_input, text))


# -- ARC: JSON of any shape, grids of any shape, task files, Kaggle challenge/solution pairs ---------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 12) | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["train", "test", "input", "output", "x"]) | st.text(max_size=3), inner, max_size=4),
    max_leaves=25)
CELL = st.integers(-1, 11) | st.booleans() | st.just(3.0) | st.just("1")
GRID = st.lists(st.lists(CELL, min_size=0, max_size=32), min_size=0, max_size=32) | st.lists(
    st.lists(st.integers(0, 9), min_size=1, max_size=3), min_size=1, max_size=3)  # valid-ish, small
PAIR = st.fixed_dictionaries({"input": GRID}, optional={"output": GRID | JSON})
TASK = st.fixed_dictionaries({"train": st.lists(PAIR, max_size=2), "test": st.lists(PAIR, max_size=2)}) | JSON


@FAST
@given(st.one_of(JSON, GRID, TASK))
def test_arc_input_json(obj):
    check_tokens("arc", parsed_or_refused(arc.parse_input, json.dumps(obj)))


@FAST
@given(st.one_of(TASK, st.dictionaries(st.text(max_size=5), TASK, max_size=3), JSON))
@example({"\n": {"train": [], "test": [{"input": [[False]]}]}})  # found: an id with a newline broke the line
def test_arc_task_file(obj):
    path = WORK / "tasks.json"
    path.write_text(json.dumps(obj))
    tasks = parsed_or_refused(load_tasks, str(path))
    assert tasks is None or all(t.train for t in tasks.values())


@FAST
@given(st.dictionaries(st.sampled_from(["a", "b"]), TASK, max_size=2),
       st.one_of(JSON, st.dictionaries(st.sampled_from(["a", "b"]), st.lists(GRID | JSON, max_size=2), max_size=2)))
@example({"a": None}, True)  # found: a solutions file that is not an object crashed (AttributeError)
@example({"a": {"train": [{"input": [[1]], "output": [[1]]}], "test": [{"input": [[1]]}]}}, {"a": 3})
def test_arc_kaggle_challenges_with_any_solutions(challenges, solutions):
    (WORK / "x_challenges.json").write_text(json.dumps(challenges))
    (WORK / "x_solutions.json").write_text(json.dumps(solutions))
    parsed_or_refused(load_tasks, str(WORK / "x_challenges.json"))


@FAST
@given(st.binary(max_size=200))
def test_arc_task_file_of_any_bytes(raw):
    path = WORK / "raw.json"
    path.write_bytes(raw)
    parsed_or_refused(load_tasks, str(path))


# -- Sudoku CSV files ------------------------------------------------------------------------------

EASY_SOLUTION = "".join(map(str, solve(parse_puzzle(EASY)).solution))
ROW = st.tuples(st.text(max_size=3),
                _mutated(EASY, "0123456789.x") | st.just(EASY),
                _mutated(EASY_SOLUTION, "0123456789.") | st.just(EASY_SOLUTION) | st.text("0123456789", min_size=81, max_size=81),
                st.integers() | st.text(max_size=4) | st.just(" 7 "))


@FAST
@given(st.one_of(st.binary(max_size=300),
                 st.lists(ROW, max_size=3).map(lambda rows: ("source,question,answer,rating\n" + "".join(
                     f"{s!r},{q},{a},{r}\n" for s, q, a, r in rows)).encode())))
@example(f",question,answer,rating\n,{EASY},{EASY_SOLUTION},2147483648".encode())  # found: int32 overflow
def test_sudoku_csv_of_any_bytes(raw):
    path = WORK / "puzzles.csv"
    path.write_bytes(raw)
    sset = parsed_or_refused(load_sudoku_csv, path)
    assert sset is None or len(sset.questions) == len(sset.answers) == len(sset.ratings)


# -- the CLI itself: any bytes on stdin are parsed or refused with exit 2 and one `error:` line -------

runner = CliRunner()


@settings(FAST, max_examples=60)
@given(st.sampled_from(sorted(TASKS)), st.binary(max_size=120) | st.text(max_size=120).map(str.encode))
def test_solve_stdin_of_any_bytes(name, raw):
    result = runner.invoke(app, ["solve", name, "-", "--checkpoint", str(WORK / "no-such-checkpoint")],
                           input=raw)
    assert isinstance(result.exception, SystemExit), result.exception  # not an escaped exception
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def test_the_properties_can_fail():
    """The harness fails on a parser that raises anything but TRMError, or a multi-line message."""
    def crashing(text):
        raise KeyError(text)

    def two_lines(text):
        raise TRMError("bad\ninput")

    with pytest.raises(KeyError):
        parsed_or_refused(crashing, "x")
    with pytest.raises(AssertionError):
        parsed_or_refused(two_lines, "x")
