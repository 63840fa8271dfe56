"""`trm bench --adaptive-compute` on a reasoning-text task: every exit rule scored by exact answers
(greedy, real cache) and by steps per token category (teacher-forced, and as greedy decoding spent
them), with random controls."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from trmlm.bench.adaptive import AdaptiveSettings, Exit, add_random_controls, exits_for
from trmlm.bench.common import hardware
from trmlm.bench.stats import paired
from trmlm.errors import TRMError
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.model import TRMLanguageModel
from trmlm.lm.tasks.base import Example, TextTask
from trmlm.lm.tasks.score import score_task
from trmlm.lm.tokenizer import Tokenizer

EXACT_TOLERANCE = 0.01   # target: learned halting within 0.01 of full-depth exact accuracy


def _row(ex: Exit, report: dict[str, Any]) -> dict[str, Any]:
    return {"name": ex.name, "kind": ex.kind, "param": ex.param, "exact_acc": report["exact_acc"],
            "exact_acc_per_rung": {k: v["exact_acc"] for k, v in report.get("per_rung", {}).items()},
            "steps_mean": report["steps_mean"] if ex.kind != "oracle" else None,
            "steps_hard": report["steps_hard"], "steps_easy": report["steps_easy"],
            "steps_per_category": report["steps_per_category"], "token_acc": report["token_acc"],
            "steps_hard_decode": report.get("steps_hard_decode"), "steps_easy_decode": report.get("steps_easy_decode"),
            "steps_per_category_decode": report.get("steps_per_category_decode"),
            "flops_per_answer": report.get("flops_per_answer"),
            "tokens_per_answer": report.get("tokens_per_answer"), "exact_ci95": report.get("exact_ci95"),
            "_solved": report.get("solved")}


def _against(row: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """`row` against `other` on the same problems: solved by both, by only one, McNemar p."""
    p = paired(row["_solved"], other["_solved"])
    return {"against": other["name"], "both": p["both"], "only_this": p["only_a"], "only_other": p["only_b"],
            "mcnemar_p": p["mcnemar_p"]}


def operating_point(rows: list[dict[str, Any]], max_steps: int, threshold: float | None = None) -> dict[str, Any]:
    """The learned exit at `threshold` (the checkpoint's stored one, chosen before these problems
    were scored) when given; otherwise picked on these problems: among the learned thresholds
    within EXACT_TOLERANCE of full depth at <= half the steps, the best exact accuracy; else the
    fewest steps within the tolerance; else the best accuracy."""
    full = next(r for r in rows if r["kind"] == "fixed" and r["param"] == max_steps)
    learned = [r for r in rows if r["kind"] == "learned"]
    if threshold is not None:
        return next(r for r in learned if abs(r["param"] - threshold) < 1e-9)
    ok = [r for r in learned if r["exact_acc"] >= full["exact_acc"] - EXACT_TOLERANCE]
    cheap = [r for r in ok if r["steps_mean"] <= 0.5 * max_steps]
    if cheap:
        return max(cheap, key=lambda r: (r["exact_acc"], -r["steps_mean"]))
    return min(ok, key=lambda r: r["steps_mean"]) if ok else max(learned, key=lambda r: r["exact_acc"])


@torch.no_grad()
def run_task_adaptive_bench(model: TRMLanguageModel, tokenizer: Tokenizer, task: TextTask,
                            examples: list[Example], settings: AdaptiveSettings, max_steps: int = 0,
                            console: Console | None = None, progress: bool = True,
                            batch: int = 64, threshold: float | None = None) -> dict[str, Any]:
    """Rows: fixed depths 1..max_steps (default N_sup; deeper = test-time depth beyond training),
    and at most N_sup steps: learned halting over settings.thresholds, KL / argmax exits, the
    oracle (teacher-forced only) and a random exit of each learned threshold's mean depth.
    `threshold`: the checkpoint's stored halting threshold; it joins the sweep and is the
    operating point the targets are judged at (else the point is picked on these problems)."""
    if threshold is not None and not any(abs(t - threshold) < 1e-9 for t in settings.thresholds):
        settings = dataclasses.replace(settings, thresholds=sorted([*settings.thresholds, threshold]))
    if not isinstance(model, TRMLanguageModel):
        raise TRMError("--adaptive-compute needs a TRM checkpoint (arch trm), not a transformer baseline")
    model.eval()
    n_sup = model.cfg.model.max_sup_steps
    max_steps = max(max_steps, n_sup)
    exits = exits_for(n_sup, settings)
    exits[n_sup:n_sup] = [Exit(f"fixed {d}", "fixed", float(d), lambda d=d: HaltPolicy.fixed(d))
                          for d in range(n_sup + 1, max_steps + 1)]
    rows: list[dict[str, Any]] = []
    columns = [TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, disable=not progress) as bar:
        job = bar.add_task("adaptive compute", total=len(exits))

        def measure(ex: Exit) -> dict[str, Any]:
            bar.update(job, description=ex.name)
            rep = score_task(model, tokenizer, task, examples, ex.make(), batch=batch,
                             greedy=ex.kind != "oracle")
            rows.append(_row(ex, rep))
            bar.advance(job)
            return rows[-1]

        def control(ex: Exit) -> None:
            bar.update(job, total=bar.tasks[0].total + 1)
            exits.append(ex)
            measure(ex)

        for ex in exits:
            measure(ex)
        add_random_controls(rows, n_sup, settings.seed, control)
    by_name = {r["name"]: r for r in rows}
    learned = [r for r in rows if r["kind"] == "learned"]
    full = by_name[f"fixed {n_sup}"]
    for r in learned:
        r["beats_random"] = r["exact_acc"] > by_name[r["random_same_mean"]]["exact_acc"]
        r["paired_full_depth"] = _against(r, full)
        r["paired_random"] = _against(r, by_name[r["random_same_mean"]])
    for r in rows:
        del r["_solved"]   # (per-problem correctness: only the paired counts are kept)
    # The degenerate ends of the sweep: thresholds where every token halts at the first step or
    # none halts before the last (the learned rule then IS a fixed depth, no control can lose),
    # judged on the positions the exit decides.
    inner = [r for r in learned if 1.005 < r["decided_steps_mean"] < n_sup - 0.005]
    op = operating_point(rows, n_sup, threshold)
    report: dict[str, Any] = {
        "benchmark": "adaptive_compute_task", "task": task.name, "problems": len(examples),
        "hardware": hardware(next(model.parameters()).device), "n_sup": n_sup, "max_steps": max_steps,
        "rows": rows,
        "exact_acc_depth1": by_name["fixed 1"]["exact_acc"], "exact_acc_full_depth": full["exact_acc"],
        "halt_beats_random": f"{sum(r['beats_random'] for r in inner)} of {len(inner)}",
        "halt_beats_random_all": f"{sum(r['beats_random'] for r in learned)} of {len(learned)}",
    }
    if f"fixed {2 * n_sup}" in by_name:
        report["exact_acc_2x_depth"] = by_name[f"fixed {2 * n_sup}"]["exact_acc"]
    if op is not None:
        report.update(operating_point=op["name"],
                      operating_point_rule=("the checkpoint's stored threshold" if threshold is not None
                                            else "picked on these problems"),
                      halt_exact_acc=op["exact_acc"],
                      halt_mean_steps=op["steps_mean"], halt_decided_steps_mean=op["decided_steps_mean"],
                      steps_hard=op["steps_hard"],
                      steps_easy=op["steps_easy"], steps_hard_decode=op["steps_hard_decode"],
                      steps_easy_decode=op["steps_easy_decode"], random_control=op["random_same_mean"],
                      halt_exact_ci95=op["exact_ci95"], full_depth_exact_ci95=full["exact_ci95"],
                      halt_vs_full_depth=op["paired_full_depth"])
        report["targets"] = {
            "within_0.01_of_full_depth": op["exact_acc"] >= full["exact_acc"] - EXACT_TOLERANCE,
            "mean_steps_at_most_half_n_sup": op["steps_mean"] <= 0.5 * n_sup,
            "beats_random_at_every_inner_threshold": bool(inner) and all(r["beats_random"] for r in inner),
            "hard_steps_at_least_2x_easy": op["steps_hard"] >= 2 * op["steps_easy"],
            "hard_steps_at_least_2x_easy_in_decoding": (op["steps_hard_decode"] is not None
                                                        and op["steps_hard_decode"] >= 2 * op["steps_easy_decode"]),
            "full_depth_beats_depth1_by_0.2": full["exact_acc"] >= by_name["fixed 1"]["exact_acc"] + 0.2,
        }
    return report


def print_task_adaptive_table(report: dict[str, Any], console: Console) -> None:
    hw = report["hardware"]
    table = Table(title=f"adaptive compute on {report['task']}: {report['problems']} held-out problems, "
                        f"greedy real-cache decoding, {hw['device']} {hw['threads']} thread(s), "
                        f"N_sup {report['n_sup']}")
    for col in ("exit", "exact", "mean steps", "steps hard", "steps easy", "decoded: hard", "decoded: easy",
                "answer token acc", "MFLOP/answer"):
        table.add_column(col, justify="right")
    for r in report["rows"]:
        mark = " *" if r["name"] == report.get("operating_point") else ""
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        answer_acc = r["token_acc"].get("answer", r["token_acc"].get("blank"))
        mflop = None if r["flops_per_answer"] is None else r["flops_per_answer"] / 1e6
        table.add_row(r["name"] + mark, fmt(r["exact_acc"], ".3f"), fmt(r["steps_mean"], ".2f"),
                      fmt(r["steps_hard"], ".2f"), fmt(r["steps_easy"], ".2f"),
                      fmt(r.get("steps_hard_decode"), ".2f"), fmt(r.get("steps_easy_decode"), ".2f"), fmt(answer_acc, ".3f"),
                      fmt(mflop, ".2f"))
    console.print(table)
    console.print(f"learned halting beats the random exit of its mean depth at {report['halt_beats_random']} "
                  f"inner thresholds ({report['halt_beats_random_all']} in all)")
    if vs := report.get("halt_vs_full_depth"):
        lo, hi = report["halt_exact_ci95"]
        console.print(f"{report['operating_point']} against full depth on the same {report['problems']} problems: "
                      f"{vs['only_this']} solved only by it, {vs['only_other']} only at full depth "
                      f"(exact McNemar p {vs['mcnemar_p']:.3g}; its exact answers {report['halt_exact_acc']:.3f}, 95% interval {lo:.3f}-{hi:.3f})",
                      soft_wrap=True)
    for k, v in report.get("targets", {}).items():
        console.print(f"target {k}: {'met' if v else 'MISSED'}")
