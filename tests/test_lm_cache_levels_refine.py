"""refine_on "loss" with a state cache (cache_levels): only the positions that carry loss are
refined; the others keep their initial state and are committed as such, in training (gathered
positions, put back among the initial states before each level's commit) and in decoding (the
prompt before its last token is not refined)."""

from __future__ import annotations

import pytest
import torch
from model_checks import DigitChars, tiny_levels_lm

from trmlm.cli.common import configs_dir
from trmlm.core import RecursionState
from trmlm.errors import TRMError
from trmlm.lm.calibrate import CalibrationConfig, calibrate_halting
from trmlm.lm.config import DataConfig, LMConfig, load_lm_config
from trmlm.lm.exits import OracleExit
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.parallel import level_states, loss_positions, put_positions, take_positions
from trmlm.lm.stepsync import StepCaches, prefill_into, sequential_logits_sync
from trmlm.lm.train import build_trainer
from trmlm.losses import token_cross_entropy

torch.set_num_threads(1)


def _model(refine_on: str = "loss"):
    return tiny_levels_lm(2, refine_on=refine_on)


def _tokens_and_mask():
    t = torch.randint(0, 17, (2, 10), generator=torch.Generator().manual_seed(1))
    refine = torch.zeros(2, 9, dtype=torch.bool)
    refine[0, 4:] = True  # a prompt of 5 tokens: its last one and what follows are refined
    refine[1, 2:7] = True
    return t, refine


def test_put_positions_inverts_take_positions_with_padding_at_position_0():
    mask = torch.tensor([[True, False, True, False], [False, False, False, True]])
    index, valid = loss_positions(mask)  # row 1's padding points at position 0
    full = RecursionState(torch.zeros(2, 4, 3), torch.zeros(2, 4, 3))
    part = RecursionState(torch.randn(2, 2, 3), torch.randn(2, 2, 3))
    out = put_positions(full, index, valid, part)
    torch.testing.assert_close(take_positions(out.y, index)[valid], part.y[valid])
    assert bool((out.y[~mask] == 0).all()) and bool((out.z[~mask] == 0).all())


def test_the_decoder_refines_the_loss_positions_alone_and_is_the_level_pass():
    model, (t, refine) = _model(), _tokens_and_mask()
    with torch.no_grad():
        states = level_states(model, model.embed_tokens(t[:, :-1]), 3, refine)
        everywhere = level_states(model, model.embed_tokens(t[:, :-1]), 3)
    logits, steps = sequential_logits_sync(model, t[:, :-1], HaltPolicy.fixed(3), refine=refine)
    torch.testing.assert_close(logits[refine], model.logits(states[-1].y)[refine], atol=1e-10, rtol=1e-10)
    assert torch.equal(steps, torch.where(refine, 3, 0))
    # refining the prompt too is another model: the test can tell them apart
    assert not torch.allclose(model.logits(everywhere[-1].y)[refine], logits[refine])


def test_prefill_refines_the_last_prompt_token_alone():
    model, (t, _) = _model(), _tokens_and_mask()
    prompt = t[:, :5]
    out, steps = prefill_into(model, StepCaches(model, 2, 12), prompt, HaltPolicy.fixed(3))
    refine = torch.zeros(2, 5, dtype=torch.bool)
    refine[:, -1] = True
    want, _ = sequential_logits_sync(model, prompt, HaltPolicy.fixed(3), refine=refine)
    torch.testing.assert_close(out.logits, want[:, -1], atol=1e-10, rtol=1e-10)
    assert steps[:, :-1].sum() == 0 and bool((steps[:, -1] == 3).all())


def test_the_training_batch_refines_the_loss_positions_among_initial_states():
    """The trainer's per-step cross-entropies (one update per batch) are the level pass's with
    only the loss positions refined, not the pass that refines every position."""
    cfg = load_lm_config("lm-tiny", [], ["data.task=add-2", "data.task_eval_problems=20", "data.loss_on=target",
                                         "commit_input=x+y+z", "model.max_sup_steps=3", "updates=per_batch",
                                         "cache_levels=2", "refine_on=loss", "train.eval_every=1000",
                                         "train.warmup_steps=0"], configs_dir())
    trainer = build_trainer(cfg)
    batch, mask, _ = trainer._draw(4)
    inp, tgt = batch[:, :-1], batch[:, 1:]
    model = trainer.model

    def per_step(refine):
        with torch.no_grad():
            states = level_states(model, model.embed_tokens(inp), 3, refine)
            return [float(token_cross_entropy(model.logits(s.y), tgt, cfg.train.loss)[mask].mean()) for s in states]

    want, everywhere = per_step(mask), per_step(None)
    logs = trainer.train_batch(batch, mask)
    assert [log["loss"] for log in logs] == pytest.approx(want, rel=1e-5)
    assert everywhere[-1] != pytest.approx(want[-1], rel=1e-3)


def test_refine_on_loss_needs_the_token_cache_or_levels():
    with pytest.raises(ValueError, match="refine_on=loss"):
        LMConfig(commit_input="x+y+z", refine_on="loss", data=DataConfig(loss_on="target"))
    assert LMConfig(commit_input="x+y+z", refine_on="loss", cache_levels=2,
                    data=DataConfig(loss_on="target")).refine_on == "loss"


def test_calibration_of_such_a_model_needs_the_scored_positions():
    model, (t, refine) = _model(), _tokens_and_mask()
    with pytest.raises(TRMError, match="scored"):
        calibrate_halting(model, t, CalibrationConfig(rounds=1, iters=1))
    report = calibrate_halting(model, t, CalibrationConfig(rounds=1, iters=1), scored=refine)
    assert report["rounds"][0]["tokens"] == refine.numel()


def test_scoring_refines_the_answers_alone():
    """Teacher-forced, a position is refined when its next token is in the target (the last
    prompt token onward): the positions predicting prompt characters take no steps."""
    from trmlm.lm.tasks import get_task
    from trmlm.lm.tasks.score import score_task


    task = get_task("add-1")
    examples = task.examples(4, seed=3)
    out = score_task(_model(), DigitChars(), task, examples, HaltPolicy.fixed(3), batch=4)
    assert out["steps_per_category"]["prompt"] == 0.0 and out["steps_hard"] == 3.0
    every = score_task(_model("all"), DigitChars(), task, examples, HaltPolicy.fixed(3), batch=4)
    assert every["steps_per_category"]["prompt"] == 3.0
    # the oracle exit (teacher-forced only), whose choice needs a step taken: the prompt's rows take none
    oracle = score_task(_model(), DigitChars(), task, examples, OracleExit(3), batch=4, greedy=False)
    assert oracle["steps_per_category"]["prompt"] == 0.0 and 1.0 <= oracle["steps_hard"] <= 3.0
