"""cache_levels k: supervision step s reads the commit of the earlier tokens' states after
min(s - 1, k - 1) steps, in training and in the step-synchronous decoder, whose KV memory is k
levels whatever the depth (docs/language-model.md, "A state cache with a fixed number of levels")."""

from __future__ import annotations

import pytest
import torch
from model_checks import DigitChars, tiny_levels_lm

from trmlm.cli.common import configs_dir
from trmlm.lm.cache import KVCache
from trmlm.lm.checkpoint import default_generation
from trmlm.lm.config import LMConfig, load_lm_config
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.parallel import supervision_sweep
from trmlm.lm.stepsync import StepCaches, sequential_logits_sync
from trmlm.lm.tasks import get_task
from trmlm.lm.tasks.score import score_task
from trmlm.lm.train import build_trainer
from trmlm.losses import token_cross_entropy

torch.set_num_threads(1)


def _model(levels: int, n_sup: int = 3, commit_input: str = "x+y+z"):
    return tiny_levels_lm(levels, n_sup, commit_input)


def _levels_pass(model, tokens: torch.Tensor, depth: int, levels: int):
    """Reference: the parallel pass where step s + 1 reads the commit of the states after
    min(s, levels - 1) steps (levels 0 = every step reads the previous one)."""
    x = model.embed_tokens(tokens)
    states = [model.initial_state(*tokens.shape)]
    for s in range(depth):
        read = states[min(s, levels - 1)] if levels else states[s]
        states.append(supervision_sweep(model, states[s], x, grad="none", committed=read))
    return model.logits(states[-1].y)


