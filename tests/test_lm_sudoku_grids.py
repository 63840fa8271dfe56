"""Sudoku as text on solved grids from elsewhere (benchmarks/lm_sudoku_grids.py): puzzles dug
out of given grids, the lines they make, and the script end to end on a tiny checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trmlm.cli.main import app
from trmlm.errors import TRMError
from trmlm.puzzles.sudoku.generator import dig_puzzle, generate_puzzle
from trmlm.puzzles.sudoku.solver import solve_cells
from trmlm.puzzles.sudoku.text_task import SudokuText

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "lm_sudoku_grids.py"
sys.path.insert(0, str(SCRIPT.parent))   # the script's functions are imported by the tests below


def _grid(seed: int) -> np.ndarray:
    return generate_puzzle(np.random.default_rng(seed), n_blanks=10)[1]


def test_dig_puzzle_keeps_the_grid_and_a_unique_solution():
    grid = _grid(3)
    for blanks in (10, 30, 45):
        puzzle = dig_puzzle(grid, np.random.default_rng([1, blanks]), n_blanks=blanks)
        assert int((puzzle == 0).sum()) == blanks
        assert ((puzzle == grid) | (puzzle == 0)).all()
        solution, count, _, _ = solve_cells([int(v) for v in puzzle], limit=2)
        assert count == 1 and list(solution) == [int(v) for v in grid]
    bad = grid.copy()
    bad[0], bad[1] = bad[1], bad[0]   # two cells swapped: rows stay permutations, the columns break
    with pytest.raises(TRMError):
        dig_puzzle(bad, np.random.default_rng(0), n_blanks=10)


def test_from_grids_writes_the_generators_line():
    task = SudokuText(20)
    rng = np.random.default_rng(7)
    ex = task.example(rng)
    puzzle = np.array([0 if c == "." else int(c) for c in ex.prompt[:81]])
    solution = np.array([int(c) for c in ex.answer])
    assert task.from_grids(puzzle, solution) == ex
    with pytest.raises(ValueError):
        SudokuText(30).from_grids(puzzle, solution)   # 20 blanks, not 30


@pytest.fixture(scope="module")
def sudoku_ckpt(tmp_path_factory):
    """A tiny TRM on 10-blank Sudoku text (2 optimizer steps), shared read-only."""
    ckpt = tmp_path_factory.mktemp("sud") / "trm"
    res = CliRunner().invoke(app, ["train-lm", "--preset", "lm-tiny", "--task", "sudoku-text-10", "--out", str(ckpt),
                                   "--quiet", "--set", "model.seq_len=192", "--set", "train.train_steps=2",
                                   "--set", "data.task_eval_problems=4", "--set", "data.task_test_problems=4"])
    assert res.exit_code == 0, res.output
    return ckpt


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The script's main() in this process (its exit code and stderr): faster than a subprocess."""
    import lm_sudoku_grids

    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    try:
        lm_sudoku_grids.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def test_script_scores_generated_and_outside_puzzles(sudoku_ckpt, tmp_path, monkeypatch, capsys):
    grids = [_grid(100 + i) for i in range(5)]
    csv = tmp_path / "solved.csv"   # the Sudoku-Extreme layout: the answer column is read
    csv.write_text("source,question,answer,rating\n" + "".join(
        f"x,{'.' * 81},{''.join(map(str, g))},0\n" for g in grids))
    out = tmp_path / "r.json"
    proc = _run("--checkpoint", str(sudoku_ckpt), "--grids", str(csv), "--per-rung", "2", "--blanks", "10,20",
                "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(out.read_text())
    assert rep["grids_used"] == 4 and rep["blanks"] == [10, 20]
    assert {(r["source"], r["exit"]) for r in rep["rows"]} == {
        (s, e) for s in ("generated", "grids") for e in ("stored", "full depth")}
    full = next(r for r in rep["rows"] if r["source"] == "grids" and r["exit"] == "full depth")
    assert set(full["exact_acc_per_rung"]) == {"sudoku-text-10", "sudoku-text-20"} and full["steps_mean"] > 0
    lo, hi = full["exact_acc_ci95"]
    assert lo <= full["exact_acc"] <= hi and hi - lo > 0.3   # 4 puzzles: an interval, not a figure
    # the outside puzzles are the file's grids, dug: the first 10-blank one from grid 0, the 20-blank ones from grids 2, 3
    from lm_sudoku_grids import grid_examples

    exs = grid_examples(["".join(map(str, g)) for g in grids], (10, 20), 2, 0)
    assert [ex.answer for ex in exs] == ["".join(map(str, grids[i])) for i in (0, 1, 2, 3)]
    # one plain grid per line works too; bad files and settings are one-line errors, exit 2
    lines = tmp_path / "grids.txt"
    lines.write_text("\n".join("".join(map(str, g)) for g in grids) + "\n")
    code, err = _main(monkeypatch, capsys, "--checkpoint", str(sudoku_ckpt), "--grids", str(lines),
                      "--per-rung", "1", "--blanks", "10")
    assert code == 0, err
    broken = tmp_path / "broken.txt"
    broken.write_text("".join(map(str, grids[0]))[:-1] + "\n")
    for args in (["--grids", str(tmp_path / "none.csv")], ["--grids", str(broken)],
                 ["--grids", str(lines), "--per-rung", "9"], ["--grids", str(lines), "--blanks", "11"]):
        code, err = _main(monkeypatch, capsys, "--checkpoint", str(sudoku_ckpt), *args)
        assert code == 2 and err.startswith("error: --") and len(err.splitlines()) == 1, (args, err)


def test_reads_the_shared_solved_collection(shared_data_dir):
    """The solved collection the docs' figures used: its first grids dig into valid lines."""
    from lm_sudoku_grids import grid_examples, read_grids

    path = shared_data_dir / "sudoku" / "tdoku_collections_solved.csv"
    if not path.is_file():
        pytest.skip("the solved Sudoku collection is not present")
    exs = grid_examples(read_grids(path)[:8], (10, 45), 4, 0)
    assert len(exs) == 8 and all(len(ex.answer) == 81 for ex in exs)

