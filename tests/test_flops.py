"""The analytic FLOP count agrees with torch's own FLOP counter on the matmuls of f."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from trmlm.config import TRMConfig
from trmlm.flops import f_forward_flops
from trmlm.puzzle.model import TRMPuzzleModel


@pytest.mark.parametrize("mixer", ["attention", "mlp"])
def test_f_flops_match_counter(mixer):
    cfg = TRMConfig(d_model=64, n_heads=4, seq_len=20, puzzle_emb_len=2, mixer=mixer,
                    pos_encoding="rope" if mixer == "attention" else "none", swiglu_multiple=8)
    model = TRMPuzzleModel(cfg)
    h = torch.randn(3, cfg.total_len, cfg.d_model)
    ctx = model.attn_context(h.device)
    # the math backend decomposes SDPA into bmm's, which the counter sees (the CPU flash kernel
    # is not registered with it)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model.core.f(h, ctx)
    assert counter.get_total_flops() == pytest.approx(f_forward_flops(cfg, 3), rel=1e-6)
