"""A cache_levels TRM is measured with its own decoder everywhere text is scored: the parallel
estimate is the level pass (equal to per-step sequential decoding at fixed depth), eval-lm's
sequential bits/char use the per-step cache, and the adaptive-compute bench decodes with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_checks import tiny_levels_lm

from trmlm.bench.adaptive import greedy_continuations, run_exit
from trmlm.lm.data import TokenData
from trmlm.lm.evaluate import _ce, evaluate_lm, parallel_estimate, sequential_eval
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.parallel import training_style_losses
from trmlm.lm.stepsync import sequential_logits_sync

torch.set_num_threads(1)


def _model(levels: int = 2, n_sup: int = 3):
    return tiny_levels_lm(levels, n_sup)


def _windows(n: int = 3, length: int = 12) -> torch.Tensor:
    return torch.randint(0, 17, (n, length + 1), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_the_parallel_estimate_is_the_level_decoder_at_every_step(levels):
    """Before, the estimate re-committed the previous step's states (three levels' scheme): with
    two levels it differed from step 3 on."""
    model, w = _model(levels), _windows()
    with torch.no_grad():
        per_step = training_style_losses(model, w[:, :-1], w[:, 1:], 3, _ce)
    for depth, ce in enumerate(per_step, start=1):
        logits, _ = sequential_logits_sync(model, w[:, :-1], HaltPolicy.fixed(depth))
        torch.testing.assert_close(ce, _ce(logits, w[:, 1:]), atol=1e-10, rtol=1e-10)


def test_eval_lm_scores_text_with_the_per_step_cache():
    """bits/char at full depth, sequential, equal the parallel estimate on the same windows; with
    the commit-last cache (what eval-lm used before) they do not."""
    model, w = _model(2), _windows(4)
    data = TokenData(train=np.zeros(2, dtype=np.int64), val=w.reshape(-1).numpy(), val_chars=w.numel(),
                     val_row_length=13)
    out = evaluate_lm(model, model.cfg, data, parallel_tokens=48, sequential_tokens=48, batch=2)
    assert out["decoder"] == "per-step"
    assert out["bpc_sequential_full_depth"] == pytest.approx(out["bpc_parallel_same_windows"], abs=1e-6)  # (CE in fp32)
    commit_last = sequential_eval(model, w, 2, HaltPolicy.fixed(3), per_step_cache=False)
    same = parallel_estimate(model, w, 2)
    assert abs(commit_last["nll_sequential"] - same["nll_parallel"]) > 1e-3


@pytest.mark.parametrize("rule", [HaltPolicy.fixed(3), HaltPolicy(max_steps=3, min_steps=1, threshold=0.5)])
def test_the_adaptive_bench_decodes_with_the_level_cache(rule):
    model, w = _model(2), _windows(2)
    run = run_exit(model, w, rule)
    logits, steps = sequential_logits_sync(model, w[:, :-1], rule)
    torch.testing.assert_close(run["nll"], _ce(logits, w[:, 1:]).reshape(-1), atol=1e-10, rtol=1e-10)
    assert torch.equal(run["steps"], steps.reshape(-1))


def test_greedy_continuations_follow_the_level_decoder():
    """Each continued token is the argmax of the level decoder teacher-forced on prompt + continuation."""
    model, w = _model(2), _windows(2)
    prompts = w[:, :5]
    cont = greedy_continuations(model, prompts, HaltPolicy.fixed(3), 6)
    logits, _ = sequential_logits_sync(model, torch.cat([prompts, cont[:, :-1]], 1), HaltPolicy.fixed(3))
    assert torch.equal(logits[:, 4:].argmax(-1), cont)
