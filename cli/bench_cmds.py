"""`trm bench`: adaptive compute, decode speed and training throughput (docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from trmlm.cli.common import check_output_dir, configs_dir, out, user_errors
from trmlm.errors import TRMError

DEFAULT_LM_PRESET = "lm-shakespeare-cpu"


def _numbers(text: str, kind: type, option: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise TRMError(f"{option} takes comma-separated numbers, got {text!r}") from None
    if not values:
        raise TRMError(f"{option} is empty")
    return values


def bench_cmd(
    adaptive_compute: bool = typer.Option(False, "--adaptive-compute", help="Quality vs compute of per-token exits (needs --checkpoint)."),
    decode: bool = typer.Option(False, "--decode", help="Cached decode time vs prefix length, against an equal-FLOPs GPT-2."),
    train_step: bool = typer.Option(False, "--train-step", help="Training throughput and MFU of puzzle and LM configs."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A train-lm checkpoint directory (TRM)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Held-out text file (default: the checkpoint's held-out split)."),
    out_dir: Path = typer.Option(Path("runs/bench"), "--out", help="Directory for report.json / decode.json / train_step.json and PNGs."),
    tokens: int = typer.Option(2048, help="Held-out tokens per exit rule (adaptive compute)."),
    task: Optional[str] = typer.Option(None, "--task", help="Adaptive compute on a reasoning-text task (default: the checkpoint's task, if it was trained on one): exact answers and steps per token category for every exit rule."),
    problems: int = typer.Option(300, help="Held-out test problems per exit rule (--task)."),
    max_steps: int = typer.Option(0, help="Deepest fixed depth swept with --task (0 = N_sup; more = test-time depth beyond training)."),
    thresholds: str = typer.Option("0.05,0.1,0.2,0.3,0.5,0.7,0.9", help="Learned-halting thresholds to sweep."),
    kl_eps: str = typer.Option("0.1,0.01,0.001", help="KL-exit thresholds (nats) to sweep."),
    preset: str = typer.Option(DEFAULT_LM_PRESET, help="LM preset timed by --decode when no --checkpoint is given."),
    prefix_lengths: str = typer.Option("64,128,256,512,1024", help="Prefix lengths for --decode."),
    decode_tokens: int = typer.Option(32, help="Timed tokens per prefix length (--decode)."),
    no_gpt2: bool = typer.Option(False, "--no-gpt2", help="Skip the transformers GPT-2 baseline (--decode)."),
    batch: int = typer.Option(16, help="Puzzles per training step (--train-step; the paper uses 768)."),
    lm_batch: int = typer.Option(0, help="LM windows per training step (--train-step; 0 = 16, lm-paper 1 window cut to 1 supervision step)."),
    presets: str = typer.Option("", help="Comma-separated presets for --train-step (default: the paper Sudoku configs, sudoku-cpu, lm-shakespeare-cpu, lm-paper)."),
    steps: int = typer.Option(3, help="Timed training steps per config (--train-step; the median is kept)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda for --adaptive-compute and --decode (fp32; timings synchronize CUDA). --train-step measures the CPU."),
    threads: int = typer.Option(0, help="CPU threads (0 = torch default)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Benchmarks: every figure printed as a table and written as JSON (with hardware and scale).

    --adaptive-compute: on held-out text at batch 1, sequential with the real KV cache, learned
    halting over a threshold sweep, every fixed depth 1..N_sup, random exits of the same mean
    depth, an oracle exit and training-free exits (KL between steps, argmax stability): bits per
    character, agreement with full depth, steps per token, FLOPs and KV bytes per token, tokens/s;
    report.json + pareto.png, steps_hist.png, heatmap.png.
    --decode: ms per token vs prefix length against a transformers GPT-2 of equal FLOPs per token,
    and KV bytes per token vs recursion depth; decode.json.
    --train-step: training-step throughput and fraction of the measured matmul peak; train_step.json.
    """
    from trmlm.runtime import resolve_runtime

    if not (adaptive_compute or decode or train_step):
        raise TRMError("choose at least one of --adaptive-compute, --decode, --train-step")
    check_output_dir(out_dir)
    rt = resolve_runtime(device, "float32", threads)
    progress = not quiet
    console = out if out.is_terminal else Console(highlight=False, width=200)  # tables unwrapped in files
    if adaptive_compute:
        from trmlm.bench.adaptive import AdaptiveSettings
        from trmlm.bench.run import bench_adaptive

        if checkpoint is None:
            raise TRMError("--adaptive-compute needs --checkpoint DIR (a TRM trained with `trm train-lm`)")
        settings = AdaptiveSettings(thresholds=_numbers(thresholds, float, "--thresholds"),
                                    kl_eps=_numbers(kl_eps, float, "--kl-eps"))
        from trmlm.lm.checkpoint import load_lm

        task_name = task or ("" if data is not None else load_lm(checkpoint).cfg.data.task)
        if task_name:
            from trmlm.bench.run import bench_adaptive_task
            from trmlm.puzzles.lm_tasks import get_task

            bench_adaptive_task(load_lm(checkpoint), get_task(task_name), problems, settings, out_dir,
                                console, progress, rt.device, max_steps=max_steps,
                                seed=load_lm(checkpoint).cfg.data.task_test_seed)
        else:
            bench_adaptive(checkpoint, data, tokens, settings, out_dir, console, progress, rt.device)
    if decode:
        from trmlm.bench.run import bench_decode, decode_config
        from trmlm.lm.config import load_lm_config

        prefixes = _numbers(prefix_lengths, int, "--prefix-lengths")
        cfg = None
        if checkpoint is None:
            preset_file = configs_dir() / f"{preset}.yaml"
            if not preset_file.is_file():
                raise TRMError(f"unknown LM preset {preset!r}")
            cfg = load_lm_config(preset, [], [], configs_dir())  # the preset's vocabulary size
        bench_decode(decode_config(checkpoint, cfg), prefixes, decode_tokens, not no_gpt2, out_dir, console,
                     progress, rt.device)
    if train_step:
        from trmlm.puzzles.throughput import run_train_step_bench

        if batch < 1 or steps < 1 or lm_batch < 0:
            raise TRMError("--batch and --steps must be >= 1, --lm-batch >= 0")
        import torch

        chosen = [p.strip() for p in presets.split(",") if p.strip()]
        run_train_step_bench(out_dir, threads=threads or torch.get_num_threads(), batch=batch,
                             lm_batch=lm_batch or None, steps=steps,
                             presets=[p for p in chosen if not p.startswith("lm-")] if chosen else None,
                             lm_presets=[p for p in chosen if p.startswith("lm-")] if chosen else None,
                             console=console, progress=progress, configs_dir=configs_dir())


def register(app: typer.Typer) -> None:
    app.command("bench")(user_errors(bench_cmd))
