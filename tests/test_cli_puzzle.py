"""The puzzle CLI end to end on the tiny preset, and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trmlm.cli.main import app
from trmlm.errors import TRMError
from cli_checks import assert_one_line_error
from model_checks import final_predictions, held_out_accuracy
from trmlm.puzzles.run import load_model
from trmlm.puzzles.sudoku.grid import parse_puzzle
from trmlm.puzzles.sudoku.solver import solve
from trmlm.puzzles.sudoku.task import parse_input, to_text

runner = CliRunner()
EASY = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "ckpt"
    cache = tmp_path_factory.mktemp("cache")
    result = runner.invoke(app, ["train-puzzle", "sudoku", "--preset", "sudoku-tiny", "--out", str(out),
                                 "--quiet"], env={"TRM_CACHE_DIR": str(cache)})
    assert result.exit_code == 0, result.output
    assert "Held-out puzzle #0" in result.stdout
    return out


def test_train_writes_checkpoint_and_curve(tiny_checkpoint, tmp_path, monkeypatch):
    assert (tiny_checkpoint / "model.safetensors").is_file()
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["task"] == "sudoku" and config["model"]["d_model"] == 32
    meta = json.loads((tiny_checkpoint / "meta.json").read_text())
    # the recorded metrics are those of the saved weights on the eval_size = 8 held-out puzzles
    monkeypatch.setenv("TRM_CACHE_DIR", str(tmp_path))
    hand = held_out_accuracy(tiny_checkpoint, "sudoku", 8)
    assert meta["step"] == 6 and meta["metrics"]["n_eval"] == 8
    assert meta["metrics"]["exact_acc"] == hand["exact_acc"]
    assert meta["metrics"]["cell_acc"] == pytest.approx(hand["cell_acc"], abs=1e-12)
    assert 0.0 < hand["cell_acc"] < 1.0  # a value the check can get wrong
    curve = json.loads((tiny_checkpoint / "curve.json").read_text())
    assert [row["step"] for row in curve] == [3, 6]
    rows = [json.loads(line) for line in (tiny_checkpoint / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in r for r in rows) and any("eval/exact_acc" in r for r in rows)


def test_solve_prints_grid_and_steps(tiny_checkpoint):
    result = runner.invoke(app, ["solve", "sudoku", EASY, "--checkpoint", str(tiny_checkpoint), "--show-steps"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("step ") == 2  # N_sup = 2 in the tiny preset
    assert "q_halt" in result.stdout


def test_solve_json(tiny_checkpoint):
    result = runner.invoke(app, ["solve", "sudoku", EASY, "--checkpoint", str(tiny_checkpoint), "--json",
                                 "--show-steps"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["puzzle"] == EASY and len(data["prediction"]) == 81
    assert [s["step"] for s in data["steps"]] == [1, 2]
    assert data["steps"][-1]["prediction"] == data["prediction"]
    # the prediction is the model's own argmax after N_sup steps; `correct` says whether it is
    # the puzzle's unique solution (the solver's)
    model, _, _ = load_model(tiny_checkpoint, "sudoku")
    assert data["prediction"] == to_text(final_predictions(model, parse_input(EASY)[None])[0])
    solution = solve(parse_puzzle(EASY))
    assert data["unique_solution"] is True and solution.n_solutions == 1
    assert data["correct"] is (data["prediction"] == "".join(map(str, solution.solution)))


def test_eval_puzzle(tiny_checkpoint, tmp_path, monkeypatch):
    result = runner.invoke(app, ["eval-puzzle", "sudoku", "--checkpoint", str(tiny_checkpoint), "--json"],
                           env={"TRM_CACHE_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["n_eval"] == 8 and len(metrics["exact_acc_per_step"]) == 2
    monkeypatch.setenv("TRM_CACHE_DIR", str(tmp_path))
    hand = held_out_accuracy(tiny_checkpoint, "sudoku", 8)
    assert metrics["exact_acc"] == hand["exact_acc"] == metrics["exact_acc_per_step"][-1]
    assert metrics["cell_acc"] == pytest.approx(hand["cell_acc"], abs=1e-12)




def test_eval_on_a_source_whose_test_split_is_all_training_puzzles_is_refused(tiny_checkpoint, tmp_path):
    """The held-out set drops puzzles also in the training split; none left is an error, not 0.0."""
    from trmlm.puzzles.sudoku.data import write_sudoku_csv
    from trmlm.puzzles.sudoku.generator import generate_puzzles

    sset = generate_puzzles(3, n_blanks=30, seed=5)
    for split in ("train", "test"):
        write_sudoku_csv(tmp_path / "src" / f"{split}.csv", sset, "same puzzles")
    result = runner.invoke(app, ["eval-puzzle", "sudoku", "--checkpoint", str(tiny_checkpoint), "--json",
                                 "--source", str(tmp_path / "src")], env={"TRM_CACHE_DIR": str(tmp_path)})
    assert_one_line_error(result, "no held-out puzzles to evaluate")


def test_training_on_a_source_whose_test_split_is_all_training_puzzles_is_refused(tmp_path):
    """train-puzzle refuses before training, rather than reporting exact 0.0 on no puzzles."""
    from trmlm.puzzles.sudoku.data import write_sudoku_csv
    from trmlm.puzzles.sudoku.generator import generate_puzzles

    sset = generate_puzzles(3, n_blanks=30, seed=5)
    for split in ("train", "test"):
        write_sudoku_csv(tmp_path / "src" / f"{split}.csv", sset, "same puzzles")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train-puzzle", "sudoku", "--preset", "sudoku-tiny", "--out", str(out), "--quiet",
                                 "--set", f"data.source={tmp_path / 'src'}", "--set", "train.train_steps=2"],
                           env={"TRM_CACHE_DIR": str(tmp_path)})
    assert_one_line_error(result, "no held-out puzzles to evaluate")
    assert not (out / "model.safetensors").exists()


def test_held_out_rows_drop_training_questions_and_none_left_is_an_error():
    from trmlm.puzzle.data import unseen

    train, test = np.array([[1, 2], [3, 4]]), np.array([[3, 4], [5, 6], [1, 2]])
    assert unseen(train, test, "here").tolist() == [False, True, False]
    with pytest.raises(TRMError, match="every test puzzle is also in its training split"):
        unseen(train, test[[0, 2]], "here")
    with pytest.raises(TRMError, match="its test split is empty"):
        unseen(train, test[:0], "here")


@pytest.mark.parametrize("puzzle,needle", [
    (EASY[:-1], "80 cells, expected 81"),
    (EASY[:-1] + "x", "illegal character 'x'"),
    ("55" + EASY[2:], "contradictory puzzle"),
    # row 1 forbids 1-8 in cell 9, column 9 holds the 9: no digit fits, no solution exists
    ("12345678." + "........9" + "." * 63, "unsolvable"),
])
def test_bad_puzzle_is_one_line_exit_2(tiny_checkpoint, puzzle, needle):
    result = runner.invoke(app, ["solve", "sudoku", puzzle, "--checkpoint", str(tiny_checkpoint)])
    assert_one_line_error(result, needle)


def test_missing_and_corrupt_checkpoint(tiny_checkpoint, tmp_path):
    result = runner.invoke(app, ["solve", "sudoku", EASY, "--checkpoint", str(tmp_path / "nope")])
    assert_one_line_error(result, "checkpoint not found")
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("config.json", "meta.json"):
        (bad / name).write_text((tiny_checkpoint / name).read_text())
    (bad / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    result = runner.invoke(app, ["solve", "sudoku", EASY, "--checkpoint", str(bad)])
    assert_one_line_error(result, "corrupt checkpoint weights")
    (bad / "config.json").write_text("{not json")
    result = runner.invoke(app, ["solve", "sudoku", EASY, "--checkpoint", str(bad)])
    assert_one_line_error(result, "corrupt checkpoint config")


def test_bad_config_is_one_line_exit_2(tmp_path):
    result = runner.invoke(app, ["train-puzzle", "sudoku", "--set", "model.bogus=1", "--out", str(tmp_path)])
    assert_one_line_error(result, "unknown config key 'model.bogus'")
    result = runner.invoke(app, ["train-puzzle", "sudoku", "--set", "train.lr=fast", "--out", str(tmp_path)])
    assert_one_line_error(result, "train.lr: expected a number")
    result = runner.invoke(app, ["train-puzzle", "sudoku", "--preset", "nope", "--out", str(tmp_path)])
    assert_one_line_error(result, "unknown preset 'nope'")
    result = runner.invoke(app, ["train-puzzle", "chess", "--out", str(tmp_path)])
    assert_one_line_error(result, "unknown puzzle task 'chess'")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    result = runner.invoke(app, ["train-puzzle", "sudoku", "--config", str(bad), "--out", str(tmp_path)])
    assert_one_line_error(result, "invalid YAML")
    assert not (tmp_path / "model.safetensors").exists()


def test_console_script_exit_code(tmp_path):
    """The installed entry point itself (not just the Typer app) exits 2 with one line."""
    env = {**os.environ, "TRM_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "trmlm.cli.main", "solve", "sudoku", "123", "--checkpoint", "x"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: puzzle has 3 cells, expected 81"
