"""The LM trainer's clocks: timed validations, and the one collective per batch in which the ranks
agree when to stop, when to validate and (with a decaying lr) the clock the decay reads."""

import pytest


@pytest.mark.parametrize("every,expected", [(0.0, [4]), (1e-9, [2, 4])])  # lm-tiny: N_sup 2 steps a batch
def test_lm_timed_validations(every, expected):
    """train.eval_every_minutes validates the LM at the first step after each multiple of the budget
    clock (here: every batch), beside eval_every; 0 = only the final validation."""
    from trmlm.cli.common import configs_dir
    from trmlm.lm.config import load_lm_config
    from trmlm.lm.train import train_from_config

    cfg = load_lm_config("lm-tiny", [], ["train.train_steps=4", "train.eval_every=1000",
                                         f"train.eval_every_minutes={every}"], configs_dir())
    trainer, _ = train_from_config(cfg, None)
    assert [h["step"] for h in trainer.history] == expected


@pytest.mark.parametrize("decay", [0.0, 0.5])
def test_lm_trainer_agrees_on_its_clocks_once_per_batch(monkeypatch, decay):
    """Under several processes every `dist.agree` is an all-reduce: the minutes budget, the timed
    validation and, with a decaying lr, the clock the decay reads are agreed over ranks in one call
    per batch (plus one before the loop), not once per check (the loop, each of the N_sup steps,
    each validation), and no other small collective runs beside it."""
    from trmlm.cli.common import configs_dir
    from trmlm.distributed import DistContext
    from trmlm.lm.config import load_lm_config
    from trmlm.lm.train import train_from_config

    calls, means = [], []
    real = DistContext.agree
    monkeypatch.setattr(DistContext, "agree", lambda self, clock, flags: calls.append(list(flags))
                        or real(self, clock, flags))
    monkeypatch.setattr(DistContext, "all_reduce_mean_", lambda self, tensors: means.append(len(tensors)))
    cfg = load_lm_config("lm-tiny", [], ["train.train_steps=8", "train.eval_every=1000", "train.max_minutes=60",
                                         "train.eval_every_minutes=1e-9", f"train.lr_decay_frac={decay}"],
                         configs_dir())
    trainer, _ = train_from_config(cfg, None)
    batches = 8 // cfg.model.max_sup_steps
    assert trainer.step == 8 and len(calls) == batches + 1 and means == []
    assert all(len(f) == 2 and not f[0] for f in calls)  # [out of time, timed validation due]
    assert [h["step"] for h in trainer.history] == [2, 4, 6, 8]  # a timed validation after every batch
    calls.clear()  # a run budgeted in steps only has nothing to agree on
    cfg = load_lm_config("lm-tiny", [], ["train.train_steps=8", "train.eval_every=1000", "train.max_minutes=0",
                                         "train.eval_every_minutes=0", f"train.lr_decay_frac={decay}"], configs_dir())
    trainer, _ = train_from_config(cfg, None)
    assert trainer.step == 8 and calls == [] and means == []
