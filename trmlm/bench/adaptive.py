"""`trm bench --adaptive-compute`: quality vs compute of per-token exits, sequential with the real cache (docs/benchmarks.md)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import Tensor

from trmlm.bench.common import decode_flops_per_token, hardware, sync
from trmlm.errors import TRMError
from trmlm.lm.decode import run_token_by_token
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.evaluate import bits_per_char
from trmlm.lm.exits import ArgmaxExit, KLExit, OracleExit, RandomExit
from trmlm.lm.model import TRMLanguageModel
from trmlm.lm.stepsync import own_decoder, prefill_into

PPL_TOLERANCE = 1.01   # target: <= 1% worse sequential perplexity than the deepest fixed depth


@dataclass
class AdaptiveSettings:
    thresholds: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9])
    kl_eps: list[float] = field(default_factory=lambda: [0.1, 0.01, 0.001])
    argmax_patience: list[int] = field(default_factory=lambda: [1])
    n_prompts: int = 4            # greedy-continuation agreement: prompts from the held-out windows
    new_tokens: int = 32          # greedy tokens generated after each prompt
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.thresholds or any(not 0.0 <= t <= 1.0 for t in self.thresholds):
            raise TRMError("--thresholds must be a non-empty list of numbers in [0, 1]")
        if any(e <= 0 for e in self.kl_eps) or any(p < 1 for p in self.argmax_patience):
            raise TRMError("KL eps must be > 0 and argmax patience >= 1")


@dataclass
class Exit:
    """One row of the benchmark: a named exit rule and how its heads are used."""

    name: str
    kind: str                      # learned | fixed | random | oracle | kl | argmax
    param: float | None
    make: Callable[[], HaltPolicy]
    head_every_step: bool = False  # the rule reads the LM head after every step (KL, argmax, oracle)
    q_every_step: bool = False     # the rule reads the halt head after every step (learned)


def exits_for(max_steps: int, s: AdaptiveSettings) -> list[Exit]:
    rows = [Exit(f"fixed {d}", "fixed", float(d), lambda d=d: HaltPolicy.fixed(d))
            for d in range(1, max_steps + 1)]
    rows += [Exit(f"halt q>={t:g}", "learned", t, lambda t=t: HaltPolicy(max_steps, 1, t), q_every_step=True)
             for t in s.thresholds]
    rows += [Exit(f"KL<{e:g}", "kl", e, lambda e=e: KLExit(max_steps, eps=e), head_every_step=True)
             for e in s.kl_eps]
    rows += [Exit(f"argmax stable x{p}", "argmax", float(p), lambda p=p: ArgmaxExit(max_steps, patience=p),
                  head_every_step=True) for p in s.argmax_patience]
    rows.append(Exit("oracle", "oracle", None, lambda: OracleExit(max_steps), head_every_step=True))
    return rows


def _told_targets(step_fn, targets: Tensor):
    """step_fn for the oracle: before each token it is told that token's true successor
    (targets (L, 1), in order)."""
    it = iter(targets)

    def step(model, cache, token, policy):
        policy.target = next(it)
        return step_fn(model, cache, token, policy)

    return step


@torch.no_grad()
def run_exit(model: TRMLanguageModel, windows: Tensor, rule: HaltPolicy) -> dict[str, Tensor | float]:
    """Teacher-forced sequential decoding of windows (W, L + 1) at batch 1 with the model's own
    cache (commit-last, or the per-step levels of a cache_levels TRM; decode.run_token_by_token):
    per predicted token its NLL (nats), argmax, steps and attended keys; wall seconds."""
    nll, top, steps = [], [], []
    seconds = 0.0
    L = windows.shape[1] - 1
    device = next(model.parameters()).device
    make_cache, decode = own_decoder(model)
    for w in windows.to(device):
        step_fn = _told_targets(decode, w[1:, None]) if isinstance(rule, OracleExit) else decode
        sync(device)
        t0 = time.perf_counter()
        logits, s = run_token_by_token(step_fn, model, make_cache(model, 1, L), w[None, :-1], rule)
        sync(device)
        seconds += time.perf_counter() - t0
        logp = torch.log_softmax(logits[0].float(), dim=-1)  # (L, V)
        nll.append(-logp.gather(-1, w[1:, None])[:, 0])
        top.append(logits[0].argmax(-1))
        steps.append(s[0])
    keys = torch.arange(1, L + 1).repeat(windows.shape[0])  # committed prefix + its own live entry
    return {"nll": torch.cat(nll).cpu(), "argmax": torch.cat(top).cpu(), "steps": torch.cat(steps).cpu(),
            "keys": keys, "seconds": seconds}


@torch.no_grad()
def greedy_continuations(model: TRMLanguageModel, prompts: Tensor, rule: HaltPolicy, new_tokens: int) -> Tensor:
    """Greedy continuation (B, new_tokens) of prompts (B, P), sequential prefill, per-sequence
    exits, the model's own cache."""
    B, P = prompts.shape
    make_cache, decode = own_decoder(model)
    cache = make_cache(model, B, P + new_tokens)
    prompts = prompts.to(next(model.parameters()).device)
    out, _ = prefill_into(model, cache, prompts, rule)
    tokens = []
    for j in range(new_tokens):
        tokens.append(out.logits.argmax(-1))
        if j < new_tokens - 1:
            out = decode(model, cache, tokens[-1], rule)
    return torch.stack(tokens, 1).cpu()


