"""The LM benchmark scripts end to end on the tiny preset (slow: each trains several models)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*args: str) -> None:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_lm_tasks_rows_and_reuse(tmp_path):
    out, runs = tmp_path / "lm_tasks.json", tmp_path / "runs"
    cmd = ["benchmarks/lm_tasks.py", "--task", "add-2", "--preset", "lm-tiny", "--minutes", "0.05",
           "--problems", "12", "--thresholds", "0.5", "--runs", str(runs), "--out", str(out)]
    _run(*cmd, "--models", "trm,transformer", "--calibrate-halt", "0.05", "--calibrate-pick", "0.3,0.7", "--baseline-set", "train.batch_size=4",
         "--trm-set", "train.train_steps=3")  # a step budget ends the TRM before its 0.05 CPU-minutes
    rows = json.loads(out.read_text())["rows"]
    assert {(r["model"], r["budget"]) for r in rows} == {
        ("trm", "equal_cpu"), ("trm", "equal_tokens"), ("transformer", "equal_cpu"), ("transformer", "equal_tokens")}
    trm = next(r for r in rows if r["model"] == "trm")
    tokens = next(r for r in rows if r["model"] == "transformer" and r["budget"] == "equal_tokens")
    assert tokens["train_tokens"] >= trm["train_tokens"] > 0  # the transformer gets the TRM's tokens
    assert set(trm["exact_acc_by_depth"]) == {str(d) for d in range(1, 4 * trm["n_sup"] + 1)}
    assert json.loads((runs / "add-2-trm" / "meta.json").read_text())["finished"] is True
    # learned halting was scored with the refitted head; the baselines trained at their own batch
    assert trm["halt_calibration_margin"] == 0.05 and trm["checkpoint"].endswith("add-2-trm-halt")
    assert json.loads((runs / "add-2-trm-halt" / "meta.json").read_text())["halt_calibration"]["margin"] == 0.05
    # the stored exit was picked on the validation problems, and the bench judged the targets there
    assert trm["halt_threshold_pick"]["picked"] in (0.3, 0.7)
    assert trm["halt_operating_point"] == f"halt q>={trm['halt_threshold_pick']['picked']:g}"
    assert tokens["baseline_set"] == ["train.batch_size=4"]
    # equal_cpu: the CPU time the TRM used, not --minutes
    used = json.loads((runs / "add-2-trm" / "meta.json").read_text())["train_cpu_seconds"] / 60
    budget = json.loads((runs / "add-2-transformer-equal_cpu" / "config.json").read_text())["train"]["max_minutes"]
    assert trm["optimizer_steps"] == 3 and budget == max(round(used, 4), 1e-4) and budget < 0.05
    stamp = (runs / "add-2-trm" / "model.safetensors").stat().st_mtime_ns
    _run(*cmd, "--models", "transformer-cot", "--reuse", "--budgets", "equal_tokens")  # reuses the finished TRM run
    assert (runs / "add-2-trm" / "model.safetensors").stat().st_mtime_ns == stamp
    rows = json.loads(out.read_text())["rows"]
    cot = next(r for r in rows if r["model"] == "transformer-cot" and r["budget"] == "equal_tokens")
    assert set(cot["exact_acc_per_rung"]) == {"add-2"} and len(rows) == 5  # --budgets: no equal_cpu run
    assert not (runs / "add-2-transformer-cot-equal_cpu").exists()
    bad = subprocess.run([sys.executable, *cmd, "--budgets", "equal_flops"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "--budgets" in bad.stderr
    bad = subprocess.run([sys.executable, *cmd, "--models", "trm,gpt"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "--models" in bad.stderr  # refused before any training
    assert {r["command"].split("--models ")[1].split()[0] for r in rows} == {"trm,transformer", "transformer-cot"}


def test_lm_text_rows(tmp_path):
    out = tmp_path / "lm_text.json"
    _run("benchmarks/lm_text.py", "--preset", "lm-tiny", "--minutes", "0.05", "--tokens", "128",
         "--runs", str(tmp_path / "runs"), "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert {(r["model"], r["budget"]) for r in rows} == {
        ("trm", "equal_cpu"), ("trm", "equal_tokens"), ("transformer", "equal_cpu"), ("transformer", "equal_tokens")}
    assert all(0 < r["bpc_sequential"] < 10 for r in rows)


def test_lm_text_gives_the_transformer_the_trms_cpu_time_when_the_trm_counts_steps(tmp_path):
    runs = tmp_path / "runs"
    _run("benchmarks/lm_text.py", "--preset", "lm-tiny", "--minutes", "0.01", "--tokens", "64",
         "--trm-set", "train.max_minutes=0", "--trm-set", "train.train_steps=12", "--runs", str(runs),
         "--out", str(tmp_path / "lm_text.json"))
    trm = json.loads((runs / "trm" / "meta.json").read_text())
    budget = json.loads((runs / "transformer-equal_cpu" / "config.json").read_text())["train"]["max_minutes"]
    assert trm["step"] == 12 and budget == pytest.approx(trm["train_cpu_seconds"] / 60, rel=1e-4)


def test_lm_token_cost_rows(tmp_path):
    out = tmp_path / "lm_token_cost.json"
    _run("benchmarks/lm_token_cost.py", "--batches", "1", "--warmup", "0", "--out", str(out))
    report = json.loads(out.read_text())
    rows = {r["variant"]: r for r in report["rows"]}
    assert rows["transformer (batch 16)"]["ratio"] == 1.0 and len(rows) == 7
    assert all(r["us_per_token"] > 0 for r in rows.values())
    assert 0.2 < report["loss_position_share"] < 0.6  # arith: the answers are about 2/5 of a line


def test_lm_token_cost_step_target_group(tmp_path):
    out = tmp_path / "cost.json"
    _run("benchmarks/lm_token_cost.py", "--group", "step-targets", "--batches", "2", "--warmup", "0", "--out", str(out))
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert len(rows) == 4 and rows["transformer (batch 16)"]["ratio_of_means"] == 1.0
    hold = rows["trm, step targets and hold_steps 3"]
    assert "hold_steps=3" in hold["set"] and hold["ratio_of_means"] > 1.0  # three trained steps and more
