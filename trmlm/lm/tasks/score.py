"""Scoring a task: exact answers by greedy sequential decoding with the real KV cache, per-category
token accuracy and steps (teacher-forced, same cache and halting), and the cost of an answer."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from trmlm.bench.common import decode_flops_per_token
from trmlm.bench.stats import wilson_interval
from trmlm.flops import f_forward_flops
from trmlm.lm.decode import run_token_by_token
from trmlm.lm.exits import OracleExit
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.model import LanguageModel, TRMLanguageModel
from trmlm.lm.stepsync import own_decoder, prefill_into, refining
from trmlm.lm.tasks import rungs
from trmlm.lm.tasks.base import EASY, END, HARD, Example, TextTask
from trmlm.lm.tokenizer import Tokenizer


@dataclass
class Greedy:
    """Greedy continuations of one batch of equal-length prompts."""

    texts: list[str]        # continuation up to and including END (or max length)
    steps: Tensor           # (B, P + G) supervision steps per position (prompt, then generated)
    seconds: float


@torch.no_grad()
def greedy_batch(model: LanguageModel, tokenizer: Tokenizer, prompts: list[str], max_new: int,
                 policy: HaltPolicy, prompt_policy: HaltPolicy | None = None,
                 per_step_cache: bool | None = None) -> Greedy:
    """Prefill the prompts (same length) token by token, then feed back the argmax until every
    row wrote END or `max_new` tokens. Rows that finished keep decoding (their extra tokens are
    cut), so one batch stays one tensor. `prompt_policy`: the exit of the prompt tokens, if it
    differs from the generated tokens' `policy`. `per_step_cache` (TRM): the step-synchronous
    decoder of stepsync.py (one cache level per supervision step, the training pass token by
    token) instead of the commit-last cache; None: the model's own (per-step with cache_levels)."""
    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(p) for p in prompts], device=device)
    B, P = ids.shape
    t0 = time.perf_counter()
    make_cache, step_fn = own_decoder(model, per_step_cache)
    cache = make_cache(model, B, P + max_new)
    out, prompt_steps = prefill_into(model, cache, ids, prompt_policy or policy)
    gen, steps = [], [prompt_steps]
    end_id = tokenizer.encode(END)[0]
    for k in range(max_new):
        token = out.logits.argmax(-1)  # (B,)
        gen.append(token)
        if k == max_new - 1 or bool((torch.stack(gen, 1) == end_id).any(1).all()):
            break
        out = step_fn(model, cache, token, policy)
        steps.append(out.steps[:, None])
    seconds = time.perf_counter() - t0
    texts = []
    for row in torch.stack(gen, 1).tolist():
        text = tokenizer.decode(row)
        texts.append(text.split(END, 1)[0] + END if END in text else text)
    return Greedy(texts, torch.cat(steps, 1), seconds)


def _by_rung(task: TextTask, examples: list[Example]) -> dict[str, list[Example]]:
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[ex.task].append(ex)
    names = [r.name for r in rungs(task)]
    return {n: groups[n] for n in names if groups[n]}


def flops_per_token(model: LanguageModel, steps: Tensor, keys: Tensor, commits: int = 1) -> Tensor:
    """Analytic forward matmul FLOPs of decoding tokens (N,) that used `steps` supervision steps
    and attended `keys` entries each (TRM: decode_flops_per_token with `commits` commit passes
    per token; transformers: one causal pass)."""
    net = model.cfg.model
    if isinstance(model, TRMLanguageModel):
        one = torch.ones_like(steps)
        return decode_flops_per_token(net, steps, keys, one, steps, commits)
    import dataclasses

    deep = dataclasses.replace(net, n_layers=model.depth)
    a = f_forward_flops(deep, 1, 1, keys=0)
    b = f_forward_flops(deep, 1, 1, keys=1) - a
    return a + b * keys.double() + 2 * net.d_model * net.vocab_size