def summarize(ex: Exit, run: dict[str, Any], model: TRMLanguageModel, chars_per_token: float,
              max_steps: int, bytes_per_token: int, commits: int = 1) -> dict[str, Any]:
    steps = run["steps"].float()
    spent = torch.full_like(run["steps"], max_steps) if ex.kind == "oracle" else run["steps"]
    head = spent if ex.head_every_step else torch.ones_like(spent)
    q = spent if ex.q_every_step else torch.zeros_like(spent)
    flops = decode_flops_per_token(model.cfg.model, spent, run["keys"], head, q, commits)
    nll = float(run["nll"].mean())
    n = int(run["nll"].numel())
    return {"name": ex.name, "kind": ex.kind, "param": ex.param, "nll": nll,
            "bpc": bits_per_char(nll, chars_per_token), "ppl": math.exp(nll),
            "steps_mean": float(steps.mean()), "steps_p50": float(steps.quantile(0.5)),
            "steps_p90": float(steps.quantile(0.9)), "steps_max": float(steps.max()),
            "steps_spent_mean": float(spent.float().mean()),
            "steps_histogram": torch.bincount(run["steps"], minlength=max_steps + 1)[1:].tolist(),  # tokens at 1..N_sup
            "gflops_per_token": float(flops.mean()) / 1e9, "kv_bytes_per_token": bytes_per_token,
            "tokens_per_s": n / run["seconds"], "tokens": n}


def operating_point(rows: list[dict[str, Any]], max_steps: int) -> dict[str, Any]:
    """The learned-halting threshold to judge the targets at: among the thresholds within
    PPL_TOLERANCE of the deepest fixed depth's perplexity and at <= half its steps, the best NLL;
    else the fewest steps within the tolerance; else the best NLL."""
    deepest = next(r for r in rows if r["kind"] == "fixed" and r["param"] == max_steps)
    learned = [r for r in rows if r["kind"] == "learned"]
    ok = [r for r in learned if r["ppl"] <= PPL_TOLERANCE * deepest["ppl"]]
    cheap = [r for r in ok if r["steps_mean"] <= 0.5 * max_steps]
    if cheap:
        return min(cheap, key=lambda r: r["nll"])
    return min(ok, key=lambda r: r["steps_mean"]) if ok else min(learned, key=lambda r: r["nll"])


