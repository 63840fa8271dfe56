"""Held-out evaluation: the fast parallel estimate and the true sequential real-cache bits per char."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from trmlm.lm.config import LMConfig
from trmlm.lm.data import TokenData, eval_windows
from trmlm.lm.decode import sequential_logits
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.model import LanguageModel, TRMLanguageModel
from trmlm.lm.parallel import training_style_losses
from trmlm.lm.stepsync import sequential_logits_sync
from trmlm.losses import token_cross_entropy

LN2 = math.log(2.0)


def _ce(logits: Tensor, targets: Tensor) -> Tensor:
    return token_cross_entropy(logits, targets, "softmax")  # (B, L) nats, true likelihood


@torch.no_grad()
def parallel_estimate(model: LanguageModel, windows: Tensor, batch: int) -> dict[str, float]:
    """Mean NLL (nats/token) of windows (W, L + 1) computed in parallel: for the TRM the
    training-style pass (N_sup supervision sweeps, cache re-committed after each), per step;
    for the transformers their ordinary causal pass (which is exact)."""
    device = next(model.parameters()).device
    total, count = None, 0
    for i in range(0, windows.shape[0], batch):
        w = windows[i:i + batch].to(device)
        inp, tgt = w[:, :-1], w[:, 1:]
        if isinstance(model, TRMLanguageModel):
            per_step = training_style_losses(model, inp, tgt, model.cfg.model.max_sup_steps, _ce)
            sums = torch.stack([ce.sum() for ce in per_step])  # (S,)
        else:
            sums = _ce(model(inp)[0], tgt).sum()[None]
        total = sums if total is None else total + sums
        count += tgt.numel()
    nll = (total / count).tolist()
    return {"nll_parallel": nll[-1], "nll_parallel_per_step": nll}


@torch.no_grad()
def sequential_eval(model: LanguageModel, windows: Tensor, batch: int, policy: HaltPolicy,
                    per_step_cache: bool = False) -> dict[str, float]:
    """Token-by-token decoding with the real KV cache and per-token halting (decode.py;
    or the per-step caches of stepsync.py), teacher-forced on windows (W, L + 1): NLL, steps."""
    decode = sequential_logits_sync if per_step_cache else sequential_logits
    device = next(model.parameters()).device
    nll_sum, count, steps = 0.0, 0, []
    t0 = time.perf_counter()
    for i in range(0, windows.shape[0], batch):
        w = windows[i:i + batch].to(device)
        logits, s = decode(model, w[:, :-1], policy)
        nll_sum += float(_ce(logits, w[:, 1:]).sum())
        count += w[:, 1:].numel()
        steps.append(s.flatten().float())
    st = torch.cat(steps)
    return {"nll_sequential": nll_sum / count, "steps_mean": float(st.mean()),
            "steps_p50": float(st.quantile(0.5)), "steps_p90": float(st.quantile(0.9)),
            "steps_max": float(st.max()), "seq_tokens_per_s": count / (time.perf_counter() - t0)}


def bits_per_char(nll_nats_per_token: float, chars_per_token: float) -> float:
    return nll_nats_per_token / LN2 / chars_per_token


def evaluate_lm(model: LanguageModel, cfg: LMConfig, data: TokenData, parallel_tokens: int,
                sequential_tokens: int, batch: int, policy: HaltPolicy | None = None,
                per_step_cache: bool = False) -> dict[str, Any]:
    """Held-out bits/char: the parallel estimate on `parallel_tokens`, and on the first
    `sequential_tokens` (if > 0) the sequential real-cache figure with halting (`policy`,
    default: the config's), at full depth (TRM), and the parallel estimate on the same windows
    (so that the train/inference gap is like for like). A TRM trained with cache_levels is
    decoded with its own per-step cache throughout (`decoder` says which)."""
    model.eval()
    cpt, L = data.val_chars_per_token, cfg.context
    par = parallel_estimate(model, eval_windows(data.val, L, parallel_tokens, data.val_row_length), batch)
    out: dict[str, Any] = {"bpc_parallel": bits_per_char(par["nll_parallel"], cpt),
                           "bpc_parallel_per_step": [bits_per_char(v, cpt)
                                                     for v in par["nll_parallel_per_step"]]}
    if sequential_tokens <= 0:
        return out
    windows = eval_windows(data.val, L, sequential_tokens, data.val_row_length)
    policy = policy or HaltPolicy(max_steps=cfg.max_steps, min_steps=cfg.halt.min_steps,
                                  threshold=cfg.halt.threshold)
    own = cfg.decodes_per_step
    seq = sequential_eval(model, windows, batch, policy, per_step_cache=own)
    out.update(bpc_sequential=bits_per_char(seq["nll_sequential"], cpt), steps_mean=seq["steps_mean"],
               steps_p50=seq["steps_p50"], steps_p90=seq["steps_p90"], steps_max=seq["steps_max"],
               seq_tokens_per_s=seq["seq_tokens_per_s"], eval_tokens=int(windows[:, 1:].numel()))
    same = parallel_estimate(model, windows, batch)
    out["bpc_parallel_same_windows"] = bits_per_char(same["nll_parallel"], cpt)
    if isinstance(model, TRMLanguageModel):
        full = sequential_eval(model, windows, batch, HaltPolicy.fixed(cfg.model.max_sup_steps), own)
        out["bpc_sequential_full_depth"] = bits_per_char(full["nll_sequential"], cpt)
        out["decoder"] = "per-step" if own else "commit-last"
        if per_step_cache and not own:  # the per-step-cache decoder, with the same halting policy
            sync = sequential_eval(model, windows, batch, policy, per_step_cache=True)
            out.update(bpc_sequential_per_step_cache=bits_per_char(sync["nll_sequential"], cpt),
                       steps_mean_per_step_cache=sync["steps_mean"])
    return out