@torch.no_grad()
def score_task(model: LanguageModel, tokenizer: Tokenizer, task: TextTask, examples: list[Example],
               policy: HaltPolicy, batch: int = 64, teacher_forced: bool = True,
               greedy: bool = True, prompt_policy: HaltPolicy | None = None,
               per_step_cache: bool | None = None) -> dict[str, Any]:
    """Exact-answer accuracy (greedy, real cache, `policy` halting) overall and per rung (and
    `solved`, per problem in the order given), with per answer: generated tokens, KV bytes, FLOPs and ms; and, teacher-forced on the reference
    lines, token accuracy and mean supervision steps per category (a position's steps and
    accuracy are charged to the category of the token it predicts). `prompt_policy`: a separate
    exit for the prompt tokens in greedy decoding (the teacher-forced figures use `policy`).
    `per_step_cache` (TRM): every figure with the step-synchronous decoder (stepsync.py), whose
    KV bytes per token are its levels' (N_sup, or LMConfig.cache_levels) times the commit-last
    cache's. None: the decoder the model was trained for (per-step with cache_levels > 0)."""
    task.check_fits(examples, model.cfg.context)
    if per_step_cache is None:
        per_step_cache = model.cfg.decodes_per_step
    if per_step_cache and not isinstance(model, TRMLanguageModel):
        raise ValueError("the per-step cache is a TRM decoder; a transformer has one cache")
    model.eval()
    one_token = own_decoder(model, per_step_cache)[0](model, 1, 1)
    kv_per_token, commits = one_token.bytes_per_token(), one_token.commits_per_token
    per_rung: dict[str, Any] = {}
    cat_correct: dict[str, float] = defaultdict(float)
    cat_count: dict[str, float] = defaultdict(float)
    cat_steps: dict[str, float] = defaultdict(float)
    dec_steps: dict[str, float] = defaultdict(float)
    dec_count: dict[str, float] = defaultdict(float)
    total_correct = total = 0
    all_steps, gen_tokens, flops, seconds = [], 0, 0.0, 0.0
    position = {id(ex): i for i, ex in enumerate(examples)}
    solved = [False] * len(examples)   # per problem, in the order given (paired comparisons of exits)
    for name, group in _by_rung(task, examples).items():
        rung = next(r for r in rungs(task) if r.name == name)
        correct, r_tokens, r_cached, r_flops, r_seconds, r_steps = 0, 0, 0, 0.0, 0.0, []
        for i in range(0, len(group), batch):
            chunk = group[i:i + batch]
            if teacher_forced:
                _teacher_forced(model, tokenizer, chunk, policy, cat_correct, cat_count, cat_steps,
                                per_step_cache)
            if not greedy:   # (an oracle exit needs the true next token: teacher-forced only)
                continue
            g = greedy_batch(model, tokenizer, [ex.prompt for ex in chunk], rung.max_target, policy,
                             prompt_policy, per_step_cache)
            r_seconds += g.seconds
            P = len(chunk[0].prompt)
            for j, (ex, text) in enumerate(zip(chunk, g.texts)):
                right = rung.is_correct(ex, text)
                solved[position[id(ex)]] = bool(right)
                correct += right
                n_gen = len(tokenizer.encode(text))
                r_tokens += n_gen
                fed = P + n_gen - 1           # positions refined and cached: all but the last token
                r_cached += fed
                s = g.steps[j, :fed]
                keys = torch.arange(1, fed + 1, device=s.device)
                r_flops += float(flops_per_token(model, s, keys, commits).sum())
                r_steps.append(s.float())
                _charge(ex, s, dec_steps, dec_count)
        if not greedy:
            continue
        steps_cat = torch.cat(r_steps) if r_steps else torch.zeros(1)
        n = len(group)
        per_rung[name] = {"exact_acc": correct / n, "problems": n,
                          "tokens_per_answer": r_tokens / n,
                          "kv_bytes_per_answer": kv_per_token * r_cached / n,
                          "flops_per_answer": r_flops / n, "ms_per_answer": 1000 * r_seconds / n,
                          "steps_mean": refined_mean(steps_cat)}
        total_correct += correct
        total += n
        all_steps.append(steps_cat)
        gen_tokens += r_tokens
        flops += r_flops
        seconds += r_seconds
    out: dict[str, Any] = {"exact_acc": total_correct / total if total else None,
                           "problems": total or len(examples),
                           "per_rung": per_rung, "tokens_per_answer": gen_tokens / max(1, total),
                           "flops_per_answer": flops / max(1, total),
                           "ms_per_answer": 1000 * seconds / max(1, total),
                           "steps_mean": refined_mean(torch.cat(all_steps)) if all_steps else 0.0}
    if greedy:
        out["exact_ci95"] = [round(v, 4) for v in wilson_interval(total_correct, total)]
        out["solved"] = solved
    if teacher_forced:
        out["token_acc"] = {c: cat_correct[c] / cat_count[c] for c in cat_count}
        out.update(_steps_by_category(cat_steps, cat_count, ""))
    if greedy and dec_count:
        out.update(_steps_by_category(dec_steps, dec_count, "_decode"))
    return out


