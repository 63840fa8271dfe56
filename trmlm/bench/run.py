"""The `trm bench` jobs end to end: load the checkpoint and text, run, print, write JSON and PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from trmlm.bench.adaptive import AdaptiveSettings, print_adaptive_table, run_adaptive_bench
from trmlm.bench.common import write_json
from trmlm.bench.decode_speed import print_decode_tables, run_decode_bench
from trmlm.errors import TRMError
from trmlm.lm.checkpoint import load_lm
from trmlm.lm.config import LMConfig
from trmlm.lm.data import eval_windows

HEATMAP_TOKENS = 512


def heldout_ids(lm, data_file: Path | None) -> tuple[np.ndarray, float, str]:
    """Token ids of the evaluation text, characters per token, and where they came from: the whole
    of `data_file` if given, else the held-out split of the checkpoint's training data."""
    if data_file is None:
        from trmlm.lm.prepare import prepare_data

        _, split = prepare_data(lm.cfg, lm.tokenizer)
        return split.val, split.val_chars_per_token, "held-out split of the checkpoint's data config"
    try:
        text = Path(data_file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TRMError(f"--data {data_file}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TRMError(f"--data {data_file}: cannot read as UTF-8 text ({e.__class__.__name__})") from None
    ids = np.asarray(lm.tokenizer.encode(text), dtype=np.int64)
    if len(ids) < 2:
        raise TRMError(f"--data {data_file}: fewer than 2 tokens of text")
    return ids, len(text) / len(ids), str(data_file)


def bench_adaptive(checkpoint: Path, data_file: Path | None, tokens: int, settings: AdaptiveSettings,
                   out_dir: Path, console: Console, progress: bool = True, device: str = "cpu") -> dict[str, Any]:
    """--adaptive-compute: report.json, pareto.png, steps_hist.png, heatmap.png in out_dir; tables to
    `console`, progress to stderr."""
    if tokens < 1:
        raise TRMError("--tokens must be >= 1")
    lm = load_lm(checkpoint)
    ids, cpt, source = heldout_ids(lm, data_file)
    windows = eval_windows(ids, lm.cfg.context, tokens)
    report = run_adaptive_bench(lm.model.to(device), windows, cpt, settings, console=Console(stderr=True),
                                progress=progress)
    steps = report.pop("_steps")
    report.update(checkpoint=str(checkpoint), data=source, parameters=lm.model.num_parameters(),
                  train_seconds=lm.meta.get("train_seconds"), train_step=lm.meta.get("step"))
    print_adaptive_table(report, console)
    files = {"report": write_json(out_dir / "report.json", report)}
    # Histogram and heat map: the halting threshold `trm generate` uses by default (the
    # checkpoint's), if swept; else the operating point.
    shown = f"halt q>={lm.generation.halt_threshold:g}"
    shown = shown if shown in steps else report["operating_point"]
    try:
        from trmlm.bench.plots import pareto_plot, steps_histogram, token_heatmap

        files["pareto"] = pareto_plot(report, out_dir / "pareto.png")
        max_steps = report["max_steps"]
        files["histogram"] = steps_histogram(steps[shown].tolist(), max_steps, f"steps per token, {shown}",
                                             out_dir / "steps_hist.png")
        n = min(HEATMAP_TOKENS, steps[shown].numel())
        inputs = windows[:, :-1].reshape(-1)[:n].tolist()
        pieces = [lm.tokenizer.decode([t]) for t in inputs]
        files["heatmap"] = token_heatmap(pieces, steps[shown][:n].tolist(), max_steps,
                                         f"supervision steps per token ({shown}), first {n} held-out tokens",
                                         out_dir / "heatmap.png")
    except TRMError as e:  # no matplotlib: the numbers are still written
        console.print(f"[yellow]plots skipped: {e}[/yellow]")
    for name, path in files.items():
        console.print(f"wrote {path}")
    return report


def bench_adaptive_task(lm, task, problems: int, settings: AdaptiveSettings, out_dir: Path,
                        console: Console, progress: bool = True, device: str = "cpu",
                        max_steps: int = 0, seed: int | None = None) -> dict[str, Any]:
    """--adaptive-compute on a task checkpoint: task_report.json and task_heatmap.png (steps of
    every token of one held-out problem per rung, at the checkpoint's halting threshold)."""
    from trmlm.bench.adaptive_tasks import print_task_adaptive_table, run_task_adaptive_bench
    from trmlm.lm.halting import HaltPolicy
    from trmlm.lm.tasks import rungs
    from trmlm.lm.tasks.score import greedy_batch

    if problems < 1:
        raise TRMError("--problems must be >= 1")
    examples = task.examples(problems, lm.cfg.data.task_eval_seed if seed is None else seed)
    model = lm.model.to(device)
    report = run_task_adaptive_bench(model, lm.tokenizer, task, examples, settings, max_steps=max_steps,
                                     console=Console(stderr=True), progress=progress,
                                     threshold=lm.generation.halt_threshold)
    report.update(checkpoint=str(lm.path) if getattr(lm, "path", None) else None, parameters=model.num_parameters(),
                  train_step=lm.meta.get("step"))
    print_task_adaptive_table(report, console)
    files = {"report": write_json(out_dir / "task_report.json", report)}
    # Heat map: one held-out problem per rung, prompt then the greedy answer, coloured by steps.
    policy = HaltPolicy(max_steps=lm.cfg.model.max_sup_steps, min_steps=lm.cfg.halt.min_steps,
                        threshold=lm.generation.halt_threshold)
    pieces, steps = [], []
    for rung in rungs(task):
        ex = next((e for e in examples if e.task == rung.name), None)
        if ex is None:
            continue
        g = greedy_batch(model, lm.tokenizer, [ex.prompt], rung.max_target, policy)
        text = ex.prompt + g.texts[0]
        ids = lm.tokenizer.encode(text)
        # position i's steps went into predicting token i + 1: shown on the token it produced
        # (the first prompt token, predicted by nothing, shows 0 = grey)
        pieces += [lm.tokenizer.decode([t]) for t in ids]
        steps += [0] + g.steps[0, :len(ids) - 1].tolist()
    report["heatmap_threshold"] = policy.threshold
    try:
        from trmlm.bench.plots import token_heatmap

        files["heatmap"] = token_heatmap(pieces, steps, policy.max_steps,
                                         f"{task.name}: steps that produced each token "
                                         f"(halt q>={policy.threshold:g})", out_dir / "task_heatmap.png",
                                         per_line=96)
    except TRMError as e:
        console.print(f"[yellow]plots skipped: {e}[/yellow]")
    for name, path in files.items():
        console.print(f"wrote {path}")
    return report


def decode_config(checkpoint: Path | None, preset_cfg: LMConfig | None) -> LMConfig:
    """The architecture to time: a checkpoint's (weights are not needed) or a preset's."""
    if checkpoint is not None:
        lm = load_lm(checkpoint)
        return lm.cfg
    if preset_cfg is None:
        raise TRMError("--decode needs --checkpoint or --preset")
    return preset_cfg


def bench_decode(cfg: LMConfig, prefixes: list[int] | None, tokens: int, gpt2: bool, out_dir: Path,
                 console: Console, progress: bool = True, device: str = "cpu") -> dict[str, Any]:
    """--decode: decode.json in out_dir."""
    report = run_decode_bench(cfg, prefixes, tokens, gpt2=gpt2, console=Console(stderr=True),
                              progress=progress, device=device)
    print_decode_tables(report, console)
    console.print(f"wrote {write_json(out_dir / 'decode.json', report)}")
    return report
