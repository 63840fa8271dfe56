"""Cached decoding (docs/language-model.md): prefill, decode step with per-token halting, slow reference."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from trmlm.core import RecursionState
from trmlm.layers import KV
from trmlm.lm.cache import KVCache
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.model import LanguageModel, TRMLanguageModel
from trmlm.lm.parallel import jacobi_states


@dataclass
class DecodeOut:
    logits: Tensor   # (B, V) prediction of the next token
    steps: Tensor    # (B,) supervision steps the token used (0 for the transformer baselines)


def refine_token(model: TRMLanguageModel, x: Tensor, position: Tensor, prefix: list[KV] | None,
                 policy: HaltPolicy) -> tuple[RecursionState, Tensor]:
    """Refine one token per sequence, x (B, 1, D), against committed `prefix`; per-sequence
    halting (a halted sequence keeps its state while the others go on). Returns the state to
    predict from and commit (y as the exit rule's `finish` chose it, z as reached) and the steps
    used (B,)."""
    B = x.shape[0]
    state = model.initial_state(B, 1)
    active = torch.ones(B, dtype=torch.bool, device=x.device)
    steps = torch.zeros(B, dtype=torch.long, device=x.device)
    policy.begin(B, x.device, 1)
    for s in range(1, policy.max_steps + 1):
        new = model.refine(state, x, position, prefix, None, grad="none")
        state = state.where(active, new)
        steps += active.long()
        halt = policy.halt(s, state.y, model)  # (B, 1)
        if halt is not None:
            active = active & ~halt[:, 0]
        if not bool(active.any()):
            break
    y, steps = policy.finish(state.y, steps[:, None])
    return RecursionState(y, state.z), steps[:, 0]


@torch.no_grad()
def decode_step(model: LanguageModel, cache: KVCache, token: Tensor, policy: HaltPolicy) -> DecodeOut:
    """Feed one token (B,) at position cache.pos: refine (TRM), commit its (K, V), predict the next."""
    if cache.free < 1:
        raise ValueError("KV cache full")
    position = cache.positions(1)
    prefix = cache.prefix()
    if isinstance(model, TRMLanguageModel):
        x = model.embed_tokens(token[:, None])  # (B, 1, D)
        state, steps = refine_token(model, x, position, prefix, policy)
        cache.commit(model.commit_kv(x, state, position, prefix))
        return DecodeOut(model.logits(state.y)[:, 0], steps)
    logits, kvs = model(token[:, None], position, prefix)
    cache.commit(kvs)
    return DecodeOut(logits[:, 0], torch.zeros_like(token))


@torch.no_grad()
def prefill(model: LanguageModel, cache: KVCache, tokens: Tensor, policy: HaltPolicy,
            mode: str = "sequential", sweeps: int = 0) -> tuple[DecodeOut, Tensor]:
    """Feed a prompt (B, P). Returns the last token's DecodeOut and the steps of every prompt
    token (B, P).

    The transformers prefill in one causal pass (exact). The TRM prefills "sequential"ly (exact,
    token by token) or in "parallel": `sweeps` Jacobi sweeps (parallel.py; exact once sweeps >= P)
    and one causal commit pass over the resulting states.
    """
    B, P = tokens.shape
    if cache.free < P:
        raise ValueError(f"prompt of {P} tokens does not fit the {cache.free} free cache positions")
    if not isinstance(model, TRMLanguageModel):
        logits, kvs = model(tokens, cache.positions(P), cache.prefix())
        cache.commit(kvs)
        return DecodeOut(logits[:, -1], torch.zeros_like(tokens[:, 0])), torch.zeros_like(tokens)
    if not model.cache_reads_state:  # commit_input "x": exact in one pass, whatever `mode`
        return _prefill_tokens_only(model, cache, tokens, policy)
    if mode == "parallel":
        if cache.pos != 0:
            raise ValueError("parallel prefill needs an empty cache")
        state, steps = jacobi_states(model, tokens, sweeps or P, policy)
        cache.commit(model.commit_kv(model.embed_tokens(tokens), state, cache.positions(P)))
        return DecodeOut(model.logits(state.y[:, -1]), steps[:, -1]), steps
    if mode != "sequential":
        raise ValueError(f"unknown prefill mode {mode!r}")
    all_steps = []
    for i in range(P):
        out = decode_step(model, cache, tokens[:, i], policy)
        all_steps.append(out.steps)
    return out, torch.stack(all_steps, dim=1)


def _prefill_tokens_only(model: TRMLanguageModel, cache: KVCache, tokens: Tensor,
                        policy: HaltPolicy) -> tuple[DecodeOut, Tensor]:
    """Prefill when the cache holds the tokens alone (commit_input "x"): one causal commit pass
    over the prompt, as a transformer prefills; only the last prompt token, whose prediction is
    the first generated token, is refined (against the others' entries). The other prompt tokens
    report 0 steps: nothing reads a refinement of theirs."""
    B, P = tokens.shape
    x = model.embed_tokens(tokens)  # (B, P, D)
    positions = cache.positions(P)
    kvs = model.commit_kv(x, model.initial_state(B, P), positions, cache.prefix())
    cache.commit([(k[:, :, :-1], v[:, :, :-1]) for k, v in kvs])
    state, steps = refine_token(model, x[:, -1:], positions[-1:], cache.prefix(), policy)
    cache.commit([(k[:, :, -1:], v[:, :, -1:]) for k, v in kvs])
    all_steps = torch.zeros_like(tokens)
    all_steps[:, -1] = steps
    return DecodeOut(model.logits(state.y)[:, 0], steps), all_steps


@torch.no_grad()
def sequential_logits(model: LanguageModel, tokens: Tensor, policy: HaltPolicy
                      ) -> tuple[Tensor, Tensor]:
    """Token-by-token real-cache evaluation of tokens (B, L): logits (B, L, V), steps (B, L)."""
    B, L = tokens.shape
    return run_token_by_token(decode_step, model, KVCache.for_model(model, B, L), tokens, policy)


def run_token_by_token(step_fn, model, cache, tokens: Tensor, policy: HaltPolicy) -> tuple[Tensor, Tensor]:
    """Feed tokens (B, L) one position at a time through `step_fn(model, cache, token, policy)`;
    stack its logits (B, L, V) and steps (B, L). Shared by the commit-last and per-step decoders."""
    logits, steps = [], []
    for i in range(tokens.shape[1]):
        out = step_fn(model, cache, tokens[:, i], policy)
        logits.append(out.logits)
        steps.append(out.steps)
    return torch.stack(logits, 1), torch.stack(steps, 1)


@torch.no_grad()
def reference_logits(model: LanguageModel, tokens: Tensor, policy: HaltPolicy
                     ) -> tuple[Tensor, Tensor]:
    """Slow reference without a cache: for every token the committed (K, V) of all earlier
    tokens are recomputed from scratch (a fresh causal pass over their final states) and the
    transformers recompute the whole prefix. Logits (B, L, V), steps (B, L)."""
    B, L = tokens.shape
    if not isinstance(model, TRMLanguageModel):
        logits = [model(tokens[:, :i + 1])[0][:, -1] for i in range(L)]
        return torch.stack(logits, 1), torch.zeros_like(tokens)
    x = model.embed_tokens(tokens)  # (B, L, D)
    states, logits, steps = [], [], []
    for i in range(L):
        prefix = None
        if i > 0:
            done = RecursionState(torch.cat([st.y for st in states], 1), torch.cat([st.z for st in states], 1))
            prefix = model.commit_kv(x[:, :i], done, torch.arange(i, device=tokens.device))
        state, s = refine_token(model, x[:, i:i + 1], torch.tensor([i], device=tokens.device), prefix,
                                policy)
        states.append(state)
        logits.append(model.logits(state.y)[:, 0])
        steps.append(s)
    return torch.stack(logits, 1), torch.stack(steps, 1)
