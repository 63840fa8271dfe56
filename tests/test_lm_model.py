"""LM model tests: cached decode == full recompute, L Jacobi sweeps == sequential decode, halting, KV size."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from trmlm.core import RecursionState
from trmlm.layers import AttnContext
from trmlm.lm.cache import KVCache
from trmlm.lm.config import LMConfig
from trmlm.lm.decode import decode_step, prefill, reference_logits, run_token_by_token, sequential_logits
from trmlm.lm.exits import ArgmaxExit, KLExit, OracleExit, RandomExit
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.model import TRMLanguageModel, build_model
from trmlm.lm.parallel import final_sweep_states, jacobi_logits, supervision_sweep
from trmlm.lm.stepsync import StepCaches, sequential_logits_sync

torch.set_num_threads(1)


def tiny_cfg(arch: str = "trm", commit_input: str = "x+y", **net) -> LMConfig:
    base = dict(vocab_size=17, seq_len=12, d_model=32, n_heads=4, n_layers=2, n_latent=2,
                n_cycles=2, max_sup_steps=3, puzzle_emb_len=0, swiglu_multiple=16)
    base.update(net)
    return LMConfig(arch=arch, model=dataclasses.replace(LMConfig().model, **base), commit_input=commit_input)


COMMIT_INPUTS = ["x+y", "x+y+z", "y", "x"]


def make(arch: str = "trm", seed: int = 0, commit_input: str = "x+y", **net):
    torch.manual_seed(seed)
    # float64: the equalities below are exact up to rounding; an untrained recursive net
    # amplifies fp32 rounding over a sequence (1e-4 after 8 tokens), fp64 keeps it at 1e-15.
    model = build_model(tiny_cfg(arch, commit_input, **net)).eval().double()
    if isinstance(model, TRMLanguageModel):
        # Give the halt head a real signal (its init is "never halt") so halting varies per token.
        with torch.no_grad():
            model.q_head.weight.normal_(0, 1.0)
            model.q_head.bias.zero_()
    return model


def tokens(B: int = 2, L: int = 9, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 17, (B, L), generator=g)


def test_prefix_attention_equals_plain_causal_pass():
    """f reading committed K/V + its own live K/V == f over the concatenation with a causal mask."""
    model = make()
    y = torch.randn(2, 6, 32, dtype=torch.float64)
    h = torch.randn(2, 1, 32, dtype=torch.float64)
    f = model.core.f
    full = f(torch.cat([y, h], 1), AttnContext(self_mask="causal", rope=model.rope(torch.arange(7))))
    prefix = model.commit_kv(torch.zeros_like(y), RecursionState(y, torch.zeros_like(y)),
                             torch.arange(6))  # x = 0 (and commit_input x+y): the commit input is y
    last = f(h, AttnContext(self_mask="diagonal", rope=model.rope(torch.tensor([6])), prefix=prefix))
    torch.testing.assert_close(last[:, 0], full[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["trm", "transformer", "transformer-iso"])
def test_cached_decode_equals_full_recompute(arch):
    model = make(arch)
    t = tokens()
    policy = HaltPolicy.fixed(3)
    cached, s1 = sequential_logits(model, t, policy)
    ref, s2 = reference_logits(model, t, policy)
    torch.testing.assert_close(cached, ref, atol=1e-10, rtol=1e-10)
    assert torch.equal(s1, s2)


@pytest.mark.parametrize("commit_input", COMMIT_INPUTS)
def test_cached_decode_equals_full_recompute_with_halting(commit_input):
    model = make(commit_input=commit_input)
    t = tokens(B=3)
    policy = HaltPolicy(max_steps=3, min_steps=1, threshold=0.5)
    cached, s1 = sequential_logits(model, t, policy)
    assert len(torch.unique(s1)) > 1, s1  # halting really varies the depth here
    ref, s2 = reference_logits(model, t, policy)
    assert torch.equal(s1, s2)
    torch.testing.assert_close(cached, ref, atol=1e-10, rtol=1e-10)
    # An oracle that shares no decode loop with the two above: L Jacobi sweeps of all positions
    # at once (parallel.jacobi_states) halt every token where sequential decoding did.
    par, s3 = jacobi_logits(model, t, sweeps=t.shape[1], policy=policy)
    assert torch.equal(s3, s1)
    torch.testing.assert_close(par, cached, atol=1e-10, rtol=1e-10)


def _told_targets(targets: torch.Tensor):
    """decode_step that tells an OracleExit each token's true successor (targets (B, L))."""
    it = iter(targets.T)

    def step(model, cache, token, policy):
        policy.target = next(it)
        return decode_step(model, cache, token, policy)

    return step


