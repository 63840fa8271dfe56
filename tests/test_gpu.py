"""The GPU path: CUDA + bf16 autocast training steps match fp32 closely (skipped without CUDA)."""

import pytest
import torch

from trmlm.puzzle.act import act_step, new_carry
from trmlm.config import TRMConfig
from trmlm.puzzle.model import TRMPuzzleModel
from trmlm.runtime import resolve_runtime

pytestmark = pytest.mark.gpu


def test_auto_runtime_picks_cuda_bf16():
    rt = resolve_runtime("auto")
    assert rt.device.type == "cuda" and rt.autocast_dtype == torch.bfloat16 and rt.fused_adam


@pytest.mark.parametrize("mixer", ["attention", "mlp"])
def test_bf16_step_close_to_fp32(mixer):
    torch.manual_seed(0)
    cfg = TRMConfig(d_model=128, n_heads=4, mixer=mixer, pos_encoding="rope" if mixer == "attention" else "none",
                    n_latent=2, n_cycles=2, max_sup_steps=4, puzzle_emb_len=0)
    model = TRMPuzzleModel(cfg).cuda()
    batch = {"inputs": torch.randint(1, 11, (8, 81), device="cuda"),
             "labels": torch.randint(2, 11, (8, 81), device="cuda")}
    _, fp32 = act_step(model, new_carry(model, batch))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, bf16 = act_step(model, new_carry(model, batch))
    assert torch.isfinite(bf16.loss)
    assert abs(bf16.loss.item() - fp32.loss.item()) < 0.05 * fp32.loss.item()
    bf16.loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_bench_decode_and_adaptive_on_cuda():
    """`trm bench` times CUDA decoding with synchronisation and gets the same NLL as on CPU."""
    from tests.test_bench_exits import tiny_cfg
    from trmlm.bench.adaptive import run_exit
    from trmlm.bench.decode_speed import run_decode_bench
    from trmlm.lm.halting import HaltPolicy
    from trmlm.lm.model import TRMLanguageModel

    rep = run_decode_bench(tiny_cfg(seq_len=8), prefixes=[4, 8], tokens=2, warmup=1, progress=False,
                           rounds=1, device="cuda", gpt2=False)
    assert rep["hardware"]["device"] == "cuda" and all(r["trm_full_ms"] > 0 for r in rep["rows"])
    torch.manual_seed(0)
    model = TRMLanguageModel(tiny_cfg()).eval()
    windows = torch.randint(0, 11, (2, 9))
    cpu = run_exit(model, windows, HaltPolicy.fixed(3))  # fixed depth: no threshold to flip
    gpu = run_exit(model.cuda(), windows, HaltPolicy.fixed(3))
    torch.testing.assert_close(gpu["nll"], cpu["nll"], atol=2e-2, rtol=2e-2)  # TF32 may be on (resolve_runtime)
