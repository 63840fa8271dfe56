"""Sudoku as text: the direct form and the scratchpad form (blanks in deduction order), and a task
whose lines do not fit the context refused up front."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from trmlm.cli.main import app
from trmlm.errors import TRMError
from trmlm.lm.tasks.base import BLANK, GIVEN, SCRATCH, SEPARATOR
from trmlm.lm.tasks.batches import TaskBatches
from trmlm.lm.tokenizer import CharTokenizer
from trmlm.puzzles.lm_tasks import get_task as get_any_task
from trmlm.puzzles.sudoku.grid import is_valid_solution


def test_sudoku_text_lines_are_valid_and_categorised():
    task = get_any_task("sudoku-text-30")
    for ex in task.examples(5, seed=0):
        puzzle, solution = ex.prompt[:81], ex.answer
        assert ex.prompt[81] == "=" and len(solution) == 81
        assert is_valid_solution(np.array([int(c) for c in solution]).reshape(9, 9))
        assert puzzle.count(".") == 30
        assert all(p in (".", s) for p, s in zip(puzzle, solution))   # givens are copied
        cats = ex.categories[82:163]
        assert [c == BLANK for c in cats] == [p == "." for p in puzzle]
        assert all(c == GIVEN for c, p in zip(cats, puzzle) if p != ".")
        assert task.is_valid(ex.target) and task.is_correct(ex, ex.target)
    assert get_any_task("sudoku-text").examples(3, seed=0) == get_any_task("sudoku-text").examples(3, seed=0)


def _naked(grid: list[int], cell: int, value: int) -> bool:
    """Independently of the generator's solver: `value` is the only digit `cell`'s row, column
    and box leave it."""
    return _forced(grid, cell, value, hidden=False)


def _forced(grid: list[int], cell: int, value: int, hidden: bool = True) -> bool:
    """Independently of the generator's solver: `value` is the only digit `cell`'s row, column
    and box leave it, or (`hidden`) the only place left for `value` in one of those units."""
    r, c = divmod(cell, 9)
    def unit_cells(kind):
        return ([r * 9 + j for j in range(9)] if kind == 0 else [i * 9 + c for i in range(9)] if kind == 1
                else [(r // 3 * 3 + i // 3) * 9 + c // 3 * 3 + i % 3 for i in range(9)])
    def allowed(k):
        kr, kc = divmod(k, 9)
        seen = {grid[kr * 9 + j] for j in range(9)} | {grid[i * 9 + kc] for i in range(9)}
        seen |= {grid[(kr // 3 * 3 + i // 3) * 9 + kc // 3 * 3 + i % 3] for i in range(9)}
        return set(range(1, 10)) - seen
    if allowed(cell) == {value}:
        return True
    return hidden and any([k for k in unit_cells(u) if grid[k] == 0 and value in allowed(k)] == [cell] for u in range(3))


def test_sudoku_step_targets_write_the_naked_then_the_hidden_singles():
    """Step 1 writes a blank iff the givens and the solution cells before it leave it one digit,
    step 2 also iff it is the only place for its digit in a unit, the last the whole solution."""
    task = get_any_task("sudoku-text")
    open_after = [0, 0]
    for ex in task.examples(12, seed=7):
        one, two, last = ex.step_targets
        assert last == ex.target and ex.target_at(1, 3) == one and ex.target_at(2, 3) == two
        assert ex.target_at(3, 3) == ex.target and ex.target_at(3, 4) == ex.target
        grid = [0 if ch == "." else int(ch) for ch in ex.prompt[:81]]
        for cell, value in enumerate(int(d) for d in ex.answer):
            if grid[cell]:
                assert one[cell] == two[cell] == str(value)                # a given: copied at every step
            else:
                assert (one[cell] == str(value)) == _naked(grid, cell, value)
                assert (two[cell] == str(value)) == _forced(grid, cell, value)
                assert {one[cell], two[cell]} <= {".", str(value)}
                open_after[0] += one[cell] == "."
                open_after[1] += two[cell] == "."
            grid[cell] = value                                          # what the next cell's writer has read
        assert one[81:] == two[81:] == "\n"
    assert open_after[0] > open_after[1] > 0                                # each unit of work writes more
    assert get_any_task("sudoku-text-cot").examples(1, seed=7)[0].step_targets == ()


def test_the_sudoku_preset_trains_each_step_toward_its_own_targets(tmp_path):
    """The preset's training windows: the inputs are the solution, step 1's targets hold "." at
    the blanks that are not naked singles, the last step's are the inputs shifted by one."""
    task = get_any_task("sudoku-text")
    tok = CharTokenizer(sorted(set(task.alphabet)))
    ids, mask, per_step = TaskBatches(task, tok, 191, [], loss_on="target").draw_steps(np.random.default_rng(3), 4, 3)
    dot = tok.encode(".")[0]
    assert per_step.shape == (3, 4, 192) and torch.equal(per_step[2], ids)
    answers = mask & (ids[:, 1:] != dot)                   # solution cells (the inputs hold no "." there)
    opened = per_step[0][:, 1:][answers] == dot
    assert 0 < opened.float().mean() < 0.5                   # some blanks left open after one step
    assert (per_step[1][:, 1:][answers] == dot).sum() < opened.sum()
    assert torch.equal(per_step[0][:, 1:][~mask], ids[:, 1:][~mask])   # outside the targets nothing changes
    result = CliRunner().invoke(app, ["train-lm", "--preset", "lm-sudoku-text-cpu", "--task", "sudoku-text-10",
                                      "--out", str(tmp_path / "run"), "--quiet", "--set", "train.train_steps=2",
                                      "--set", "train.max_minutes=0", "--set", "data.task_eval_problems=4",
                                      "--set", "data.task_test_problems=4", "--set", "train.eval_every=1000"])
    assert result.exit_code == 0, result.output
    assert '"step_targets": true' in (tmp_path / "run" / "config.json").read_text()


