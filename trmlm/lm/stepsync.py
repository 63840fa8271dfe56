"""Step-synchronous decoding, one cache level per supervision step: the training pass token by token."""

from __future__ import annotations

import torch
from torch import Tensor

from trmlm.lm.cache import KVCache
from trmlm.lm.decode import DecodeOut, decode_step, prefill, run_token_by_token
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.model import LanguageModel, TRMLanguageModel


class StepCaches:
    """levels[s] holds, per token, the commit of its state after s supervision steps
    (s = 0 .. k - 1, k = LMConfig.cache_levels or N_sup); supervision step s + 1 of a later token
    reads levels[min(s, k - 1)], as training's step s + 1 does (so depth past N_sup reads the last)."""

    def __init__(self, model: TRMLanguageModel, batch: int, max_len: int | None = None) -> None:
        count = model.cfg.cache_levels or model.cfg.model.max_sup_steps
        self.levels = [KVCache.for_model(model, batch, max_len) for _ in range(count)]

    def level(self, step: int) -> KVCache:
        """The level supervision step `step` (1, 2, ...) reads."""
        return self.levels[min(step, len(self.levels)) - 1]

    @property
    def pos(self) -> int:
        return self.levels[0].pos

    @property
    def free(self) -> int:
        return self.levels[0].free

    @property
    def commits_per_token(self) -> int:
        """Commit passes (calls of f) per decoded token: one per level."""
        return len(self.levels)

    def bytes_per_token(self) -> int:
        return sum(level.bytes_per_token() for level in self.levels)


@torch.no_grad()
def decode_step_sync(model: TRMLanguageModel, caches: StepCaches, token: Tensor, policy: HaltPolicy,
                     refine: Tensor | None = None) -> DecodeOut:
    """Feed one token (B,): supervision step s reads level min(s, k) - 1 of the earlier tokens (what
    training's step s reads: the commit of y^(s-1), or with cache_levels k of y^(min(s-1, k-1)));
    then its states are committed level by level.
    A token that halts after h steps commits its last state to the levels above h (the "latest
    step" fallback), so with halting this is no longer the training pass exactly.
    `refine` (B,) bool: rows whose token is not refined (a prompt token before the last) stop
    after the model's unscored_steps: refine_on "loss", none (the initial state at every level,
    0 steps); "cached", cache_levels - 1 (as many as the levels store)."""
    position = caches.levels[0].positions(1)
    x = model.embed_tokens(token[:, None])  # (B, 1, D)
    B = x.shape[0]
    state = model.initial_state(B, 1)
    states = [state]
    active = torch.ones(B, dtype=torch.bool, device=x.device)
    stop = model.cfg.unscored_steps or 0  # (the steps of a row not refined)
    steps = torch.zeros(B, dtype=torch.long, device=x.device)
    policy.begin(B, x.device, 1)
    for s in range(1, policy.max_steps + 1):
        if refine is not None and s == stop + 1:
            active = active & refine
        if not bool(active.any()):
            break
        new = model.refine(state, x, position, caches.level(s).prefix(), None, grad="none")
        state = state.where(active, new)
        steps += active.long()
        states.append(state)
        halt = policy.halt(s, state.y, model)  # (B, 1): the halting rule decode.refine_token applies
        if halt is not None:
            active = active & ~halt[:, 0]
    for s, level in enumerate(caches.levels):
        level.commit(model.commit_kv(x, states[min(s, len(states) - 1)], position, level.prefix()))
    # The rule's final choice (e.g. the oracle's best step) is what the token predicts from; the
    # levels keep the per-step states (the exact form of training). Rows not refined keep the
    # state and the steps they stopped with (a batch of them alone with no step takes none for
    # the rule to choose from).
    refined_steps = steps
    y, steps = policy.finish(state.y, steps[:, None]) if len(states) > 1 else (state.y, steps[:, None])
    if refine is not None:
        y = torch.where(refine[:, None, None], y, state.y)
        steps = torch.where(refine[:, None], steps, refined_steps[:, None])
    return DecodeOut(model.logits(y)[:, 0], steps[:, 0])


@torch.no_grad()
def sequential_logits_sync(model: TRMLanguageModel, tokens: Tensor, policy: HaltPolicy,
                           refine: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Token-by-token step-synchronous evaluation of tokens (B, L): logits (B, L, V), steps (B, L).
    `refine` (B, L) bool: the positions refined (decode_step_sync), None = all."""
    B, L = tokens.shape
    return run_token_by_token(refining(decode_step_sync, refine), model, StepCaches(model, B, L), tokens, policy)


def refining(step_fn, refine: Tensor | None):
    """step_fn told, token by token, which rows to refine (`refine` (B, L) bool, in order; None = all)."""
    if refine is None:
        return step_fn
    columns = iter(refine.T)

    def step(model, caches, token, policy):
        return step_fn(model, caches, token, policy, refine=next(columns))

    return step


def own_decoder(model: LanguageModel, per_step_cache: bool | None = None):
    """(cache factory, step function) of sequential decoding: this module's per-step levels
    (`per_step_cache`, or None and a TRM trained with cache_levels) or the commit-last cache.
    The factory is called as (model, batch, max_len)."""
    if per_step_cache is None:
        per_step_cache = model.cfg.decodes_per_step
    return (StepCaches, decode_step_sync) if per_step_cache else (KVCache.for_model, decode_step)


def prefill_into(model: LanguageModel, cache, tokens: Tensor, policy: HaltPolicy) -> tuple[DecodeOut, Tensor]:
    """decode.prefill for either cache of own_decoder: StepCaches are filled token by token (the
    level decoder has no parallel prefill). Returns the last token's DecodeOut and the prompt's steps."""
    if isinstance(cache, StepCaches):
        refine = None
        if model.cfg.unscored_steps is not None:  # (trained so: only the last prompt token is refined in full)
            refine = torch.zeros_like(tokens, dtype=torch.bool)
            refine[:, -1] = True
        logits, steps = run_token_by_token(refining(decode_step_sync, refine), model, cache, tokens, policy)
        return DecodeOut(logits[:, -1], steps[:, -1]), steps
    return prefill(model, cache, tokens, policy)
