"""Training-step throughput benchmark (puzzles.throughput) at tiny presets: report, JSON, FLOP counts."""

import json

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch.utils.flop_counter import FlopCounterMode

from trmlm.puzzles.throughput import CPU_SDPA_FLOPS, run_train_step_bench
from trmlm.errors import TRMError


TINY_ATT = """task: sudoku
model: {d_model: 32, n_heads: 2, mixer: attention, pos_encoding: rope, n_latent: 2, n_cycles: 2,
        max_sup_steps: 2, puzzle_emb_len: 0}
train: {batch_size: 768}
data: {source: generate, n_train: 16, n_aug: 4, n_test: 8, n_blanks: 30}
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    att = out / "sudoku-tiny-att.yaml"
    att.write_text(TINY_ATT)
    console = Console(record=True, width=140)
    rep = run_train_step_bench(out, threads=1, batch=2, lm_batch=2, steps=1, warmup=0,
                               presets=["sudoku-tiny", str(att)], lm_presets=["lm-tiny"],
                               console=console, progress=False)
    return rep, out, console.export_text()


def test_report_written_with_one_row_per_preset(report):
    rep, out, text = report
    saved = json.loads((out / "train_step.json").read_text())
    assert [r["preset"] for r in saved["rows"]][::2] == ["sudoku-tiny", "lm-tiny"]
    assert [r["kind"] for r in saved["rows"]] == ["puzzle", "puzzle", "lm"]
    assert saved["rows"] == rep["rows"]
    assert saved["device"] == "cpu" and saved["threads"] == 1 and saved["torch"] == torch.__version__
    assert saved["matmul_peak_gflops"] > 0 and saved["cores"] >= 1
    for name in ("sudoku-tiny", "sudoku-tiny-att", "lm-tiny"):
        assert name in text


def test_rows_are_consistent(report):
    rep, _, _ = report
    peak = rep["matmul_peak_gflops"]
    for r in rep["rows"]:
        assert r["step_seconds"] > 0 and r["step_cpu_seconds"] > 0
        assert r["gflop_per_step"] > 0 and r["params"] > 0
        assert r["achieved_gflops"] == pytest.approx(r["gflop_per_step"] / r["step_seconds"])
        assert r["mfu"] == pytest.approx(r["achieved_gflops"] / peak)
        assert r["batch"] == 2 and r["paper_batch"] >= 1
    assert rep["rows"][1]["paper_batch"] == 768  # the preset's batch, recorded beside the measured 2
    lm = rep["rows"][2]
    assert lm["throughput"] == pytest.approx(lm["batch"] * lm["context"] / (lm["N_sup"] * lm["step_seconds"]))


def test_counted_flops_match_the_analytic_count(report):
    rep, _, _ = report
    # puzzles: analytic train_step_flops vs FlopCounterMode. The MLP row is matmuls only and
    # matches to 1e-5 (the analytic count leaves out the tiny Q head); the attention row's CPU SDPA
    # backward is counted at 2.5x its forward where the analytic count takes 2x (~2% here).
    mlp, att = rep["rows"][0], rep["rows"][1]
    assert mlp["mixer"] == "mlp" and att["mixer"] == "attention"
    assert mlp["gflop_per_step_counted"] == pytest.approx(mlp["gflop_per_step"], rel=0.01)
    assert att["gflop_per_step_counted"] == pytest.approx(att["gflop_per_step"], rel=0.05)


def test_cpu_sdpa_is_counted():
    B, H, L, Dh = 2, 4, 16, 8
    q = torch.randn(B, H, L, Dh, requires_grad=True)
    k, v = torch.randn(B, H, L, Dh), torch.randn(B, H, L, Dh)
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    forward = 2 * 2 * B * H * L * L * Dh  # QK^T and AV
    assert counter.get_total_flops() == pytest.approx(3.5 * forward)  # backward 2.5x forward


def test_bad_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(TRMError):
        run_train_step_bench(tmp_path, threads=1, steps=0, presets=[], lm_presets=[], progress=False)
    with pytest.raises(TRMError, match="unknown preset"):
        run_train_step_bench(None, threads=1, presets=["no-such-preset"], lm_presets=[], progress=False)