@pytest.mark.parametrize("levels,depth", [(1, 3), (2, 3), (2, 6), (3, 3), (3, 5)])
def test_the_level_decoder_is_the_training_pass_token_by_token(levels, depth):
    """Depth past N_sup (6 > 3) reads the last level, in both."""
    model = _model(levels)
    t = torch.randint(0, 17, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        parallel = _levels_pass(model, t, depth, levels)
    seq, steps = sequential_logits_sync(model, t, HaltPolicy.fixed(depth))
    torch.testing.assert_close(seq, parallel, atol=1e-10, rtol=1e-10)
    assert bool((steps == depth).all())


def test_two_levels_are_not_the_previous_step_scheme():
    """From step 3 on, two levels read the states after one step, not after two."""
    model = _model(2)
    t = torch.randint(0, 17, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert not torch.allclose(_levels_pass(model, t, 3, 2), _levels_pass(model, t, 3, 0))
        torch.testing.assert_close(_levels_pass(model, t, 2, 2), _levels_pass(model, t, 2, 0))


@pytest.mark.parametrize("n_sup", [3, 6])
def test_kv_memory_is_the_levels_whatever_the_depth(n_sup):
    model = _model(2, n_sup=n_sup)
    assert StepCaches(model, 1).bytes_per_token() == 2 * KVCache.for_model(model, 1).bytes_per_token()
    assert StepCaches(_model(0, n_sup=n_sup), 1).bytes_per_token() == n_sup * KVCache.for_model(model, 1).bytes_per_token()


def test_per_step_updates_train_with_levels():
    """An update after every step: each step past the levels commits afresh (the graph of the
    last level's commit does not outlive an update)."""
    cfg = load_lm_config("lm-tiny", [], ["data.task=add-2", "data.task_eval_problems=20", "commit_input=x+y+z",
                                         "model.max_sup_steps=3", "updates=per_step", "cache_levels=2",
                                         "train.eval_every=1000", "train.warmup_steps=0"], configs_dir())
    trainer = build_trainer(cfg)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    logs = trainer.train_batch(*trainer._draw(4)[:2])
    assert [log["sup_step"] for log in logs] == [1, 2, 3]
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_the_training_batch_reads_the_levels():
    """The trainer's per-step cross-entropies (one update per batch, so one set of weights) are
    the reference pass's, step by step."""
    cfg = load_lm_config("lm-tiny", [], ["data.task=add-2", "data.task_eval_problems=20", "commit_input=x+y+z",
                                         "model.max_sup_steps=3", "updates=per_batch", "cache_levels=2",
                                         "train.eval_every=1000", "train.warmup_steps=0"], configs_dir())
    trainer = build_trainer(cfg)
    batch, mask, _ = trainer._draw(4)
    inp, tgt = batch[:, :-1], batch[:, 1:]
    model = trainer.model
    with torch.no_grad():
        x = model.embed_tokens(inp)
        states = [model.initial_state(*inp.shape)]
        want = []
        for s in range(3):
            states.append(supervision_sweep(model, states[s], x, grad="none", committed=states[min(s, 1)]))
            ce = token_cross_entropy(model.logits(states[-1].y), tgt, cfg.train.loss)
            want.append(float(ce.mean() if mask is None else ce[mask].mean()))
    logs = trainer.train_batch(batch, mask)
    assert [log["loss"] for log in logs] == pytest.approx(want, rel=1e-5)
    with torch.no_grad():  # the previous-step scheme's third step differs: the test can tell them apart
        third = supervision_sweep(model, states[2], x, grad="none")
    assert not torch.allclose(third.y, states[3].y)


def test_a_levels_checkpoint_is_scored_and_sampled_with_its_own_decoder(monkeypatch):
    """Its own decoder by default; KV bytes and FLOPs per answer count one commit per level."""
    import trmlm.lm.tasks.score as score

    commits = []
    real = score.flops_per_token

    def counting(model, steps, keys, commits_per_token=1):
        commits.append(commits_per_token)
        return real(model, steps, keys, commits_per_token)

    monkeypatch.setattr(score, "flops_per_token", counting)
    model = _model(2)
    assert default_generation(model.cfg).cache == "per-step"
    assert default_generation(_model(0).cfg).cache == "commit-last"


    task = get_task("add-1")
    examples = task.examples(4, seed=3)
    policy = HaltPolicy.fixed(3)
    own = score_task(model, DigitChars(), task, examples, policy, batch=4)
    assert set(commits) == {2}  # one commit pass per level and token
    levels = score_task(model, DigitChars(), task, examples, policy, batch=4, per_step_cache=True)
    commits.clear()
    last = score_task(model, DigitChars(), task, examples, policy, batch=4, per_step_cache=False)
    assert set(commits) == {1}
    assert own["token_acc"] == levels["token_acc"]
    rung = own["per_rung"]["add-1"]
    assert rung["kv_bytes_per_answer"] == 2 * last["per_rung"]["add-1"]["kv_bytes_per_answer"]


def test_cache_levels_need_a_state_cache_and_the_previous_step_scheme():
    for extra in ({"commit_input": "x"}, {"train_cache": "final_sweep"}, {"updates": "sampled"}):
        with pytest.raises(ValueError, match="cache_levels"):
            LMConfig(cache_levels=2, **{"commit_input": "x+y", **extra})
    with pytest.raises(ValueError, match="cache_levels"):
        LMConfig(cache_levels=LMConfig().model.max_sup_steps + 1)  # more levels than N_sup
    assert LMConfig(cache_levels=2).cache_levels == 2  # the default state cache and scheme


def test_calibration_reads_the_level_decoders_states():
    """calibrate-halt fits the head on the states decoding reaches: with levels, the level
    decoder's at full depth (its last step's logits are the decoder's)."""
    from trmlm.lm.calibrate import step_states

    model = _model(2)
    t = torch.randint(0, 17, (2, 9), generator=torch.Generator().manual_seed(1))
    ys, _, _ = step_states(model, t[:, :-1], t[:, 1:], 3, HaltPolicy.fixed(3), sweeps=8)
    seq, _ = sequential_logits_sync(model, t[:, :-1], HaltPolicy.fixed(3))
    torch.testing.assert_close(model.logits(ys[-1]), seq, atol=1e-10, rtol=1e-10)
