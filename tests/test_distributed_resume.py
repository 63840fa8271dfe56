"""Multi-process training equals single-process; kill-and-resume equals uninterrupted; guards."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
DS = REPO / "configs" / "deepspeed"
BASE = ["train-puzzle", "sudoku", "--preset", "sudoku-tiny", "--quiet", "--set", "train.threads=1",
        "--set", "train.log_every=1", "--set", "train.eval_every=1000"]


def trm(*args: str, cache: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRM_CACHE_DIR": str(cache)}
    proc = subprocess.run([sys.executable, "-m", "trmlm.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, **kw)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}  # later rows win


def assert_same_curve(a: dict[int, float], b: dict[int, float], steps, tol: float) -> None:
    for s in steps:
        assert abs(a[s] - b[s]) <= tol * max(1.0, abs(b[s])), (s, a[s], b[s])


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def single(tmp_path_factory, cache) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    trm(*BASE, "--set", "train.train_steps=8", "--out", str(out), cache=cache)
    return out


def test_two_processes_equal_one(single, tmp_path, cache):
    out = tmp_path / "ddp"
    trm(*BASE, "--set", "train.train_steps=8", "--out", str(out), "--nproc", "2", cache=cache)
    assert_same_curve(losses(out), losses(single), range(1, 9), 1e-5)


def test_two_processes_deepspeed_zero2_equal_one(single, tmp_path, cache):
    out = tmp_path / "ds"
    trm(*BASE, "--set", "train.train_steps=8", "--out", str(out), "--nproc", "2",
        "--deepspeed", str(DS / "zero2.json"), cache=cache)
    assert_same_curve(losses(out), losses(single), range(1, 9), 1e-5)
    assert (out / "train_state" / "step_00000008" / "deepspeed").is_dir()


@pytest.mark.slow
def test_deepspeed_zero3_resume_equals_plain(single, tmp_path, cache):
    out = tmp_path / "z3"
    trm(*BASE, "--set", "train.train_steps=5", "--out", str(out), "--deepspeed", str(DS / "zero3.json"), cache=cache)
    trm(*BASE, "--set", "train.train_steps=8", "--out", str(out), "--resume", "--deepspeed",
        str(DS / "zero3.json"), cache=cache)
    assert_same_curve(losses(out), losses(single), range(1, 9), 1e-5)


def test_sigkill_then_resume_follows_the_same_curve(tmp_path, cache):
    args = [*BASE, "--set", "train.train_steps=400", "--set", "train.checkpoint_every=5"]
    full = tmp_path / "full"
    trm(*args, "--set", "train.train_steps=60", "--out", str(full), cache=cache)
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRM_CACHE_DIR": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "trmlm.cli.main", *args, "--set", "train.train_steps=60",
                             "--out", str(killed)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "train_state" / "latest"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and latest.read_text().strip() >= "step_00000015":
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = latest.read_text().strip()
    killed_at = max(losses(killed))
    assert killed_at < 60
    # the state directory is never half-written: latest loads, no temp dirs are left behind
    state = killed / "train_state" / saved
    assert load_file(str(state / "state.safetensors")) and json.loads((state / "state.json").read_text())
    trm(*args, "--set", "train.train_steps=60", "--out", str(killed), "--resume", cache=cache)
    assert not list((killed / "train_state").glob(".*.tmp"))
    resumed_from = int(saved.split("_")[1])
    assert_same_curve(losses(killed), losses(full), range(resumed_from + 1, 61), 1e-6)


def _one_line_exit_2(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr


def test_corrupt_or_mismatched_state_is_refused(single, tmp_path, cache):
    run = tmp_path / "run"
    trm(*BASE, "--set", "train.train_steps=4", "--out", str(run), cache=cache)
    weights = (run / "model.safetensors").read_bytes()
    # wrong config
    proc = trm(*BASE, "--set", "train.train_steps=8", "--set", "model.d_model=64", "--out", str(run),
               "--resume", cache=cache, check=False)
    _one_line_exit_2(proc, "config mismatch: model.d_model is 32 in the checkpoint but 64 now")
    # corrupt state
    state = run / "train_state" / (run / "train_state" / "latest").read_text().strip() / "state.safetensors"
    state.write_bytes(b"not a safetensors file")
    proc = trm(*BASE, "--set", "train.train_steps=8", "--out", str(run), "--resume", cache=cache, check=False)
    _one_line_exit_2(proc, "corrupt training state")
    # a used directory is not overwritten by accident
    proc = trm(*BASE, "--out", str(run), cache=cache, check=False)
    _one_line_exit_2(proc, "already holds a run")
    assert (run / "model.safetensors").read_bytes() == weights


def test_nan_loss_stops_cleanly_and_keeps_checkpoint(tmp_path, monkeypatch):
    """Inject a NaN loss at step 5: the run stops with a clear message; step 3's files survive."""
    import trmlm.puzzle.train as pt
    from trmlm.cli.common import configs_dir
    from trmlm.puzzles.run import resolve_config
    from trmlm.puzzles.sudoku import task
    from trmlm.errors import TRMError

    monkeypatch.setenv("TRM_CACHE_DIR", str(tmp_path / "cache"))
    run = resolve_config("sudoku", configs_dir(), "sudoku-tiny", overrides=["train.train_steps=8"])
    real_step = pt.act_step
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        carry, stats = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:
            stats.loss = stats.loss * float("nan")
        return carry, stats

    monkeypatch.setattr(pt, "act_step", poisoned)
    out = tmp_path / "run"
    with pytest.raises(TRMError, match="loss became nan at step 5; last good checkpoint kept"):
        pt.train_puzzle(run.model, run.train, task.build_data(run.data), out_dir=out,
                        run_config=pt.run_config_dict("sudoku", run.model, run.train, run.data), progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["step"] == 3  # the eval/checkpoint before the NaN
    assert load_file(str(out / "model.safetensors"))
    assert (out / "train_state" / "latest").read_text().strip() == "step_00000003"


# -- the language model: the same machinery (trmlm/distributed.py, trmlm/train_state.py) -------

LM = ["train-lm", "--preset", "lm-tiny", "--quiet", "--set", "train.threads=1", "--set", "train.log_every=1"]


def lm_losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def lm_single(tmp_path_factory, cache) -> Path:
    out = tmp_path_factory.mktemp("lm") / "run"
    trm(*LM, "--out", str(out), cache=cache)
    return out


def test_lm_resume_equals_uninterrupted(lm_single, tmp_path, cache):
    out = tmp_path / "lm"
    trm(*LM, "--set", "train.train_steps=4", "--out", str(out), cache=cache)
    trm(*LM, "--out", str(out), "--resume", cache=cache)
    full, resumed = lm_losses(lm_single), lm_losses(out)
    assert max(full) == 6 and set(full) <= set(resumed)
    assert_same_curve(resumed, full, sorted(full), 1e-6)
    proc = trm(*LM, "--out", str(out), cache=cache, check=False)
    _one_line_exit_2(proc, "already holds a run")


def test_lm_two_processes_deepspeed_equal_one(lm_single, tmp_path, cache):
    out = tmp_path / "lm-ds"
    trm(*LM, "--out", str(out), "--nproc", "2", "--deepspeed", str(DS / "zero2.json"), cache=cache)
    full = lm_losses(lm_single)
    assert_same_curve(lm_losses(out), full, sorted(full), 1e-5)
