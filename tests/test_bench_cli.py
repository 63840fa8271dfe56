"""CLI: `trm bench --adaptive-compute / --decode` end to end on the tiny LM; bad input exits 2 on one line."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from trmlm.cli.main import app
from cli_checks import assert_one_line_error

torch.set_num_threads(1)
runner = CliRunner()


def test_adaptive_compute_writes_report_and_plots(lm_ckpt, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "b"
    res = runner.invoke(app, ["bench", "--adaptive-compute", "--checkpoint", str(lm_ckpt), "--tokens", "64",
                              "--thresholds", "0.2,0.8", "--kl-eps", "0.05", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "fixed 2" in res.stdout and "oracle" in res.stdout
    rep = json.loads((out / "report.json").read_text())
    assert rep["eval_tokens"] == 64  # two windows of the 32-token context
    assert rep["max_steps"] == 2 and rep["hardware"]["device"] == "cpu"
    assert {r["name"] for r in rep["rows"]} >= {"fixed 1", "fixed 2", "halt q>=0.2", "halt q>=0.8", "oracle"}
    for name in ("pareto.png", "steps_hist.png", "heatmap.png"):
        assert (out / name).stat().st_size > 1000


def test_adaptive_compute_on_a_given_text_file(lm_ckpt, tmp_path):
    text = tmp_path / "held.txt"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n" * 2)
    res = runner.invoke(app, ["bench", "--adaptive-compute", "--checkpoint", str(lm_ckpt), "--data", str(text),
                              "--tokens", "32", "--thresholds", "0.5", "--out", str(tmp_path / "b"), "--quiet"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rep["data"] == str(text) and rep["eval_tokens"] == 32


@pytest.fixture(scope="module")
def add2_ckpt(tmp_path_factory):
    """A tiny TRM checkpoint of the add-2 task (2 optimizer steps), shared read-only."""
    ckpt = tmp_path_factory.mktemp("task") / "add"
    res = runner.invoke(app, ["train-lm", "--preset", "lm-tiny", "--task", "add-2", "--out", str(ckpt), "--quiet",
                              "--set", "train.train_steps=2", "--set", "data.task_eval_problems=40",
                              "--set", "data.task_test_problems=8"])
    assert res.exit_code == 0, res.output
    return ckpt


def test_adaptive_compute_on_a_task_checkpoint(add2_ckpt, tmp_path):
    ckpt = add2_ckpt
    pytest.importorskip("matplotlib")
    res = runner.invoke(app, ["bench", "--adaptive-compute", "--checkpoint", str(ckpt), "--task", "add-2",
                              "--problems", "3", "--thresholds", "0.3", "--kl-eps", "0.05",
                              "--out", str(tmp_path / "b"), "--quiet"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "b" / "task_report.json").read_text())
    assert rep["checkpoint"] == str(ckpt) and rep["train_step"] == 2
    # the checkpoint's stored threshold (0.5, chosen before the test problems) joins the sweep
    # and is the operating point the targets are judged at, not the best row on these problems
    assert {"fixed 1", "halt q>=0.3", "halt q>=0.5"} <= {r["name"] for r in rep["rows"]}
    assert rep["operating_point"] == "halt q>=0.5" and rep["operating_point_rule"] == "the checkpoint's stored threshold"
    assert all(0.0 <= r["exact_acc"] <= 1.0 for r in rep["rows"] if r["kind"] != "oracle")
    assert (tmp_path / "b" / "task_heatmap.png").stat().st_size > 1000
    # each learned exit against full depth and its random control, problem by problem
    full = next(r for r in rep["rows"] if r["name"] == f"fixed {rep['n_sup']}")
    for r in (r for r in rep["rows"] if r["kind"] == "learned"):
        for key, other in (("paired_full_depth", full), ("paired_random", r["random_same_mean"])):
            vs = r[key]
            other = other if isinstance(other, dict) else next(o for o in rep["rows"] if o["name"] == other)
            assert vs["against"] == other["name"]
            assert vs["both"] + vs["only_this"] == round(r["exact_acc"] * 3)
            assert vs["both"] + vs["only_other"] == round(other["exact_acc"] * 3)
            assert 0.0 <= vs["mcnemar_p"] <= 1.0
    assert rep["halt_vs_full_depth"] == next(r for r in rep["rows"] if r["name"] == "halt q>=0.5")["paired_full_depth"]
    lo, hi = rep["halt_exact_ci95"]
    assert lo <= rep["halt_exact_acc"] <= hi and "_solved" not in rep["rows"][0]
    assert "against full depth on the same 3 problems" in res.stdout


def test_decode_bench_on_a_preset(tmp_path):
    pytest.importorskip("transformers")
    res = runner.invoke(app, ["bench", "--decode", "--preset", "lm-tiny", "--prefix-lengths", "4,8",
                              "--decode-tokens", "2", "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "decode.json").read_text())
    assert [r["prefix"] for r in rep["rows"]] == [4, 8] and rep["gpt2"]["n_layer"] == (2 * 1 * 2 + 1) * 2
    assert "KV cache bytes per token" in res.stdout


def test_bench_bad_input_is_one_line(lm_ckpt, tmp_path):
    assert_one_line_error(runner.invoke(app, ["bench"]), "choose at least one")
    assert_one_line_error(runner.invoke(app, ["bench", "--adaptive-compute"]), "--checkpoint")
    assert_one_line_error(runner.invoke(app, ["bench", "--adaptive-compute", "--checkpoint",
                                              str(tmp_path / "none")]), "none")
    assert_one_line_error(runner.invoke(app, ["bench", "--adaptive-compute", "--checkpoint", str(lm_ckpt),
                                              "--thresholds", "a,b"]), "--thresholds")
    assert_one_line_error(runner.invoke(app, ["bench", "--adaptive-compute", "--checkpoint", str(lm_ckpt),
                                              "--thresholds", "1.5"]), "--thresholds")
    assert_one_line_error(runner.invoke(app, ["bench", "--adaptive-compute", "--checkpoint", str(lm_ckpt),
                                              "--data", str(tmp_path / "missing.txt")]), "no such file")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_one_line_error(runner.invoke(app, ["bench", "--adaptive-compute", "--checkpoint", str(lm_ckpt),
                                              "--data", str(empty)]), "fewer than 2 tokens")
    alien = tmp_path / "alien.txt"
    alien.write_text("\u4e2d\u6587\u4e2d\u6587")
    res = runner.invoke(app, ["bench", "--adaptive-compute", "--checkpoint", str(lm_ckpt), "--data", str(alien)])
    assert res.exit_code == 2 and "Traceback" not in res.output and res.stderr.startswith("error: ")
    assert_one_line_error(runner.invoke(app, ["bench", "--decode", "--preset", "nope"]), "unknown LM preset")
    if not torch.cuda.is_available():
        assert_one_line_error(runner.invoke(app, ["bench", "--decode", "--device", "cuda"]), "no CUDA GPU")
    assert_one_line_error(runner.invoke(app, ["bench", "--decode", "--preset", "lm-tiny",
                                              "--prefix-lengths", "0"]), "--prefix-lengths")
    assert_one_line_error(runner.invoke(app, ["bench", "--decode", "--preset", "lm-tiny",
                                              "--prefix-lengths", "64,100000"]), "--prefix-lengths")
    transformer = tmp_path / "tf"
    res = runner.invoke(app, ["train-lm", "--preset", "lm-tiny", "--model", "transformer", "--out",
                              str(transformer), "--quiet", "--set", "train.train_steps=1"])
    assert res.exit_code == 0, res.output
    assert_one_line_error(runner.invoke(app, ["bench", "--adaptive-compute", "--checkpoint", str(transformer),
                                              "--tokens", "8"]), "TRM checkpoint")


def test_train_step_bench_on_tiny_presets(tmp_path):
    res = runner.invoke(app, ["bench", "--train-step", "--presets", "sudoku-tiny,lm-tiny", "--batch", "2",
                              "--steps", "1", "--threads", "1", "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "train_step.json").read_text())
    assert [r["preset"] for r in rep["rows"]] == ["sudoku-tiny", "lm-tiny"]
    assert all(r["step_seconds"] > 0 and r["gflop_per_step"] > 0 for r in rep["rows"])
    assert_one_line_error(runner.invoke(app, ["bench", "--train-step", "--presets", "sudoku-nope"]), "sudoku-nope")


def test_prompt_depth_script_on_a_task_checkpoint(add2_ckpt, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    ckpt = add2_ckpt
    out = tmp_path / "pd.json"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "benchmarks/lm_prompt_depth.py", "--checkpoint", str(ckpt), "--task",
                           "add-2", "--problems", "4", "--out", str(out)], cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(out.read_text())["rows"][0]
    assert row["checkpoint"] == str(ckpt) and row["n_sup"] == 2
    assert all(0.0 <= row[k] <= 1.0 for k in ("learned", "prompt_full_answer_learned", "full"))
    # the same split exit through `trm eval-lm --prompt-full-depth`; text evaluation refuses it
    res = runner.invoke(app, ["eval-lm", "--checkpoint", str(ckpt), "--task", "add-2", "--problems", "4",
                              "--prompt-full-depth", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["prompt_full_depth"] is True and rep["exact_acc"] == row["prompt_full_answer_learned"]
    assert_one_line_error(runner.invoke(app, ["eval-lm", "--checkpoint", str(ckpt), "--data", str(root / "README.md"),
                                              "--prompt-full-depth"]), "needs a task")