def _charge(ex: Example, values: Tensor, sums: dict[str, float], counts: dict[str, float] | None = None) -> None:
    """Add each position's value (steps, hits) to the reference category of the token that
    position predicts, counting positions in `counts` when given (positions past the reference
    line's end, as in a greedy line that ran long, are not charged)."""
    cats = ex.categories[1:]
    for cat, v in zip(cats, values[:len(cats)].tolist()):
        sums[cat] += v
        if counts is not None:
            counts[cat] += 1


def _steps_by_category(sums: dict[str, float], counts: dict[str, float], suffix: str) -> dict[str, Any]:
    """Mean steps per category, over the hard and over the easy categories (keys end in `suffix`)."""
    return {f"steps_per_category{suffix}": {c: sums[c] / counts[c] for c in counts},
            f"steps_hard{suffix}": _mean_over(sums, counts, HARD),
            f"steps_easy{suffix}": _mean_over(sums, counts, EASY)}


def refined_mean(steps: Tensor) -> float:
    """Mean supervision steps over the positions that were refined. Prompt tokens under the token
    cache (commit_input "x") are committed without a refinement and report 0 steps: averaging
    them in would make every exit rule look cheaper by the prompt's share (and would match a
    random control to the wrong depth). 0 for the transformers, which report 0 everywhere."""
    refined = steps[steps > 0]
    return float(refined.float().mean()) if refined.numel() else 0.0


def _mean_over(sums: dict[str, float], counts: dict[str, float], cats: tuple[str, ...]) -> float:
    n = sum(counts[c] for c in cats if c in counts)
    return sum(sums[c] for c in cats if c in counts) / n if n else float("nan")


def _teacher_forced(model: LanguageModel, tokenizer: Tokenizer, chunk: list[Example],
                    policy: HaltPolicy, correct: dict, count: dict, steps_sum: dict,
                    per_step_cache: bool = False) -> None:
    """Sequential real-cache decoding of the reference lines: argmax accuracy and steps of each
    position, charged to the category of its next token. An oracle exit is told each token's
    true successor before the token is refined."""
    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(ex.text) for ex in chunk], device=device)  # (B, L)
    make_cache, step_fn = own_decoder(model, per_step_cache)
    if per_step_cache and model.cfg.unscored_steps is not None:  # (trained so: the prompt before its last token is not refined in full)
        first = torch.tensor([len(tokenizer.encode(ex.prompt)) - 1 for ex in chunk], device=device)
        step_fn = refining(step_fn, torch.arange(ids.shape[1] - 1, device=device)[None] >= first[:, None])
    if isinstance(policy, OracleExit):
        targets, decode_fn = iter(ids[:, 1:].T), step_fn

        def step_fn(m, cache, token, p):
            p.target = next(targets)
            return decode_fn(m, cache, token, p)

    logits, steps = run_token_by_token(step_fn, model, make_cache(model, len(chunk), ids.shape[1]), ids[:, :-1],
                                       policy)
    hit = (logits.argmax(-1) == ids[:, 1:]).float()  # (B, L - 1)
    for j, ex in enumerate(chunk):
        _charge(ex, hit[j], correct, count)
        _charge(ex, steps[j], steps_sum)
