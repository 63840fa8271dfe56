"""refine_on "cached" with a two-level state cache: a position without loss is refined for the
one step whose state the cache stores, the positions with loss to full depth. Later tokens read
an earlier token only through its first cache_levels - 1 steps, so this is the model refine_on
"all" trains and decodes (the same gradients, the same answers) at less of its cost; refine_on
"loss" (no step at all for the operands) is another model."""

from __future__ import annotations

import copy

import pytest
import torch
from model_checks import DigitChars, tiny_levels_lm

from trmlm.cli.common import configs_dir
from trmlm.lm.config import DataConfig, LMConfig, load_lm_config
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.parallel import level_states
from trmlm.lm.stepsync import StepCaches, prefill_into, sequential_logits_sync
from trmlm.lm.train import build_trainer

torch.set_num_threads(1)


def _as(model, refine_on: str):
    """The same weights read as another refine_on."""
    other = copy.deepcopy(model)
    other.cfg.refine_on = refine_on
    return other


def _tokens_and_refine():
    t = torch.randint(0, 17, (2, 10), generator=torch.Generator().manual_seed(1))
    refine = torch.zeros(2, 9, dtype=torch.bool)
    refine[0, 4:] = True  # a prompt of 5 tokens: its last one and what follows are refined in full
    refine[1, 2:7] = True
    return t, refine


def test_the_decoder_gives_refine_all_answers_with_one_step_per_prompt_token():
    model, (t, refine) = tiny_levels_lm(2, refine_on="cached"), _tokens_and_refine()
    logits, steps = sequential_logits_sync(model, t[:, :-1], HaltPolicy.fixed(3), refine=refine)
    every, _ = sequential_logits_sync(_as(model, "all"), t[:, :-1], HaltPolicy.fixed(3))
    none, _ = sequential_logits_sync(_as(model, "loss"), t[:, :-1], HaltPolicy.fixed(3), refine=refine)
    torch.testing.assert_close(logits[refine], every[refine], atol=1e-10, rtol=1e-10)
    assert torch.equal(steps, torch.where(refine, 3, 1))
    assert not torch.allclose(logits[refine], none[refine])  # the operands' one step matters
    with torch.no_grad():  # the parallel level pass is the same decoder
        states = level_states(model, model.embed_tokens(t[:, :-1]), 3, refine)
    torch.testing.assert_close(model.logits(states[-1].y)[refine], logits[refine], atol=1e-10, rtol=1e-10)


def test_prefill_refines_the_prompt_one_step_and_its_last_token_in_full():
    model, (t, _) = tiny_levels_lm(2, refine_on="cached"), _tokens_and_refine()
    out, steps = prefill_into(model, StepCaches(model, 2, 12), t[:, :5], HaltPolicy.fixed(3))
    want, _ = sequential_logits_sync(_as(model, "all"), t[:, :5], HaltPolicy.fixed(3))
    torch.testing.assert_close(out.logits, want[:, -1], atol=1e-10, rtol=1e-10)
    assert bool((steps[:, :-1] == 1).all()) and bool((steps[:, -1] == 3).all())


def _gradients(refine_on: str) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    """One training batch's per-step losses and the gradient of its one update (the halting
    loss off: refine_on all trains the halting head on every position, cached on the answers)."""
    cfg = load_lm_config("lm-tiny", [], [
        "data.task=add-2", "data.task_eval_problems=20", "data.loss_on=target", "commit_input=x+y+z",
        "model.max_sup_steps=3", "updates=per_batch", "cross_grad=true", "step_weights=linear",
        "step_targets=true", "cache_levels=2", f"refine_on={refine_on}", "train.halt_loss_weight=0",
        "train.eval_every=1000"], configs_dir())
    trainer = build_trainer(cfg)
    trainer._update = lambda loss: loss.backward()
    batch, mask, step_batch = trainer._draw(4)
    logs = trainer.train_batch(batch, mask, step_batch)
    return logs, {k: p.grad.clone() for k, p in trainer.model.named_parameters() if p.grad is not None}


def test_the_training_batch_has_the_gradients_of_refining_every_position():
    (logs, grads), (all_logs, all_grads) = _gradients("cached"), _gradients("all")
    assert [g["loss"] for g in logs] == pytest.approx([g["loss"] for g in all_logs], rel=1e-5)
    assert grads.keys() == all_grads.keys() and len(grads) > 5
    for k in grads:
        torch.testing.assert_close(grads[k], all_grads[k], atol=1e-6, rtol=1e-4, msg=k)
    _, loss_grads = _gradients("loss")  # the operands left unrefined: other gradients
    assert not torch.allclose(loss_grads["core.f.blocks.0.attn.qkv.weight"],
                              grads["core.f.blocks.0.attn.qkv.weight"], atol=1e-6)


def test_cached_needs_two_levels_and_the_loss_on_the_answers():
    with pytest.raises(ValueError, match="refine_on=cached"):
        LMConfig(commit_input="x+y+z", refine_on="cached", cache_levels=1, data=DataConfig(loss_on="target"))
    with pytest.raises(ValueError, match="refine_on=cached"):
        LMConfig(commit_input="x+y+z", refine_on="cached", cache_levels=2)
    cfg = LMConfig(commit_input="x+y+z", refine_on="cached", cache_levels=2, data=DataConfig(loss_on="target"))
    assert cfg.unscored_steps == 1 and LMConfig().unscored_steps is None


def test_scoring_charges_a_prompt_position_its_one_step():
    from trmlm.lm.tasks import get_task
    from trmlm.lm.tasks.score import score_task

    task = get_task("add-1")
    examples = task.examples(4, seed=3)
    model = tiny_levels_lm(2, refine_on="cached")
    out = score_task(model, DigitChars(), task, examples, HaltPolicy.fixed(3), batch=4)
    every = score_task(_as(model, "all"), DigitChars(), task, examples, HaltPolicy.fixed(3), batch=4)
    assert out["steps_per_category"]["prompt"] == 1.0 and out["steps_hard"] == 3.0
    assert out["exact_acc"] == every["exact_acc"] and out["token_acc"]["answer"] == every["token_acc"]["answer"]
