"""refine_on "loss": training refines only the positions that carry loss (docs/language-model.md,
"Refining only where the loss is")."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from trmlm.cli.common import configs_dir
from trmlm.lm.config import load_lm_config
from trmlm.lm.data import TokenData
from trmlm.lm.model import build_model
from trmlm.lm.parallel import commit_pass, loss_positions, refine_at, supervision_sweep, take_positions
from trmlm.lm.tokenizer import CharTokenizer
from trmlm.lm.train import Trainer

MASK = torch.tensor([[0, 1, 1, 0, 0, 0, 1, 0],
                     [0, 0, 0, 0, 0, 0, 0, 0],
                     [1, 0, 0, 0, 1, 1, 1, 1]], dtype=torch.bool)


def test_loss_positions_gathers_each_rows_positions_in_order():
    index, valid = loss_positions(MASK)
    assert index.tolist() == [[1, 2, 6, 0, 0], [0, 0, 0, 0, 0], [0, 4, 5, 6, 7]]
    assert valid.tolist() == [[True, True, True, False, False], [False] * 5, [True] * 5]
    index, valid = loss_positions(torch.zeros(2, 4, dtype=torch.bool))
    assert index.shape == (2, 1) and not bool(valid.any())


def _model(*extra: str):
    cfg = load_lm_config("lm-tiny", [], ["commit_input=x", "model.max_sup_steps=3", *extra], configs_dir())
    tok = CharTokenizer(list("abcdefgh"))
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tok.vocab_size))
    torch.manual_seed(0)
    return cfg, tok, build_model(cfg)


def test_refine_at_equals_the_full_sweep_at_the_gathered_positions():
    """Each gathered position reads the tokens' cache strictly to its left and its own live K/V,
    with its own RoPE angle: the same states as the sweep over every position."""
    _, _, model = _model()
    model.eval()
    L = model.cfg.context
    tokens = torch.randint(0, model.cfg.model.vocab_size, (3, L), generator=torch.Generator().manual_seed(2))
    mask = torch.rand(3, L, generator=torch.Generator().manual_seed(3)) < 0.4
    index, valid = loss_positions(mask)
    with torch.no_grad():
        x = model.embed_tokens(tokens)
        kvs = commit_pass(model, x, model.initial_state(3, L), grad=False)
        full, at = model.initial_state(3, L), model.initial_state(*index.shape)
        for _ in range(3):
            full = supervision_sweep(model, full, x, grad="none", kvs=kvs)
            at = refine_at(model, at, take_positions(x, index), index, kvs, grad="none")
    want = take_positions(full.y, index)
    torch.testing.assert_close(at.y[valid], want[valid], atol=1e-5, rtol=1e-5)
    assert int(valid.sum()) == int(mask.sum()) > 0


def _trainer(refine_on: str, updates: str, step_weights: str) -> tuple[Trainer, torch.Tensor, torch.Tensor]:
    cfg, tok, model = _model("data.loss_on=target", f"refine_on={refine_on}", f"updates={updates}",
                             f"step_weights={step_weights}", "train.halt_loss_weight=0", "train.lr=1e-2",
                             "train.warmup_steps=0")
    data = TokenData(train=np.zeros(0, np.int64), val=np.zeros(64, np.int64), val_chars=64)
    gen = torch.Generator().manual_seed(1)
    batch = torch.randint(0, tok.vocab_size, (4, cfg.context + 1), generator=gen)
    mask = torch.rand(4, cfg.context, generator=gen) < 0.3
    mask[1] = False  # a row with no loss at all
    return Trainer(cfg, model, tok, data), batch, mask


@pytest.mark.parametrize("updates,step_weights", [("per_step", "last"), ("per_step", "equal"),
                                                   ("per_batch", "linear")])
def test_refining_only_the_loss_positions_trains_the_same_weights(updates, step_weights):
    """One batch of real optimizer steps from the same start: refining every position and
    refining only those with loss leave the same parameters (halting loss off: its mean runs over
    different positions by design)."""
    runs = []
    for refine_on in ("all", "loss"):
        trainer, batch, mask = _trainer(refine_on, updates, step_weights)
        logs = trainer.train_batch(batch, mask)
        runs.append(({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, logs))
    (all_w, all_logs), (loss_w, loss_logs) = runs
    for k in all_w:
        torch.testing.assert_close(loss_w[k], all_w[k], atol=2e-5, rtol=1e-4)
    trainer, _, _ = _trainer("all", updates, step_weights)
    moved = sum(int(not torch.equal(trainer.model.state_dict()[k], all_w[k])) for k in all_w)
    assert moved > 5  # the batch did train
    assert [round(r["loss"], 5) for r in loss_logs] == [round(r["loss"], 5) for r in all_logs]


def test_refine_on_loss_is_refused_where_it_would_not_be_exact():
    for extra in (["commit_input=x+y+z"], ["data.loss_on=all"], ["updates=sampled", "step_weights=equal"]):
        with pytest.raises(Exception, match="refine_on=loss"):
            load_lm_config("lm-tiny", [], ["commit_input=x", "data.loss_on=target", "refine_on=loss", *extra],
                           configs_dir())
