"""train.lr_decay_frac: the linear decay tail of the learning rate (warmup-stable-decay), by steps
or by the time budget, in the puzzle and the LM training loops."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli_checks import assert_one_line_error
from trmlm.cli.main import app
from trmlm.optim import decay_factor, run_progress


def test_decay_factor_and_progress_by_hand():
    assert [decay_factor(p, 0.5, 0.0) for p in (0.0, 0.5, 0.625, 0.75, 1.0)] == [1.0, 1.0, 0.75, 0.5, 0.0]
    assert decay_factor(0.9, 0.2, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert decay_factor(0.99, 0.0, 0.0) == 1.0  # off
    assert run_progress(3, 10, 0.0, 0.0) == 0.3  # no time budget: steps only
    assert run_progress(3, 10, 45.0, 60.0) == 0.75  # the time budget is nearer its end
    assert run_progress(30, 10, 90.0, 60.0) == 1.0


def lrs(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in rows if r.get("lr") is not None}


def train(tmp_path: Path, monkeypatch, *args: str) -> Path:
    monkeypatch.setenv("TRM_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, [*args, "--out", str(out), "--quiet", "--set", "train.threads=1",
                                   "--set", "train.log_every=1", "--set", "train.warmup_steps=0",
                                   "--set", "train.lr=0.001"])
    assert res.exit_code == 0, res.output[-3000:]
    return out


def test_puzzle_lr_decays_over_the_last_steps(tmp_path, monkeypatch):
    run = train(tmp_path, monkeypatch, "train-puzzle", "sudoku", "--preset", "sudoku-tiny",
                "--set", "train.train_steps=8", "--set", "train.eval_every=1000", "--set", "train.lr_decay_frac=0.5")
    # step k runs at progress (k - 1) / 8: constant to half-way, then 0.75, 0.5, 0.25 of lr
    assert lrs(run) == pytest.approx({1: 1e-3, 2: 1e-3, 3: 1e-3, 4: 1e-3, 5: 1e-3, 6: 7.5e-4, 7: 5e-4, 8: 2.5e-4})


def test_puzzle_lr_decays_on_the_clock_the_ranks_agreed_on(tmp_path, monkeypatch):
    """With a time budget the decay reads the clock agreed (the ranks' mean) with the stop and
    evaluate flags, in that one collective per step (plus one before the loop): never its own."""
    from trmlm.distributed import DistContext

    calls = []

    def agree(self, clock, flags):  # the agreed clock runs 7.5 s per step; out of time after step 8
        calls.append(list(flags))
        return 7.5 * (len(calls) - 1), [len(calls) >= 9, *flags[1:]] if flags else []

    monkeypatch.setattr(DistContext, "agree", agree)
    monkeypatch.setattr(DistContext, "all_reduce_mean_", lambda self, tensors: None)  # the logged rows only
    run = train(tmp_path, monkeypatch, "train-puzzle", "sudoku", "--preset", "sudoku-tiny",
                "--set", "train.train_steps=1000", "--set", "train.max_minutes=1", "--set", "train.eval_every=1000",
                "--set", "train.lr_decay_frac=0.5")
    assert len(calls) == 9 and calls[0] == [] and all(len(f) == 2 for f in calls[1:])
    # step k reads the clock agreed after step k - 1: (k - 1) / 8 of the minute, as in the steps test
    assert lrs(run) == pytest.approx({1: 1e-3, 2: 1e-3, 3: 1e-3, 4: 1e-3, 5: 1e-3, 6: 7.5e-4, 7: 5e-4, 8: 2.5e-4})


def test_lm_lr_decays_over_the_last_steps(tmp_path, monkeypatch):
    run = train(tmp_path, monkeypatch, "train-lm", "--preset", "lm-tiny", "--model", "transformer",
                "--set", "train.train_steps=4", "--set", "train.lr_decay_frac=0.5", "--set", "train.lr_decay_min=0.2")
    assert lrs(run) == pytest.approx({1: 1e-3, 2: 1e-3, 3: 1e-3, 4: 1e-3 * (0.2 + 0.8 * 0.5)})


def test_no_decay_by_default(tmp_path, monkeypatch):
    run = train(tmp_path, monkeypatch, "train-puzzle", "sudoku", "--preset", "sudoku-tiny",
                "--set", "train.train_steps=4", "--set", "train.eval_every=1000")
    assert lrs(run) == pytest.approx({1: 1e-3, 2: 1e-3, 3: 1e-3, 4: 1e-3})


@pytest.mark.parametrize("key,value", [("lr_decay_frac", "1.5"), ("lr_decay_min", "-0.1")])
def test_bad_decay_is_a_one_line_error(tmp_path, monkeypatch, key, value):
    monkeypatch.setenv("TRM_CACHE_DIR", str(tmp_path / "cache"))
    res = CliRunner().invoke(app, ["train-puzzle", "sudoku", "--preset", "sudoku-tiny", "--out", str(tmp_path / "r"),
                                   "--set", f"train.{key}={value}"])
    assert_one_line_error(res, key)
    assert not (tmp_path / "r").exists()


def _drop_saved_key(run: Path, part: str, key: str) -> None:
    """Make the run look saved before `part.key` existed (as runs saved before lr_decay_* were)."""
    for state in (run / "train_state").glob("step_*/state.json"):
        meta = json.loads(state.read_text())
        del meta["config"][part][key]
        state.write_text(json.dumps(meta))


@pytest.mark.parametrize("command", [
    ["train-puzzle", "sudoku", "--preset", "sudoku-tiny", "--set", "train.eval_every=1000"],
    ["train-lm", "--preset", "lm-tiny", "--model", "transformer"]], ids=["puzzle", "lm"])
def test_a_run_saved_before_a_field_existed_resumes_at_its_default(tmp_path, monkeypatch, command):
    run = train(tmp_path, monkeypatch, *command, "--set", "train.train_steps=2")
    _drop_saved_key(run, "train", "lr_decay_frac")
    base = [*command, "--out", str(run), "--resume", "--quiet", "--set", "train.threads=1", "--set", "train.log_every=1",
            "--set", "train.warmup_steps=0", "--set", "train.lr=0.001"]
    changed = CliRunner().invoke(app, [*base, "--set", "train.train_steps=3", "--set", "train.lr_decay_frac=0.5"])
    assert_one_line_error(changed, "train.lr_decay_frac is None in the checkpoint but 0.5 now")
    res = CliRunner().invoke(app, [*base, "--set", "train.train_steps=3"])
    assert res.exit_code == 0, res.output[-3000:]
    assert sorted(lrs(run)) == [1, 2, 3]
