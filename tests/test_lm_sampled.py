"""updates=sampled: one optimizer step per batch at a random supervision step (docs/language-model.md)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trmlm.cli.common import configs_dir
from trmlm.lm.config import load_lm_config
from trmlm.lm.data import TokenData
from trmlm.lm.model import build_model
from trmlm.lm.parallel import final_sweep_states, supervision_sweep
from trmlm.lm.tokenizer import CharTokenizer
from trmlm.lm.objective import halt_loss
from trmlm.lm.train import Trainer, train_from_config


def _cfg(*extra: str):
    return load_lm_config("lm-tiny", [], ["updates=sampled", "train_cache=final_sweep", "model.max_sup_steps=3",
                                          *extra], configs_dir())


def test_sampled_makes_one_update_per_batch_at_varying_depths(monkeypatch):
    cfg = _cfg("data.task=add-2", "data.task_eval_problems=20", "train.train_steps=12",
               "train.eval_every=1000", "halt.target=final")
    logs, real = [], Trainer.train_batch
    monkeypatch.setattr(Trainer, "train_batch", lambda self, *a: logs.append(real(self, *a)) or logs[-1])
    trainer, _ = train_from_config(cfg, None)
    assert trainer.step == 12 and len(logs) == 12  # 12 batches, one optimizer step each
    assert trainer.tokens_seen == 12 * cfg.train.batch_size * cfg.context
    depths = [log[0]["sup_step"] for log in logs]
    assert all(len(log) == 1 for log in logs) and set(depths) == {1, 2, 3}
    assert all(np.isfinite(log[0]["loss"]) and np.isfinite(log[0]["q_loss"]) for log in logs)


class _Fixed:
    """Stands in for the trainer's generator: always draws step `s`."""

    def __init__(self, s: int) -> None:
        self.s = s

    def integers(self, lo: int, hi: int) -> int:
        assert lo == 1 and hi == 4  # U{1..N_sup}
        return self.s


def test_sampled_trains_the_state_the_drawn_step_reaches():
    """The loss of the update at step s is the CE of s sweeps (the first s-1 without grad) reading
    the final_sweep states' commit: what the per-step scheme computes at its step s."""
    cfg = _cfg("halt.target=correct")
    tok = CharTokenizer(list("abcdefgh"))
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tok.vocab_size))
    torch.manual_seed(0)
    model = build_model(cfg)
    data = TokenData(train=np.zeros(0, np.int64), val=np.zeros(64, np.int64), val_chars=64)
    trainer = Trainer(cfg, model, tok, data)
    batch = torch.randint(0, tok.vocab_size, (4, cfg.context + 1))
    inp, tgt = batch[:, :-1], batch[:, 1:]
    with torch.no_grad():  # the reference, before the update changes the weights
        x = model.embed_tokens(inp)
        committed = final_sweep_states(model, x, 3)
        state, want = model.initial_state(*inp.shape), []
        for _ in range(3):
            state = supervision_sweep(model, state, x, committed=committed, grad="none")
            want.append(float(F.cross_entropy(model.logits(state.y).flatten(0, 1), tgt.flatten())))
    for s in (2, 1, 3):
        trainer.rng = _Fixed(s)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        log = trainer.train_batch(batch)
        assert len(log) == 1 and log[0]["sup_step"] == s
        assert log[0]["loss"] == pytest.approx(want[s - 1], rel=1e-5)
        model.load_state_dict(before)  # every case starts from the same weights
    assert trainer.step == 3  # one optimizer step per batch


def test_final_halt_labels_against_a_reference():
    """With `reference` (sampled never reaches N_sup) every state seen is labelled by its CE
    against the full-depth CE: the current step is not assumed to be the final one."""
    cfg = _cfg("halt.target=final", "halt.improvement_margin=0.0")
    model = build_model(cfg)
    y = torch.randn(1, 2, cfg.model.d_model)
    ref = torch.tensor([[1.0, 1.0]])
    ce_far = torch.tensor([[9.0, 1.0]])  # token 0 is far above the reference, token 1 at it
    loss = halt_loss(cfg, model, y, None, None, ce_far, [], last=False, reference=ref)
    cont = torch.sigmoid(cfg.halt.improvement_scale * torch.tensor([[8.0, 0.0]]))
    want = F.binary_cross_entropy_with_logits(model.halt_logit(y), 1.0 - cont)
    assert float(loss.detach()) == pytest.approx(float(want.detach()))
    assert float(halt_loss(cfg, model, y, None, None, ce_far, [], last=False)) == 0.0  # no reference: no label


@pytest.mark.parametrize("extra,match", [(["step_weights=last"], "step_weights applies"),
                                         (["train_cache=previous_step", "halt.target=final"], "needs train_cache")])
def test_sampled_refuses_what_it_cannot_do(extra, match):
    with pytest.raises(Exception, match=match):
        _cfg(*extra)