EXIT_RULES = {  # each makes steps vary on make()'s model and tokens(B=3, L=8)
    "fixed": lambda: HaltPolicy.fixed(2),
    "learned": lambda: HaltPolicy(max_steps=3, min_steps=1, threshold=0.5),
    "random": lambda: RandomExit(3, mean_depth=1.6, generator=torch.Generator().manual_seed(3)),
    "kl": lambda: KLExit(3, eps=0.2),
    "argmax": lambda: ArgmaxExit(3, patience=1),
    "oracle": lambda: OracleExit(3),
}


@pytest.mark.parametrize("rule", list(EXIT_RULES))
def test_L_jacobi_sweeps_equal_sequential_decode_for_every_exit_rule(rule):
    """Parallel prefill (jacobi_states) runs each exit rule through the same protocol as decoding:
    L sweeps give the sequential decode's logits and per-token steps."""
    model = make()
    t = tokens(B=3, L=8)
    successors = torch.roll(t, -1, dims=1)
    seq_rule, par_rule = EXIT_RULES[rule](), EXIT_RULES[rule]()
    if rule == "oracle":
        seq, seq_steps = run_token_by_token(_told_targets(successors), model, KVCache.for_model(model, 3, 8),
                                            t, seq_rule)
        par_rule.target = successors
    else:
        seq, seq_steps = sequential_logits(model, t, seq_rule)
    if rule != "fixed":
        assert len(torch.unique(seq_steps)) > 1, seq_steps  # the rule really exits early somewhere
    par, par_steps = jacobi_logits(model, t, sweeps=8, policy=par_rule)
    assert torch.equal(par_steps, seq_steps)
    torch.testing.assert_close(par, seq, atol=1e-10, rtol=1e-10)


def test_oracle_exit_refuses_a_target_of_the_wrong_shape():
    model = make()
    rule = OracleExit(3)
    with pytest.raises(ValueError, match="OracleExit needs .target"):
        jacobi_logits(model, tokens(B=3, L=8), sweeps=1, policy=rule)
    rule.target = torch.zeros(3, dtype=torch.long)  # one token per sequence: right for decoding only
    with pytest.raises(ValueError, match=r"3 x 8 tokens"):
        jacobi_logits(model, tokens(B=3, L=8), sweeps=1, policy=rule)


def test_L_jacobi_sweeps_equal_sequential_decode():
    model = make()
    t = tokens(L=8)
    policy = HaltPolicy.fixed(2)
    seq, _ = sequential_logits(model, t, policy)
    par, _ = jacobi_logits(model, t, sweeps=8, policy=policy)
    torch.testing.assert_close(par, seq, atol=1e-10, rtol=1e-10)
    # After m sweeps exactly the positions < m are exact; with fewer sweeps later ones differ.
    few, _ = jacobi_logits(model, t, sweeps=3, policy=policy)
    torch.testing.assert_close(few[:, :3], seq[:, :3], atol=1e-10, rtol=1e-10)
    assert (few[:, 3:] - seq[:, 3:]).abs().max() > 1e-4


def test_parallel_prefill_then_decode_matches_sequential():
    model = make()
    t = tokens(L=7)
    policy = HaltPolicy.fixed(2)
    seq, _ = sequential_logits(model, t, policy)
    cache = KVCache.for_model(model, 2)
    out, _ = prefill(model, cache, t[:, :6], policy, mode="parallel")
    torch.testing.assert_close(out.logits, seq[:, 5], atol=1e-10, rtol=1e-10)
    assert cache.pos == 6


