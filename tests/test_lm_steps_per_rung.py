"""benchmarks/lm_steps_per_rung.py: per-rung exact answers and answer steps of a checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from trmlm.cli.main import app

ROOT = Path(__file__).resolve().parents[1]


def script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/lm_steps_per_rung.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_one_row_per_rung_with_halting_full_depth_and_depth1(tmp_path):
    ckpt = tmp_path / "tiny"
    res = CliRunner().invoke(app, ["train-lm", "--preset", "lm-tiny", "--task", "add-2", "--out", str(ckpt), "--quiet",
                                   "--set", "train.train_steps=2", "--set", "data.task_eval_problems=8"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "rungs.json"
    proc = script("--checkpoint", str(ckpt), "--task", "add-2", "--problems", "6", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["rung"] == "add-2" and row["problems"] == 6 and row["n_sup"] == 2
    assert 1.0 <= row["halt_answer_steps"] <= 2.0
    assert all(0.0 <= row[k] <= 1.0 for k in ("halt_exact_acc", "exact_acc_full_depth", "exact_acc_depth1"))


def test_an_unknown_task_is_one_line():
    proc = script("--checkpoint", "nowhere", "--task", "nope")
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown task 'nope'")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_missing_checkpoint_is_one_line():
    proc = script("--checkpoint", "nowhere", "--task", "add-2", "--problems", "2")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert "checkpoint not found: nowhere" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
