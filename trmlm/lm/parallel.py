"""Parallel-over-positions TRM passes (docs/language-model.md): training supervision sweeps, Jacobi evaluator."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from trmlm.core import GradMode, RecursionState
from trmlm.layers import KV
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.model import TRMLanguageModel, strictly_lower


def commit_pass(model: TRMLanguageModel, x: Tensor, state: RecursionState, grad: bool) -> list[KV]:
    """Committed cache of a whole sequence: one causal call of f over the commit input of
    embeddings x and states (B, L, D)."""
    positions = torch.arange(x.shape[1], device=x.device)
    with contextlib.nullcontext() if grad else torch.no_grad():
        return model.commit_kv(x, state, positions)


def supervision_sweep(model: TRMLanguageModel, state: RecursionState, x: Tensor,
                      commit_grad: bool = True, grad: GradMode = "last_cycle",
                      committed: RecursionState | None = None, cross_grad: bool = False,
                      kvs: list[KV] | None = None) -> RecursionState:
    """Training supervision step s: commit pass over the detached y^(s-1) -> cache C^(s-1), then
    one supervision step of every position reading C^(s-1) strictly to its left plus its own live
    K/V. Within the step the prefix is fixed, exactly as during generation. `committed`
    replaces the states of step s-1 as the states to commit (the "final_sweep" training cache).

    cross_grad: the committed states keep their value, but their gradient flows into state.y
    (y^(s-1) with the graph of the step that made it): straight-through, so a later token's
    loss trains what the earlier tokens hand it.

    kvs: the committed cache, already computed (several no-grad steps reading one `committed`)."""
    L = x.shape[1]
    positions = torch.arange(L, device=x.device)
    if kvs is None:
        kvs = step_commit(model, x, state, committed, commit_grad and grad != "none", cross_grad)
    return model.refine(state, x, positions, kvs, strictly_lower(L, x.device), grad=grad)


def step_commit(model: TRMLanguageModel, x: Tensor, state: RecursionState,
                committed: RecursionState | None = None, grad: bool = True,
                cross_grad: bool = False) -> list[KV]:
    """The cache a supervision step reads: the commit of the detached `state` (or `committed`);
    with cross_grad, straight-through into state's graph (supervision_sweep)."""
    source = (state if committed is None else committed).detach()
    if cross_grad and state.y.requires_grad:
        source = RecursionState(source.y + (state.y - state.y.detach()), source.z + (state.z - state.z.detach()))
    return commit_pass(model, x, source, grad=grad)


def loss_positions(mask: Tensor) -> tuple[Tensor, Tensor]:
    """The positions that carry loss, gathered per row: (index (B, S), valid (B, S)) with S the
    most any row has (at least 1); padding entries point at position 0 and are not valid."""
    counts = mask.sum(1)
    S = max(1, int(counts.max()))
    # A stable sort puts each row's loss positions first, in order.
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices[:, :S]
    valid = torch.arange(S, device=mask.device)[None] < counts[:, None]
    return torch.where(valid, order, torch.zeros_like(order)), valid