def random_exit(mean: float, max_steps: int, seed: int) -> Exit:
    return Exit(f"random mean {mean:.2f}", "random", round(mean, 2),
                lambda: RandomExit(max_steps, mean_depth=mean, generator=torch.Generator().manual_seed(seed)))


def add_random_controls(rows: list[dict[str, Any]], max_steps: int, seed: int,
                        measure: Callable[[Exit], None]) -> None:
    """The control for every learned threshold's row: a random exit of the same mean steps per
    token, named in r["random_same_mean"] (at an integer depth d that is the fixed depth d, already
    measured); `measure` runs each random exit not yet in `rows` and appends its row.

    A row's mean also counts positions whose steps no exit rule decides (a prompt token before the
    last under `refine_on: cached` keeps the one step the cache stores), so the depth the control
    draws is found through the fixed depths' rows: mean = c + b * d on the decided positions, with
    c and b from fixed 1 and fixed max_steps (b = 1, c = 0 when every position is decided)."""
    decided = decided_depth(rows, max_steps)
    for r in [r for r in rows if r["kind"] == "learned"]:
        m = min(max(decided(r["steps_mean"]), 1.0), float(max_steps))
        r["decided_steps_mean"] = round(m, 4)
        if abs(m - round(m)) < 0.005:
            r["random_same_mean"] = f"fixed {round(m)}"
            continue
        ex = random_exit(m, max_steps, seed)
        r["random_same_mean"] = ex.name
        if ex.name not in {x["name"] for x in rows}:
            measure(ex)


def decided_depth(rows: list[dict[str, Any]], max_steps: int) -> Callable[[float], float]:
    """The mean depth on the positions an exit rule decides, from a row's mean steps per token
    (the affine map through the rows of fixed depth 1 and max_steps; the identity without them)."""
    fixed = {r["param"]: r["steps_mean"] for r in rows if r["kind"] == "fixed"}
    if max_steps > 1 and 1.0 in fixed and float(max_steps) in fixed:
        slope = (fixed[float(max_steps)] - fixed[1.0]) / (max_steps - 1)
        if slope > 1e-9:
            return lambda mean: 1.0 + (mean - fixed[1.0]) / slope
    return lambda mean: mean


