"""`train.compile`: the torch.compile'd network computes what the eager one does (slow: compiles)."""

import pytest
import torch

from trmlm.puzzle.act import act_step, new_carry
from trmlm.config import TRMConfig
from trmlm.puzzle.model import TRMPuzzleModel


@pytest.mark.slow
def test_compiled_f_matches_eager():
    torch.manual_seed(0)
    cfg = TRMConfig(d_model=32, n_heads=2, seq_len=16, vocab_size=6, n_latent=1, n_cycles=2,
                    max_sup_steps=2, puzzle_emb_len=0)
    model = TRMPuzzleModel(cfg)
    batch = {"inputs": torch.randint(1, 6, (4, 16)), "labels": torch.randint(1, 6, (4, 16))}
    _, eager = act_step(model, new_carry(model, batch))
    model.core.f.compile()
    _, compiled = act_step(model, new_carry(model, batch))
    torch.testing.assert_close(compiled.loss, eager.loss, rtol=1e-4, atol=1e-5)
    assert set(model.state_dict()) == set(TRMPuzzleModel(cfg).state_dict())  # names unchanged
