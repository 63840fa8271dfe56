"""hold_steps: after the N_sup supervision steps, k ~ U{0..hold_steps-1} steps without grad, then
one more step trained toward the final answer, so depth past N_sup keeps the answer
(docs/language-model.md, "Holding the answer past N_sup")."""

from __future__ import annotations

import pytest
import torch

from trmlm.cli.common import configs_dir
from trmlm.errors import TRMError
from trmlm.lm.config import load_lm_config
from trmlm.lm.parallel import loss_positions
from trmlm.lm.train import build_trainer


def _cfg(*extra: str):
    return load_lm_config("lm-tiny", [], ["data.task=arith", "data.task_eval_problems=20", "commit_input=x",
                                          "data.loss_on=target", "refine_on=loss", "model.max_sup_steps=3",
                                          "step_weights=equal", "updates=per_batch", "step_targets=true",
                                          "train.eval_every=1000", "train.warmup_steps=0", *extra], configs_dir())


def test_the_hold_step_trains_a_random_depth_past_n_sup_toward_the_answer(monkeypatch):
    import trmlm.lm.trm_batch as trm_batch

    trainer = build_trainer(_cfg("hold_steps=3"))
    grads: list[str] = []
    targets: list[torch.Tensor] = []
    real_refine, real_ce = trm_batch.refine_at, trm_batch.token_cross_entropy
    monkeypatch.setattr(trm_batch, "refine_at", lambda *a, grad: grads.append(grad) or real_refine(*a, grad=grad))
    monkeypatch.setattr(trm_batch, "token_cross_entropy", lambda lg, t, kind: targets.append(t) or real_ce(lg, t, kind))
    extras = set()
    for _ in range(12):
        grads.clear()
        targets.clear()
        batch, mask, step_batch = trainer._draw(4)
        trainer.train_batch(batch, mask, step_batch)
        # N_sup trained steps, then k untrained, then the trained hold step
        assert grads[:3] == ["last_cycle"] * 3 and grads[-1] == "last_cycle"
        extra = grads[3:-1]
        assert set(extra) <= {"none"} and len(extra) <= 2
        extras.add(len(extra))
        index, _ = loss_positions(mask)
        final = batch[:, 1:].gather(1, index)
        assert torch.equal(targets[-1], final)  # toward the answer, not an intermediate one
        assert not torch.equal(targets[0], final)  # (step 1 is trained toward the intermediate answers)
    assert extras == {0, 1, 2}  # every depth N_sup + 1 .. N_sup + hold_steps is trained


def test_without_hold_steps_only_the_n_sup_steps_run(monkeypatch):
    import trmlm.lm.trm_batch as trm_batch

    trainer = build_trainer(_cfg())
    grads: list[str] = []
    real = trm_batch.refine_at
    monkeypatch.setattr(trm_batch, "refine_at", lambda *a, grad: grads.append(grad) or real(*a, grad=grad))
    trainer.train_batch(*trainer._draw(4))
    assert grads == ["last_cycle"] * 3


def test_hold_from_starts_the_hold_step_part_way_through_the_run(monkeypatch):
    import trmlm.lm.trm_batch as trm_batch

    trainer = build_trainer(_cfg("hold_steps=1", "hold_from=0.5", "train.train_steps=10", "train.max_minutes=0"))
    grads: list[str] = []
    real = trm_batch.refine_at
    monkeypatch.setattr(trm_batch, "refine_at", lambda *a, grad: grads.append(grad) or real(*a, grad=grad))
    counts = []
    for _ in range(7):  # optimizer steps 0..6 of 10: progress 0.0 .. 0.6
        grads.clear()
        trainer.train_batch(*trainer._draw(4))
        counts.append(len(grads))
    assert counts == [3] * 5 + [4] * 2  # the hold step joins from progress 0.5 (step 5) on


@pytest.mark.parametrize("bad", [["hold_steps=-1"], ["hold_steps=2", "updates=per_step"],
                                 ["hold_from=0.5"], ["hold_steps=2", "hold_from=1.0"]])
def test_hold_steps_needs_per_batch_updates(bad):
    with pytest.raises(TRMError, match="hold_"):
        _cfg(*bad)