def run_adaptive_bench(model: TRMLanguageModel, windows: Tensor, chars_per_token: float,
                       settings: AdaptiveSettings, console: Console | None = None,
                       progress: bool = True) -> dict[str, Any]:
    """Every exit over the same held-out windows (W, L + 1) at batch 1; returns the report (rows,
    targets, per-token steps of the operating point for the plots)."""
    if not isinstance(model, TRMLanguageModel):
        raise TRMError("--adaptive-compute needs a TRM checkpoint (arch trm), not a transformer baseline")
    model.eval()
    max_steps = model.cfg.model.max_sup_steps
    one_token = own_decoder(model)[0](model, 1, 1)
    bytes_per_token, commits = one_token.bytes_per_token(), one_token.commits_per_token
    exits = exits_for(max_steps, settings)
    per_exit = windows[:, 1:].numel()
    n_prompts = min(settings.n_prompts, windows.shape[0])
    prompt_len = max(1, windows.shape[1] - 1 - settings.new_tokens)
    prompts = windows[:n_prompts, :prompt_len]
    new_tokens = min(settings.new_tokens, model.cfg.context - prompt_len)
    rows, runs = [], {}
    run_exit(model, windows[:1, :min(33, windows.shape[1])], HaltPolicy.fixed(max_steps))  # warm-up, untimed
    columns = [TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task("adaptive compute", total=len(exits) * per_exit)

        def measure(ex: Exit) -> None:
            bar.update(task, description=ex.name)
            run = run_exit(model, windows, ex.make())
            runs[ex.name] = run
            rows.append(summarize(ex, run, model, chars_per_token, max_steps, bytes_per_token, commits))
            bar.advance(task, per_exit)

        def control(ex: Exit) -> None:
            bar.update(task, total=bar.tasks[0].total + per_exit)
            exits.append(ex)
            measure(ex)

        for ex in exits:
            measure(ex)
        add_random_controls(rows, max_steps, settings.seed, control)
    by_name = {r["name"]: r for r in rows}
    for r in rows:
        if r["kind"] == "learned":
            r["beats_random"] = r["nll"] < by_name[r["random_same_mean"]]["nll"]
    op = operating_point(rows, max_steps)
    full = runs[f"fixed {max_steps}"]
    reference = greedy_continuations(model, prompts, HaltPolicy.fixed(max_steps), new_tokens)
    for r in rows:
        r["argmax_agreement"] = float((runs[r["name"]]["argmax"] == full["argmax"]).float().mean())
        ex = next(e for e in exits if e.name == r["name"])
        if ex.kind == "oracle":  # needs the true next token: no free-running continuation
            r["greedy_agreement"] = None
            continue
        cont = greedy_continuations(model, prompts, ex.make(), new_tokens)
        r["greedy_agreement"] = float((cont == reference).float().mean())
    deepest = next(r for r in rows if r["kind"] == "fixed" and r["param"] == max_steps)
    for r in rows:
        r["ppl_ratio_vs_deepest"] = r["ppl"] / deepest["ppl"]
    learned = [r for r in rows if r["kind"] == "learned"]
    targets = {
        "ppl_within_1pct_of_deepest": op["ppl"] <= PPL_TOLERANCE * deepest["ppl"],
        "mean_steps_at_most_half_max": op["steps_mean"] <= 0.5 * max_steps,
        "better_than_random_same_mean_depth": op["beats_random"],
    }
    return {"benchmark": "adaptive_compute", "hardware": hardware(next(model.parameters()).device),
            "max_steps": max_steps,
            "eval_tokens": per_exit, "windows": list(windows.shape), "chars_per_token": chars_per_token,
            "greedy": {"prompts": n_prompts, "prompt_tokens": prompt_len, "new_tokens": new_tokens},
            "operating_point": op["name"], "random_control": op["random_same_mean"], "rows": rows,
            "learned_beats_random": f"{sum(r['beats_random'] for r in learned)} of {len(learned)} thresholds",
            "targets": targets, "targets_met": all(targets.values()),
            "_steps": {name: run["steps"] for name, run in runs.items()}}


def print_adaptive_table(report: dict[str, Any], console: Console) -> None:
    hw = report["hardware"]
    table = Table(title=f"adaptive compute: {report['eval_tokens']} held-out tokens, batch 1, sequential "
                        f"real cache, {hw['device']} {hw['threads']} thread(s), N_sup {report['max_steps']}")
    for col in ("exit", "bits/char", "PPL vs deepest", "argmax agree", "greedy agree", "mean steps",
                "p50/p90/max", "GFLOP/token", "KV B/token", "tokens/s"):
        table.add_column(col, justify="right")
    for r in report["rows"]:
        mark = " *" if r["name"] == report["operating_point"] else ""
        greedy = "-" if r["greedy_agreement"] is None else f"{r['greedy_agreement']:.3f}"
        table.add_row(r["name"] + mark, f"{r['bpc']:.4f}", f"{r['ppl_ratio_vs_deepest']:.4f}",
                      f"{r['argmax_agreement']:.3f}", greedy, f"{r['steps_mean']:.2f}",
                      f"{r['steps_p50']:.0f}/{r['steps_p90']:.0f}/{r['steps_max']:.0f}",
                      f"{r['gflops_per_token']:.4f}", str(r["kv_bytes_per_token"]), f"{r['tokens_per_s']:.0f}")
    console.print(table)
    console.print("* operating point: the best learned threshold within 1% PPL of the deepest fixed depth at "
                  "<= half its steps; "
                  f"its random exit of the same mean depth: {report['random_control']}")
    console.print(f"learned halting beats the random exit of its mean depth at {report['learned_beats_random']}")
    for k, v in report["targets"].items():
        console.print(f"  target {k}: {'met' if v else 'MISSED'}")