def test_sudoku_scratchpad_fills_the_blanks_each_forced_by_what_came_before():
    plain, cot = get_any_task("sudoku-text"), get_any_task("sudoku-text-cot")
    steps = forced = 0
    for ex, ref in zip(cot.examples(24, seed=4), plain.examples(24, seed=4)):
        assert (ex.prompt, ex.answer) == (ref.prompt, ref.answer)       # the same puzzles
        trace, answer = ex.target[:-1].split(">")
        assert answer == ex.answer and cot.is_correct(ex, ex.target)
        grid = [0 if ch == "." else int(ch) for ch in ex.prompt[:81]]
        groups = [trace[i:i + 3] for i in range(0, len(trace), 3)]
        cells = ["abcdefghi".index(g[0]) * 9 + int(g[1]) - 1 for g in groups]
        assert sorted(cells) == [k for k in range(81) if grid[k] == 0]   # every blank once
        for cell, g in zip(cells, groups):
            assert int(g[2]) == int(ex.answer[cell])
            steps += 1
            forced += _forced(grid, cell, int(g[2]))
            grid[cell] = int(g[2])
        n = len(trace)
        assert ex.categories[82:82 + n] == (SCRATCH,) * n and ex.categories[82 + n] == SEPARATOR
        assert [c == BLANK for c in ex.categories[83 + n:164 + n]] == [ch == "." for ch in ex.prompt[:81]]
        assert cot.member(ex).max_target == len(ex.target)
    assert forced >= 0.99 * steps      # the generator's puzzles need a guess at most rarely
    last = cot.examples(1, seed=4)[0]
    assert cot.member(last).extract_answer(last.target.replace(">", ">9", 1)) != last.answer


def test_a_task_longer_than_the_context_is_refused_before_training(tmp_path):
    cot = get_any_task("sudoku-text-45-cot")
    examples = cot.examples(2, seed=0)
    cot.check_fits(examples, 300)                       # 82 + 218: fits exactly
    with pytest.raises(TRMError, match="take up to 300 tokens, more than the model's context of 299"):
        cot.check_fits(examples, 299)
    result = CliRunner().invoke(app, ["train-lm", "--preset", "lm-sudoku-text-cpu", "--task", "sudoku-text-cot",
                                      "--model", "transformer", "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 2 and "needs model.seq_len >= 300" in result.output
    written = [p.name for p in (tmp_path / "run").iterdir() if p.name != ".trm-run"]   # the run marker only
    assert "Traceback" not in result.output and not written