def take_positions(x: Tensor, index: Tensor) -> Tensor:
    """x (B, L, D) at the gathered positions `index` (B, S): (B, S, D)."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def take_state(state: RecursionState, index: Tensor) -> RecursionState:
    """`state` (B, L, D) at the gathered positions `index` (B, S), differentiably."""
    return RecursionState(take_positions(state.y, index), take_positions(state.z, index))


def put_positions(full: RecursionState, index: Tensor, valid: Tensor, part: RecursionState) -> RecursionState:
    """`full` (B, L, D) with the gathered positions `index` (B, S) that are `valid` replaced by
    `part` (B, S, D): the inverse of take_positions, differentiable in both."""
    rows = torch.arange(index.shape[0], device=index.device)[:, None].expand_as(index)[valid]
    cols = index[valid]
    return RecursionState(full.y.index_put((rows, cols), part.y[valid]),
                          full.z.index_put((rows, cols), part.z[valid]))


def refine_at(model: TRMLanguageModel, state: RecursionState, x: Tensor, index: Tensor,
              kvs: list[KV], grad: GradMode = "last_cycle") -> RecursionState:
    """One supervision step of the gathered positions `index` (B, S) only (states and x (B, S, D)),
    each reading the committed cache `kvs` (B, H, L, Dh) strictly to its left plus its own live
    K/V: the same result as supervision_sweep at those positions, at S/L of its cost. Exact where
    the cache reads no states (commit_input "x"), or where it is the commit of states in which
    the other positions are initial (put_positions; refine_on "loss" with cache_levels)."""
    L = kvs[0][0].shape[2]
    prefix_mask = torch.arange(L, device=x.device)[None, None] < index[..., None]  # (B, S, L)
    return model.refine(state, x, index, kvs, prefix_mask, grad=grad)


@torch.no_grad()
def final_sweep_states(model: TRMLanguageModel, x: Tensor, steps: int,
                       policy: HaltPolicy | None = None) -> RecursionState:
    """y after `steps` previous-step supervision sweeps (no grad): the approximately final states
    whose commit is the whole-refinement cache of the "final_sweep" training scheme. With an
    exit rule `policy` (the exit-rule protocol, as in decoding), a position stops where the rule
    says and keeps the state it halted with."""
    B, L = x.shape[:2]
    state = model.initial_state(B, L)
    active = torch.ones(B, L, dtype=torch.bool, device=x.device)
    if policy is not None:
        policy.begin(B, x.device, L)
    for s in range(1, steps + 1):
        new = supervision_sweep(model, state, x, grad="none")
        keep = active[..., None]
        state = RecursionState(torch.where(keep, new.y, state.y), torch.where(keep, new.z, state.z))
        halt = policy.halt(s, state.y, model) if policy is not None else None  # (B, L)
        if halt is not None:
            active = active & ~halt
            if not bool(active.any()):
                break
    return state


@torch.no_grad()
def training_style_losses(model: TRMLanguageModel, tokens: Tensor, targets: Tensor, steps: int,
                          loss_fn) -> list[Tensor]:
    """The fast parallel estimate: `steps` supervision sweeps computed as in training (cache of
    the previous step, or with train_cache=final_sweep the cache of a first no-grad pass);
    per-token losses (B, L) after each step. With cache_levels it is the level decoder's own
    pass (level_states), which equals sequential decoding at fixed depth."""
    x = model.embed_tokens(tokens)
    if model.cfg.cache_levels:
        return [loss_fn(model.logits(st.y), targets) for st in level_states(model, x, steps)]
    committed = None
    if model.cfg.train_cache in ("final_sweep", "mixed") and model.cache_reads_state:  # mixed: report its final-cache half
        committed = final_sweep_states(model, x, steps)
    state = model.initial_state(*tokens.shape)
    out = []
    for _ in range(steps):
        state = supervision_sweep(model, state, x, grad="none", committed=committed)
        out.append(loss_fn(model.logits(state.y), targets))
    return out


@torch.no_grad()
def jacobi_states(model: TRMLanguageModel, tokens: Tensor, sweeps: int, policy: HaltPolicy
                  ) -> tuple[RecursionState, Tensor]:
    """Jacobi evaluator: one sweep = the whole per-token refinement (up to max_steps supervision
    steps, per-position halting) of all positions in parallel, every call reading the cache
    committed from the previous sweep's final states. After m sweeps positions < m equal the
    sequential decode, so sweeps = L reproduces it. Returns the final states (B, L, D) and
    steps (B, L).

    Halting goes through the exit-rule protocol (halting.HaltPolicy), as in decode.refine_token:
    `begin` once for all sweeps (a random exit keeps each token's drawn depth), `halt` after
    every step of every sweep, `finish` at the end of each sweep (what it returns is committed)."""
    B, L = tokens.shape
    x = model.embed_tokens(tokens)  # (B, L, D)
    positions = torch.arange(L, device=tokens.device)
    mask = strictly_lower(L, tokens.device)
    final = model.initial_state(B, L)
    steps = torch.zeros(B, L, dtype=torch.long, device=tokens.device)
    policy.begin(B, tokens.device, L)
    for _ in range(sweeps if model.cache_reads_state else 1):  # "x" commits: the first sweep is exact
        kvs = model.commit_kv(x, final, positions)
        state = model.initial_state(B, L)
        active = torch.ones(B, L, dtype=torch.bool, device=tokens.device)
        steps = torch.zeros_like(steps)
        for s in range(1, policy.max_steps + 1):
            new = model.refine(state, x, positions, kvs, mask, grad="none")
            keep = active[..., None]  # (B, L, 1)
            state = RecursionState(torch.where(keep, new.y, state.y), torch.where(keep, new.z, state.z))
            steps += active.long()
            halt = policy.halt(s, state.y, model)  # (B, L)
            if halt is not None:
                active = active & ~halt
            if not bool(active.any()):
                break
        y, steps = policy.finish(state.y, steps)
        final = RecursionState(y, state.z)
    return final, steps


@torch.no_grad()
def jacobi_logits(model: TRMLanguageModel, tokens: Tensor, sweeps: int, policy: HaltPolicy
                  ) -> tuple[Tensor, Tensor]:
    state, steps = jacobi_states(model, tokens, sweeps, policy)
    return model.logits(state.y), steps


@torch.no_grad()
def level_states(model: TRMLanguageModel, x: Tensor, steps: int, refine: Tensor | None = None
                 ) -> list[RecursionState]:
    """cache_levels k: the states after steps 1..`steps` of every position, step s reading the
    commit of the states after min(s - 1, k - 1) steps: the level decoder at fixed depth
    (stepsync.py), exactly, in `steps` parallel passes. `refine` (B, L) bool: only those
    positions are refined to depth `steps`; the others stop after the model's unscored_steps
    (refine_on "loss": 0, they keep their initial state; "cached": k - 1)."""
    k = model.cfg.cache_levels or model.cfg.model.max_sup_steps
    stop = model.cfg.unscored_steps or 0
    states = [model.initial_state(*x.shape[:2])]
    for s in range(steps):
        new = supervision_sweep(model, states[s], x, grad="none", committed=states[min(s, k - 1)])
        states.append(new if refine is None or s < stop else states[s].where(refine, new))
    return states[1:]