def test_token_only_cache_prefills_in_one_pass_and_refines_the_last_prompt_token_alone():
    """commit_input "x": prefill is one causal commit pass plus the last prompt token's
    refinement; what follows decodes exactly as the token-by-token decoder, under learned
    halting, and a training sweep's refinement equals sequential decoding without any sweep."""
    model = make(commit_input="x")
    t = tokens(L=9)
    policy = HaltPolicy(max_steps=3, threshold=0.5)
    seq, seq_steps = sequential_logits(model, t, policy)
    cache = KVCache.for_model(model, 2)
    out, steps = prefill(model, cache, t[:, :5], policy)
    logits = [out.logits]
    for i in range(5, 9):
        out = decode_step(model, cache, t[:, i], policy)
        logits.append(out.logits)
    torch.testing.assert_close(torch.stack(logits, 1), seq[:, 4:], atol=1e-10, rtol=1e-10)
    assert torch.equal(steps[:, :4], torch.zeros_like(steps[:, :4]))
    assert torch.equal(steps[:, 4], seq_steps[:, 4]) and cache.pos == 9
    state = model.initial_state(2, 9)
    for _ in range(3):
        state = supervision_sweep(model, state, model.embed_tokens(t), grad="none")
    full, _ = sequential_logits(model, t, HaltPolicy.fixed(3))
    torch.testing.assert_close(model.logits(state.y), full, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("train_cache", ["previous_step", "final_sweep"])
def test_training_sweep_uses_strict_prefix(train_cache):
    """A training supervision step: position i's output must not depend on tokens > i."""
    model = make()
    t = tokens(B=1, L=8)
    t2 = t.clone()
    t2[0, 5:] = (t2[0, 5:] + 1) % 17
    outs = []
    for tt in (t, t2):
        x = model.embed_tokens(tt)
        committed = final_sweep_states(model, x, 3) if train_cache == "final_sweep" else None
        state = model.initial_state(1, 8)
        for _ in range(2):
            state = supervision_sweep(model, state, x, grad="none", committed=committed)
        outs.append(state.y)
    torch.testing.assert_close(outs[0][:, :5], outs[1][:, :5], atol=1e-10, rtol=1e-10)
    assert (outs[0][:, 5:] - outs[1][:, 5:]).abs().max() > 1e-3


def test_halting_disabled_equals_fixed_unroll_and_halting_varies_steps():
    model = make()
    t = tokens(B=2, L=10)
    off = HaltPolicy(max_steps=3, min_steps=1, threshold=None)
    logits_off, steps_off = sequential_logits(model, t, off)
    assert bool((steps_off == 3).all())
    # Fixed unroll by hand: 3 supervision steps of the core, no halting logic at all.
    cache = KVCache.for_model(model, 2)
    manual = []
    with torch.no_grad():
        for i in range(10):
            pos, prefix = cache.positions(1), cache.prefix()
            x = model.embed_tokens(t[:, i:i + 1])
            state = model.initial_state(2, 1)
            for _ in range(3):
                state = model.refine(state, x, pos, prefix, None, grad="none")
            cache.commit(model.commit_kv(x, state, pos, prefix))
            manual.append(model.logits(state.y)[:, 0])
    torch.testing.assert_close(logits_off, torch.stack(manual, 1), atol=1e-10, rtol=1e-10)
    _, steps_on = sequential_logits(model, t, HaltPolicy(max_steps=3, min_steps=1, threshold=0.5))
    assert len(torch.unique(steps_on)) > 1, steps_on
    # min_steps is honoured
    _, steps_min = sequential_logits(model, t, HaltPolicy(max_steps=3, min_steps=2, threshold=0.5))
    assert int(steps_min.min()) >= 2


def _storage_bytes(obj) -> int:
    """Bytes of every tensor storage an object holds in its attributes (lists included)."""
    seen = {}
    for value in vars(obj).values():
        for t in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(t, torch.Tensor):
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


@pytest.mark.parametrize("n_sup,n,T", [(1, 1, 1), (3, 2, 2), (16, 6, 3)])
def test_kv_bytes_per_token_independent_of_recursion_depth(n_sup, n, T):
    """Decode real tokens at full depth into a NaN-filled cache: what decoding writes per token is
    layers x (K, V) x D values whatever the depth, at positions < pos only, and nothing the cache
    holds grows."""
    model = make(max_sup_steps=n_sup, n_latent=n, n_cycles=T)
    cache = KVCache.for_model(model, batch=1)
    for buf in (cache.k, cache.v):
        buf.fill_(float("nan"))  # sentinel: every value a commit stores replaces one NaN
    held = _storage_bytes(cache)
    t = tokens(B=1, L=4)
    policy = HaltPolicy.fixed(n_sup)
    for i in range(4):
        out = decode_step(model, cache, t[:, i], policy)
        assert int(out.steps) == n_sup and cache.pos == i + 1
    written = [~buf.isnan() for buf in (cache.k, cache.v)]  # (layers, B, H, max_len, Dh)
    per_token = sum(int(w.sum()) for w in written) * cache.k.element_size() / 4
    assert per_token == 2 * 2 * 32 * 8 == cache.bytes_per_token()  # layers x (K, V) x D x fp64
    assert all(bool(w[..., :4, :].all()) and not bool(w[..., 4:, :].any()) for w in written)
    assert _storage_bytes(cache) == held


def test_cache_position_and_overflow():
    model = make()
    cache = KVCache.for_model(model, batch=1, max_len=3)
    policy = HaltPolicy.fixed(1)
    prefill(model, cache, tokens(B=1, L=3), policy)
    assert cache.pos == 3 and cache.free == 0
    with pytest.raises(ValueError):
        prefill(model, cache, tokens(B=1, L=1), policy)


@pytest.mark.parametrize("commit_input", COMMIT_INPUTS)
def test_step_synchronous_decode_equals_the_training_pass(commit_input):
    """The parallel estimate is the exact likelihood of the per-step-cache sequential decoder."""
    model = make(commit_input=commit_input)
    t = tokens(L=8)
    with torch.no_grad():
        x = model.embed_tokens(t)
        state = model.initial_state(2, 8)
        for _ in range(3):
            state = supervision_sweep(model, state, x, grad="none")
        parallel = model.logits(state.y)
    seq, steps = sequential_logits_sync(model, t, HaltPolicy.fixed(3))
    torch.testing.assert_close(seq, parallel, atol=1e-10, rtol=1e-10)
    assert StepCaches(model, 1).bytes_per_token() == 3 * KVCache.for_model(model, 1).bytes_per_token()


def test_halting_targets():
    """`correct`: label 1 where argmax is right; `improvement`: lagged Ouro label on q(y_{s-1})."""
    import torch.nn.functional as F

    from trmlm.lm.objective import halt_loss

    model = make()
    cfg = model.cfg
    y = torch.randn(1, 3, 32, dtype=torch.float64)
    logits = torch.zeros(1, 3, 17, dtype=torch.float64)
    logits[0, :, 4] = 1.0
    targets = torch.tensor([[4, 5, 4]])
    got = halt_loss(cfg, model, y, logits, targets, torch.zeros(1, 3), [], last=False)
    want = F.binary_cross_entropy_with_logits(model.halt_logit(y), torch.tensor([[1.0, 0.0, 1.0]]))
    torch.testing.assert_close(got, want)
    imp = dataclasses.replace(cfg, halt=dataclasses.replace(cfg.halt, target="improvement"))
    assert float(halt_loss(imp, model, y, logits, targets, torch.zeros(1, 3), [], last=False)) == 0.0
    prev_y, prev_ce, ce = torch.randn(1, 3, 32, dtype=torch.float64), torch.tensor([[2.0, 1.0, 1.0]]), torch.ones(1, 3)
    label = 1 - torch.sigmoid(50 * ((prev_ce - ce).clamp(min=0) - 0.005))  # big gain -> continue
    assert label[0, 0] < 0.01 and label[0, 1] > 0.5
    got = halt_loss(imp, model, y, logits, targets, ce, [(prev_y, prev_ce)], last=False)
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(model.halt_logit(prev_y), label))
    # `final`: only at the last step, every step's q against the full-depth loss: a step whose
    # loss is far above the final one learns "continue", the final step itself "halt".
    fin = dataclasses.replace(cfg, halt=dataclasses.replace(cfg.halt, target="final"))
    assert float(halt_loss(fin, model, y, logits, targets, ce, [(prev_y, prev_ce)], last=False)) == 0.0
    got = halt_loss(fin, model, y, logits, targets, ce, [(prev_y, prev_ce)], last=True)
    final_label = torch.full((1, 3), 1 - float(torch.sigmoid(torch.tensor(50 * -0.005))))
    want = (F.binary_cross_entropy_with_logits(model.halt_logit(prev_y), label)
            + F.binary_cross_entropy_with_logits(model.halt_logit(y), final_label)) / 2
    torch.testing.assert_close(got, want)


def test_per_step_cache_decoder_honours_the_oracle_exit():
    """The step-synchronous decoder predicts from the state the exit rule chose (the oracle's best
    step): same per-step caches as full depth, so its NLL can only be lower, token by token."""
    from trmlm.lm.stepsync import decode_step_sync

    model = make()
    t = tokens(B=3, L=8)
    successors = torch.cat([t[:, 1:], t[:, :1]], 1)  # the true next token of every position
    full, _ = sequential_logits_sync(model, t, HaltPolicy.fixed(3))
    it = iter(successors.T)

    def step(m, caches, token, policy):
        policy.target = next(it)
        return decode_step_sync(m, caches, token, policy)

    oracle, steps = run_token_by_token(step, model, StepCaches(model, 3, 8), t, OracleExit(3))

    def nll(logits):
        return -torch.log_softmax(logits, -1).gather(-1, successors[..., None])[..., 0]

    assert bool((nll(oracle) <= nll(full) + 1e-12).all())
    assert len(torch.unique(steps)) > 1 and bool((nll(oracle) < nll(full) - 1e-6).any())
