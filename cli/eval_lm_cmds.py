"""`trm eval-lm`: held-out bits/char of an LM checkpoint, or a reasoning-text task's exact answers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from trmlm.cli.common import DeviceOpt, ThreadsOpt, err, metrics_table, out
from trmlm.errors import TRMError


def eval_lm_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint directory from train-lm."),
    tokens: int = typer.Option(8192, help="Held-out tokens for the sequential real-cache evaluation."),
    parallel_tokens: int = typer.Option(32768, help="Held-out tokens for the fast parallel estimate."),
    batch: int = typer.Option(16, help="Windows evaluated side by side."),
    data: list[str] = typer.Option([], "--data", help="Text files (default: the checkpoint's data config)."),
    halt_threshold: Optional[float] = typer.Option(None, help="Halt a token once sigmoid(q) >= this."),
    min_steps: Optional[int] = typer.Option(None, help="Supervision steps per token at least."),
    max_steps: Optional[int] = typer.Option(None, help="Supervision steps per token at most."),
    no_halting: bool = typer.Option(False, "--no-halting", help="Fixed unroll at max steps."),
    per_step_cache: bool = typer.Option(False, "--per-step-cache", help="Also evaluate the step-synchronous decoder (one cache level per supervision step); with --task, score with it instead of the commit-last cache."),
    task: Optional[str] = typer.Option(None, "--task", help="Score a reasoning-text task (default: the checkpoint's task, if it was trained on one): exact answers by greedy real-cache decoding, per-category token accuracy and steps."),
    problems: int = typer.Option(500, help="Held-out problems to score with --task."),
    split: str = typer.Option("test", help="Held-out problems of --task: test (reported figures) | val (the set tuned on during training); both are kept out of training."),
    prompt_full_depth: bool = typer.Option(False, "--prompt-full-depth", help="With --task: refine the prompt tokens to max steps and halt only the generated tokens (early-halted prompt commits are what learned halting loses on arith)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 0,
) -> None:
    """Held-out bits/char of a checkpoint: sequential (real KV cache) and parallel estimate.

    Sequential with per-token halting and at full depth, the fast parallel estimate on the same
    characters (their gap is the train/inference mismatch), optionally the per-step cache.
    """
    import dataclasses

    from trmlm.lm.checkpoint import load_lm
    from trmlm.lm.evaluate import evaluate_lm
    from trmlm.lm.prepare import prepare_data
    from trmlm.runtime import resolve_runtime

    if batch < 1 or tokens < 0 or parallel_tokens < 0:
        raise TRMError("--batch must be >= 1, --tokens and --parallel-tokens >= 0")
    rt = resolve_runtime(device, "float32", threads)
    lm = load_lm(checkpoint)
    lm.model.to(rt.device)
    cfg = lm.cfg if not data else dataclasses.replace(lm.cfg, data=dataclasses.replace(lm.cfg.data, files=list(data)))
    g = dataclasses.replace(lm.generation, **{k: v for k, v in dict(
        halt_threshold=halt_threshold, min_steps=min_steps, max_steps=max_steps).items() if v is not None},
        no_halting=no_halting)
    policy = g.validate(lm.cfg.model.max_sup_steps)
    if lm.cfg.arch == "trm" and (warning := g.depth_warning(lm.cfg.model.max_sup_steps)):
        err.print(f"warning: {warning}", soft_wrap=True)
    task_name = task or (lm.cfg.data.task if not data else "")
    if prompt_full_depth and not task_name:
        raise TRMError("--prompt-full-depth needs a task (--task, or a checkpoint trained on one)")
    if task_name:
        if split not in ("test", "val"):
            raise TRMError(f"--split must be test or val, got {split!r}")
        _eval_task(lm, task_name, problems, split, policy, batch, as_json, checkpoint, prompt_full_depth,
                   per_step_cache)
        return
    _, split = prepare_data(cfg, lm.tokenizer)
    metrics = evaluate_lm(lm.model, cfg, split, parallel_tokens, tokens, batch, policy, per_step_cache)
    metrics.update(arch=cfg.arch, parameters=lm.model.num_parameters(), checkpoint=str(checkpoint),
                   train_seconds=lm.meta.get("train_seconds"), step=lm.meta.get("step"))
    if as_json:
        sys.stdout.write(json.dumps(metrics) + "\n")
        return
    out.print(metrics_table(f"eval-lm: {checkpoint}", metrics))


def _eval_task(lm, name: str, problems: int, split: str, policy, batch: int, as_json: bool,
               checkpoint: Path, prompt_full_depth: bool = False, per_step_cache: bool = False) -> None:
    """eval-lm on a task: held-out problems from the checkpoint's held-out seed; with
    per_step_cache every figure comes from the step-synchronous decoder instead."""
    from trmlm.lm.halting import HaltPolicy
    from trmlm.lm.tasks.score import score_task
    from trmlm.lm.tokenizer import missing_chars
    from trmlm.puzzles.lm_tasks import get_task

    if problems < 1:
        raise TRMError("--problems must be >= 1")
    if per_step_cache and lm.cfg.arch != "trm":
        raise TRMError(f"--per-step-cache needs a TRM checkpoint; {checkpoint} is a {lm.cfg.arch}")
    per_step_cache = per_step_cache or lm.cfg.decodes_per_step  # (a cache_levels checkpoint's own decoder)
    task = get_task(name)
    if missing := missing_chars(lm.tokenizer, task.alphabet):
        raise TRMError(f"task {name!r} uses characters the checkpoint's tokenizer lacks: {missing!r}")
    seed = lm.cfg.data.task_test_seed if split == "test" else lm.cfg.data.task_eval_seed
    examples = task.examples(problems, seed)
    prompt_policy = HaltPolicy.fixed(policy.max_steps) if prompt_full_depth else None
    report = score_task(lm.model, lm.tokenizer, task, examples, policy, batch=max(1, batch) * 4,
                        prompt_policy=prompt_policy, per_step_cache=per_step_cache)
    report.update(task=name, split=split, arch=lm.cfg.arch, parameters=lm.model.num_parameters(),
                  cache="per-step" if per_step_cache else "commit-last",
                  checkpoint=str(checkpoint), max_steps=policy.max_steps,
                  halt_threshold=policy.threshold, prompt_full_depth=prompt_full_depth)
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    if per_step_cache:
        levels = lm.cfg.cache_levels or lm.cfg.model.max_sup_steps
        out.print(f"(the per-step cache: {levels} cache levels, the training pass token by "
                  "token; KV bytes are that many times the commit-last cache's)", soft_wrap=True)
    out.print(f"task {name}: {report['problems']} held-out problems, exact answers "
              f"{report['exact_acc']:.4f} (95% interval {report['exact_ci95'][0]:.3f}-{report['exact_ci95'][1]:.3f}), "
              f"{report['tokens_per_answer']:.1f} generated tokens and "
              f"{report['steps_mean']:.2f} mean steps per token", soft_wrap=True)
    out.print(f"{'rung':14s} {'exact':>7s} {'tokens':>7s} {'KV bytes':>9s} {'MFLOP':>8s} {'ms':>7s} {'steps':>6s}")
    for rung, r in report["per_rung"].items():
        out.print(f"{rung:14s} {r['exact_acc']:7.4f} {r['tokens_per_answer']:7.1f} "
                  f"{r['kv_bytes_per_answer']:9.0f} {r['flops_per_answer'] / 1e6:8.2f} "
                  f"{r['ms_per_answer']:7.2f} {r['steps_mean']:6.2f}")
    if prompt_full_depth:
        out.print("(prompt tokens at full depth in greedy decoding; the token accuracy and steps per "
                  "category below are teacher-forced with the learned exit everywhere)", soft_wrap=True)
    decoded = report.get("steps_per_category_decode", {})
    out.print(f"{'category':14s} {'token acc':>9s} {'steps':>6s} {'decoded':>8s}   (steps: teacher-forced, every "
              f"position refined; decoded: what greedy decoding spent)", soft_wrap=True)
    for cat, acc in report["token_acc"].items():
        spent = f"{decoded[cat]:8.2f}" if cat in decoded else f"{'-':>8s}"
        out.print(f"{cat:14s} {acc:9.4f} {report['steps_per_category'][cat]:6.2f} {spent}")
