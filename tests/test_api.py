"""The Python API: trmlm.load -> PuzzleSolver / TextGenerator, agreeing with what `trm` prints."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import trmlm
from trmlm.cli.main import app
from trmlm.errors import TRMError
from trmlm.puzzles.run import TASKS, resolve_config
from trmlm.cli.common import configs_dir

runner = CliRunner()
SUDOKU = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
ROOT = Path(__file__).resolve().parents[1]


def _train(tmp_path_factory, task: str, preset: str) -> Path:
    out = tmp_path_factory.mktemp(task) / "ckpt"
    res = runner.invoke(app, ["train-puzzle", task, "--preset", preset, "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def sudoku_ckpt(tmp_path_factory) -> Path:
    return _train(tmp_path_factory, "sudoku", "sudoku-tiny")


@pytest.fixture(scope="module")
def maze_ckpt(tmp_path_factory) -> Path:
    return _train(tmp_path_factory, "maze", "maze-tiny")


@pytest.fixture(scope="module")
def arc_ckpt(tmp_path_factory) -> Path:
    return _train(tmp_path_factory, "arc", "arc-tiny")


def _cli_solve(task: str, ckpt: Path, puzzle: str) -> dict:
    res = runner.invoke(app, ["solve", task, puzzle, "--checkpoint", str(ckpt), "--json", "--show-steps",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_import_trmlm_is_light_and_exposes_the_api():
    code = "import sys, trmlm; print('torch' in sys.modules, 'load' in dir(trmlm))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert res.stdout.split() == ["False", "True"]
    assert trmlm.load is trmlm.puzzles.api.load
    with pytest.raises(AttributeError):
        trmlm.no_such_thing  # noqa: B018


def test_load_picks_the_kind_the_checkpoint_holds(sudoku_ckpt, lm_ckpt):
    assert isinstance(trmlm.load(sudoku_ckpt, device="cpu"), trmlm.PuzzleSolver)
    assert isinstance(trmlm.load(str(lm_ckpt), device="cpu"), trmlm.TextGenerator)


def test_sudoku_solve_equals_trm_solve(sudoku_ckpt):
    solver = trmlm.load(sudoku_ckpt, device="cpu")
    r = solver.solve(SUDOKU)
    cli = _cli_solve("sudoku", sudoku_ckpt, SUDOKU)
    n_sup = solver.run.model.max_sup_steps
    assert r.steps == len(r.trace) == len(r.halt_logits) == n_sup == len(cli["steps"])
    assert r.text == cli["prediction"]
    assert [round(q, 4) for q in r.halt_logits] == [s["q_halt"] for s in cli["steps"]]
    assert ["".join(".123456789"[v] for v in g.reshape(-1)) for g in r.trace] == [s["prediction"] for s in cli["steps"]]
    assert r.grid.shape == (9, 9) and np.array_equal(r.grid, r.trace[-1])
    assert r.correct == cli["correct"]
    # valid: the rules, independently of the model's answer being right
    puzzle = np.array([0 if c == "." else int(c) for c in SUDOKU]).reshape(9, 9)
    rows_ok = all(sorted(row) == list(range(1, 10)) for row in r.grid)
    cols_ok = all(sorted(col) == list(range(1, 10)) for col in r.grid.T)
    boxes_ok = all(sorted(r.grid[i:i + 3, j:j + 3].reshape(-1)) == list(range(1, 10))
                   for i in (0, 3, 6) for j in (0, 3, 6))
    kept = bool(((puzzle == 0) | (r.grid == puzzle)).all())
    assert r.valid == (rows_ok and cols_ok and boxes_ok and kept)
    assert str(r).count("|") == 18  # the CLI's rendering, 9 rows x 2 box separators
    # the same puzzle as a (9, 9) grid of digits
    assert solver.solve(puzzle.tolist()).text == r.text


def test_valid_and_correct_judge_the_answer(sudoku_ckpt, monkeypatch):
    """Feed the solver's solution as the model's answer: valid and correct; one cell changed: neither."""
    from trmlm.puzzle.eval import Trace
    from trmlm.puzzles import api
    from trmlm.puzzles.sudoku.grid import to_tokens
    from trmlm.puzzles.sudoku.solver import solve

    solver = trmlm.load(sudoku_ckpt, device="cpu")
    solution = to_tokens(solve(np.array([0 if c == "." else int(c) for c in SUDOKU])).solution)
    answer = solution.copy()

    def fake_trace(model, inputs, puzzle_ids, steps=None, runtime=None):
        return Trace(answer[None, None], np.array([[1.5]]), np.array([[0.9]]))

    monkeypatch.setattr(api, "trace_supervision", fake_trace)
    r = solver.solve(SUDOKU)
    assert (r.valid, r.correct, r.halt_step, r.steps) == (True, True, 1, 1)
    blank = SUDOKU.index(".")
    answer[blank] = 2 + (answer[blank] - 1) % 9  # another digit in a blank cell
    r = solver.solve(SUDOKU)
    assert (r.valid, r.correct) == (False, False)
    relabelled = np.where(solution == 2, 3, np.where(solution == 3, 2, solution))  # digits 1 <-> 2
    answer[:] = relabelled  # a complete, consistent grid that changes the givens
    r = solver.solve(SUDOKU)
    assert (r.valid, r.correct) == (False, False)


def test_halt_true_answers_at_the_first_firing_step(sudoku_ckpt):
    solver = trmlm.load(sudoku_ckpt, device="cpu")
    assert solver.solve(SUDOKU, halt=True).halt_step is None  # q bias -5: never fires -> N_sup steps
    assert solver.solve(SUDOKU, halt=True).steps == solver.run.model.max_sup_steps
    with torch.no_grad():
        solver.model.q_head.bias.fill_(5.0)  # fires at step 1
    r = solver.solve(SUDOKU, halt=True)
    assert r.halt_step == 1 and r.steps == 1 and len(r.trace) == 1
    full = solver.solve(SUDOKU)
    assert full.steps == solver.run.model.max_sup_steps and np.array_equal(r.grid, full.trace[0])
    assert solver.solve(SUDOKU, steps=1).steps == 1


def test_maze_solve_equals_trm_solve(maze_ckpt):
    from trmlm.puzzles.maze.task import to_text

    solver = trmlm.load(maze_ckpt, device="cpu")
    run = resolve_config("maze", configs_dir(), "maze-tiny")
    held_out = TASKS["maze"].build_data(run.data).eval
    text = to_text(held_out["inputs"][0])
    r = solver.solve(text)
    cli = _cli_solve("maze", maze_ckpt, text)
    assert r.text == cli["prediction"] and r.correct == cli["correct"] and r.valid == cli["correct"]
    assert r.grid.shape == (6, 6) and "".join(r.grid.reshape(-1)) == r.text.replace("\n", "")
    lines = [text[i:i + 6] for i in range(0, 36, 6)]
    assert solver.solve(lines).text == r.text


def test_arc_grid_and_task(arc_ckpt):
    solver = trmlm.load(arc_ckpt, device="cpu")
    grid = [[1, 2, 0], [3, 4, 0]]
    r = solver.solve(grid)
    cli = _cli_solve("arc", arc_ckpt, json.dumps(grid))
    assert json.dumps(r.grid.tolist()) == cli["prediction"] or (r.grid.size == 0 and cli["prediction"] == "[]")
    assert r.correct is None and r.valid == (r.grid.size > 0)
    task = {"train": [{"input": grid, "output": grid}], "test": [{"input": grid, "output": r.grid.tolist() or [[0]]}]}
    scored = solver.solve(task)
    assert scored.text == r.text
    assert scored.correct is (r.grid.size > 0)  # the task's output is the model's own answer
    task["test"][0]["output"] = [[9]]
    assert solver.solve(json.dumps(task)).correct is False


def test_bad_input_is_a_one_line_trmerror(sudoku_ckpt, tmp_path):
    solver = trmlm.load(sudoku_ckpt, device="cpu")
    for bad in ("123", SUDOKU.replace("5", "x", 1), {"not": "a sudoku"}):
        with pytest.raises(TRMError) as exc:
            solver.solve(bad)
        assert "\n" not in str(exc.value)
    with pytest.raises(TRMError, match="steps must be >= 1"):
        solver.solve(SUDOKU, steps=0)
    with pytest.raises(TRMError, match="checkpoint not found"):
        trmlm.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TRMError, match="model.safetensors"):
        trmlm.load(tmp_path / "empty")


def test_generate_equals_trm_generate(lm_ckpt):
    gen = trmlm.load(lm_ckpt, device="cpu")
    text = gen.generate("ROMEO:", max_new_tokens=24, temperature=0)
    res = runner.invoke(app, ["generate", "--checkpoint", str(lm_ckpt), "--prompt", "ROMEO:",
                              "--max-new-tokens", "24", "--temperature", "0", "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    sample = json.loads(res.stdout)["samples"][0]
    assert text == sample["text"] and len(text) > 0
    pieces = list(gen.stream("ROMEO:", max_new_tokens=24, temperature=0))
    assert "".join(p.text for p in pieces) == text
    n_sup = gen.config.model.max_sup_steps
    steps = [s for p in pieces for s in p.steps]
    assert len(steps) == len(text) and all(1 <= s <= n_sup for s in steps)
    # sampling options: same seed, same text; a stop string is cut
    a = gen.generate("ROMEO:", 30, temperature=1.0, top_k=5, top_p=0.9, seed=3)
    assert a == gen.generate("ROMEO:", 30, temperature=1.0, top_k=5, top_p=0.9, seed=3)
    stop = text[len(text) // 2]
    assert stop not in gen.generate("ROMEO:", 24, temperature=0, stop=stop)
    assert gen.generate("ROMEO:", 24, temperature=0, stop=stop) == text[:text.index(stop)]
    fixed = list(gen.stream("ROMEO:", 8, temperature=0, halt_threshold=0.0))
    assert all(s == 1 for p in fixed for s in p.steps)  # threshold 0: every token halts after step 1
    with pytest.raises(TRMError, match="temperature"):
        gen.generate("ROMEO:", temperature=-1)


def test_save_pretrained_round_trips(sudoku_ckpt, lm_ckpt, tmp_path):
    solver = trmlm.load(sudoku_ckpt, device="cpu")
    again = trmlm.load(solver.save_pretrained(tmp_path / "s"), device="cpu")
    assert again.solve(SUDOKU).halt_logits == solver.solve(SUDOKU).halt_logits
    assert (tmp_path / "s" / "README.md").is_file()

    gen = trmlm.load(lm_ckpt, device="cpu")
    gen.generation = dataclasses.replace(gen.generation, temperature=0.0, max_new_tokens=9)
    gen.save_pretrained(tmp_path / "g")
    back = trmlm.load(tmp_path / "g", device="cpu")
    assert back.generation == gen.generation  # the generation config travels with the weights
    assert back.generate("ROMEO:") == gen.generate("ROMEO:") and len(back.generate("ROMEO:")) <= 9
    assert {"tokenizer.json", "generation_config.json", "README.md"} <= {p.name for p in (tmp_path / "g").iterdir()}


def test_readme_snippet_runs(sudoku_ckpt, lm_ckpt, capsys):
    """The notebook snippet on the README's first screen, with the tiny checkpoints for its paths."""
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert snippet.count("\n") == 5 and readme.index("```python") < readme.index("## Commands")
    code = snippet.replace('"runs/sudoku-cpu"', repr(str(sudoku_ckpt))).replace(
        '"runs/lm-shakespeare-cpu-trm"', repr(str(lm_ckpt)))
    assert code != snippet
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.count("|") >= 18 and "[" in printed  # the grid, then valid/steps/halt logits
