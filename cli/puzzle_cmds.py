"""Puzzle commands: train-puzzle, solve, eval-puzzle."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import typer

from trmlm.cli.common import DeviceOpt, ThreadsOpt, metrics_table
from trmlm.puzzles.run import solved as _solved
from trmlm.cli.common import (DeepSpeedOpt, LoggerOpt, NprocOpt, OverwriteOpt, ResumeOpt, check_output_file,
                        configs_dir, err, make_run_logger, out, parallel_setup, prepare_run_dir, user_errors)
from trmlm.puzzles.run import DEFAULT_PRESETS, fit_model_to_data, get_task, load_model, resolve_config
from trmlm.configtools import to_dict
from trmlm.errors import TRMError
from trmlm.logging import require_logger
from trmlm.puzzle.eval import evaluate, trace_supervision
from trmlm.cli.view_cmds import EVAL_PAGE_PUZZLES, HTML_HELP, puzzle_page
from trmlm.puzzle.train import run_config_defaults, run_config_dict, train_puzzle
from trmlm.runtime import resolve_runtime
from trmlm.puzzle.registry import build_puzzle_model


def train_puzzle_cmd(
    task: str = typer.Argument(..., help="Puzzle task: sudoku, maze or arc."),
    preset: Optional[str] = typer.Option(None, help="Preset name in configs/ (default: the task's CPU preset) or a YAML path."),
    config: Optional[str] = typer.Option(None, "--config", help="YAML file merged over the preset."),
    set_: list[str] = typer.Option([], "--set", help="Override, e.g. --set model.d_model=128 (repeatable)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Checkpoint directory (default runs/<preset>)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    deepspeed: DeepSpeedOpt = None,
    nproc: NprocOpt = 1,
    logger_kind: LoggerOpt = "jsonl",
    model_arch: Optional[str] = typer.Option(None, "--model", help="Architecture: trm (default), hrm or direct (sets model.arch; docs/baselines.md)."),
) -> None:
    """Train a TRM on a puzzle task; periodic held-out evaluation; ends by solving a held-out puzzle."""
    mod = get_task(task)
    run = resolve_config(task, configs_dir(), preset, config,
                         [*set_, *([f"model.arch={model_arch}"] if model_arch else [])])
    name = Path(preset).stem if preset else DEFAULT_PRESETS[task]
    out_path = out_dir or Path("runs") / name
    require_logger(logger_kind)
    run_config = run_config_dict(task, run.model, run.train, run.data)
    ds_config = parallel_setup(nproc, deepspeed, run.train, prepare=lambda: prepare_run_dir(
        out_path, resume, overwrite, run_config, deepspeed is not None,
        lambda: build_puzzle_model(run.model), run.train, run_config_defaults()))
    main_rank = os.environ.get("RANK", "0") == "0"
    quiet = quiet or not main_rank
    data = mod.build_data(run.data, progress=not quiet)  # bad data fails here, before any output
    m = fit_model_to_data(run, data).model  # check: an embedding row for every puzzle id
    if main_rank:
        err.print(f"[bold]trm train-puzzle {task}[/bold]  preset={name}  out={out_path}")
        _describe(data.description, m, run.train)

    def on_eval(row: dict) -> None:
        err.print(f"  eval @ step {row['step']:>6}  train {row['train_s']:>7.1f}s  exact {row['exact_acc']:.3f}  "
                  f"cell {row['cell_acc']:.3f}  blank-cell {row['blank_cell_acc']:.3f}  "
                  f"halt@{row['mean_halt_step']:.1f}")

    logger = make_run_logger(logger_kind, out_path, resume, name, run_config)
    try:
        result = train_puzzle(run.model, run.train, data, out_dir=out_path,
                              run_config=run_config, logger=logger, progress=not quiet, console=err, on_eval=on_eval,
                              resume=resume, deepspeed_config=ds_config)
    finally:
        logger.close()
    if not main_rank:
        return
    (out_path / "curve.json").write_text(json.dumps(result.history, indent=1))
    err.print(f"done: {result.steps} steps in {result.seconds / 60:.1f} min; "
              f"held-out exact accuracy {result.final.get('exact_acc', float('nan')):.3f} "
              f"on {result.final.get('n_eval', 0)} puzzles; checkpoint {result.checkpoint}")
    _show_held_out(mod, result.model, data.eval, run.train.device)


def _describe(description: str, m, t) -> None:
    err.print(f"data: {description}")
    err.print(f"model: {m.arch} {m.mixer}, D={m.d_model}, {m.n_layers} layers, n={m.n_latent}, T={m.n_cycles}, "
              f"N_sup={m.max_sup_steps} (effective depth {m.effective_depth} per step); "
              f"train: batch {t.batch_size}, {t.train_steps} steps"
              + (f", budget {t.max_minutes:g} min" if t.max_minutes else ""))


def _show_held_out(mod, model, held_out: dict, device: str, look: int = 64) -> None:
    """Solve the first held-out puzzles; show the first one, and the first solved if it is not."""
    rt = resolve_runtime(device)
    model.to(rt.device)
    inputs = torch.as_tensor(held_out["inputs"][:look], dtype=torch.long, device=rt.device)
    labels = held_out["labels"][:look]
    ids = torch.as_tensor(held_out["puzzle_ids"][:look], dtype=torch.long, device=rt.device)
    preds = trace_supervision(model, inputs, ids, runtime=rt).predictions[-1]
    solved = _solved(mod, held_out["inputs"][:look], preds, labels)
    out.print(f"\nHeld-out puzzle #0 ({'solved' if solved[0] else 'NOT solved'}):")
    out.print(mod.render(held_out["inputs"][0], preds[0], labels[0]))
    if not solved[0] and solved.any():
        k = int(np.argmax(solved))
        out.print(f"\nFirst solved held-out puzzle, #{k} ({int(solved.sum())} of the first {len(solved)} solved):")
        out.print(mod.render(held_out["inputs"][k], preds[k], labels[k]))


def _read_puzzle_arg(puzzle: str) -> str:
    """The puzzle text: the argument itself, the file it names, or stdin for '-' (UTF-8)."""
    if puzzle == "-":
        raw, where = sys.stdin.buffer.read(), "stdin"
    elif len(puzzle) < 256 and Path(puzzle).is_file():
        try:
            raw, where = Path(puzzle).read_bytes(), puzzle
        except OSError as exc:
            raise TRMError(f"cannot read {puzzle}: {exc.strerror or type(exc).__name__}") from None
    else:
        return puzzle
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TRMError(f"{where} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None


MAX_SOLVE_STEPS = 1024  # --steps bound: every step is a forward pass and a kept trace row


def solve_cmd(
    task: str = typer.Argument(..., help="Puzzle task: sudoku, maze or arc."),
    puzzle: str = typer.Argument(..., help="The puzzle (sudoku: 81 cells, '.' = blank; maze: N lines of '# SG'; arc: grid or task JSON), a file, or - for stdin."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint directory from train-puzzle."),
    show_steps: bool = typer.Option(False, "--show-steps", help="Render the grid after every supervision step."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    steps: Optional[int] = typer.Option(None, help=f"Supervision steps, 1 to {MAX_SOLVE_STEPS} (default N_sup; beyond N_sup the steps were never trained)."),
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 0,
    html: Optional[Path] = typer.Option(None, "--html", help=HTML_HELP),
) -> None:
    """Solve one puzzle with a trained model; --show-steps shows the recursion correcting itself."""
    mod = get_task(task)
    if steps is not None and not 1 <= steps <= MAX_SOLVE_STEPS:
        raise TRMError(f"--steps must lie in 1..{MAX_SOLVE_STEPS}, got {steps}")
    html = check_output_file(html, "--html") if html is not None else None  # before any work
    tokens = mod.parse_input(_read_puzzle_arg(puzzle))
    model, run, _ = load_model(checkpoint, task)
    if len(tokens) != model.cfg.seq_len:
        raise TRMError(f"the puzzle has {len(tokens)} cells but the model was trained on {model.cfg.seq_len}")
    if steps is not None and steps > model.cfg.max_sup_steps:
        err.print(f"warning: --steps {steps} exceeds the trained N_sup = {model.cfg.max_sup_steps}: steps "
                  f"{model.cfg.max_sup_steps + 1}..{steps} were never trained", soft_wrap=True)
    rt = resolve_runtime(device, "auto", threads)  # wherever it was trained (auto: what this machine has)
    model.to(rt.device)
    t0 = time.perf_counter()
    inputs = torch.as_tensor(tokens[None], device=rt.device)
    tr = trace_supervision(model, inputs, None, steps, rt)
    seconds = time.perf_counter() - t0
    target = mod.reference_solution(tokens)
    final = tr.predictions[-1, 0]
    fired = np.nonzero(tr.q_halt[:, 0] > 0)[0]
    halt_step = int(fired[0]) + 1 if len(fired) else None
    correct = bool(target is not None and _solved(mod, tokens[None], final[None], target[None])[0])
    if html is not None:
        per_step = None if target is None else np.stack([_solved(mod, tokens[None], p, target[None]) for p in tr.predictions])
        puzzle_page(html, task, mod, tokens[None], tr.predictions, tr.q_halt, [target], per_step,
                    title=f"trm solve {task}", note=str(checkpoint))
    if as_json:
        out.print_json(json.dumps({
            "task": task, "puzzle": mod.to_text(tokens), "prediction": mod.to_text(final),
            "correct": correct, "unique_solution": target is not None,
            "halt_step": halt_step, "steps": [
                {"step": s + 1, "prediction": mod.to_text(tr.predictions[s, 0]),
                 "q_halt": round(float(tr.q_halt[s, 0]), 4),
                 "confidence": round(float(tr.confidence[s, 0]), 4)}
                for s in range(len(tr.predictions))] if show_steps else None,
            "seconds": round(seconds, 4)}))
        return
    if show_steps:
        prev = None
        for s in range(len(tr.predictions)):
            pred = tr.predictions[s, 0]
            changed = 0 if prev is None else int((pred != prev).sum())
            wrong = None if target is None else int((pred != target).sum())
            head = f"step {s + 1}: q_halt {tr.q_halt[s, 0]:+.2f}"
            if hasattr(mod, "step_note"):  # maze: how far the path has grown (many shortest paths)
                head += ", " + mod.step_note(tokens, pred, prev, target)
            else:
                head += f", {changed} cells changed" if prev is not None else ""
                head += f", {wrong} wrong" if wrong is not None else ""
            out.print(f"[bold]{head}[/bold]", soft_wrap=True)
            grid = mod.render_step(tokens, pred, prev, target) if hasattr(mod, "render_step") else \
                mod.render(tokens, pred, target)
            out.print(grid + "\n")
            prev = pred
    else:
        out.print(mod.render(tokens, final, target))
    verdict = ("[green]correct[/green]" if correct else
               "[red]wrong[/red]" if target is not None else "no unique reference solution")
    halt = f"halt head fires at step {halt_step}" if halt_step else "halt head never fired"
    err.print(f"{verdict}; {len(tr.predictions)} supervision steps; {halt}; {seconds * 1000:.0f} ms")


def eval_puzzle_cmd(
    task: str = typer.Argument(..., help="Puzzle task: sudoku, maze or arc."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint directory from train-puzzle."),
    source: Optional[str] = typer.Option(None, help="Override the data source (generate, CSV file/dir, hub id)."),
    limit: Optional[int] = typer.Option(None, help="Evaluate at most this many held-out puzzles."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
    png: Optional[Path] = typer.Option(None, "--png", help="Also save a PNG of predictions vs targets."),
    submission: Optional[Path] = typer.Option(None, "--submission", help="ARC: write submission.json (two attempts per test input)."),
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 0,
    html: Optional[Path] = typer.Option(None, "--html", help=f"Also write an interactive page of the first {EVAL_PAGE_PUZZLES} held-out puzzles, every supervision step (a .json name writes the trace, for `trm view`)."),
) -> None:
    """Evaluate a checkpoint on its held-out puzzles (Sudoku: exact match; Maze: valid and
    shortest path; ARC: voting over augmentations, pass@1/2/K)."""
    mod = get_task(task)
    if limit is not None and limit < 1:
        raise TRMError(f"--limit must be >= 1, got {limit}")
    png = check_output_file(png, "--png", ".png") if png is not None else None  # the real name
    if submission is not None:
        check_output_file(submission, "--submission")
    html = check_output_file(html, "--html") if html is not None else None
    model, run, _ = load_model(checkpoint, task)
    if source is not None and not hasattr(run.data, "source"):
        raise TRMError(f"--source does not apply to {task}; use a config with data.eval_sets")
    data_cfg = run.data if source is None else _with_source(run.data, source)
    rt = resolve_runtime(device, "auto", threads)
    model.to(rt.device)
    if hasattr(mod, "evaluate_model"):  # ARC: its own voting protocol over augmentations
        metrics = mod.evaluate_model(model, data_cfg, rt, run.train.eval_batch_size, limit, submission)
        data = None
    else:
        if submission is not None:
            raise TRMError("--submission is only for arc")
        data = mod.build_data(data_cfg, progress=not as_json)  # no held-out puzzles left: an error
        metrics = evaluate(model, data.eval, rt, run.train.eval_batch_size, limit=limit,
                           is_correct=getattr(mod, "score", None))
    if png is not None:
        from trmlm.puzzles.plot import save_predictions_png
        held_out = data.eval if data is not None else mod.build_data(data_cfg).eval
        metrics["png"] = str(save_predictions_png(png, model, held_out, rt, mod))
    if html is not None:
        held_out = data.eval if data is not None else mod.build_data(data_cfg).eval
        metrics["html"] = str(_eval_page(html, task, mod, model, held_out, rt, str(checkpoint)))
    if as_json:
        out.print_json(json.dumps(metrics))
        return
    out.print(metrics_table(f"{task}: {checkpoint}", metrics))
    if data is not None:
        err.print(data.description)


def _with_source(data_cfg, source: str):
    """The checkpoint's data config with another source. The generator's own filters (the maze
    preset's unique_path) do not apply to given puzzles, which are taken as they are."""
    fields = {**to_dict(data_cfg), "source": source}
    if source != "generate" and fields.get("unique_path"):
        fields["unique_path"] = False
    try:
        return type(data_cfg)(**fields)
    except ValueError as exc:
        raise TRMError(f"--source {source}: {exc}") from None


def _eval_page(path: Path, task: str, mod, model, held_out: dict, rt, note: str) -> Path:
    """The viewer page of the first held-out puzzles: every supervision step of each."""
    k = EVAL_PAGE_PUZZLES
    inputs, labels = np.asarray(held_out["inputs"][:k], np.int64), np.asarray(held_out["labels"][:k], np.int64)
    ids = torch.as_tensor(np.asarray(held_out["puzzle_ids"][:k], np.int64), device=rt.device)
    tr = trace_supervision(model, torch.as_tensor(inputs, device=rt.device), ids, runtime=rt)
    per_step = np.stack([_solved(mod, inputs, p, labels) for p in tr.predictions])
    return puzzle_page(path, task, mod, inputs, tr.predictions, tr.q_halt, list(labels), per_step,
                       title=f"trm eval-puzzle {task}", note=note,
                       names=[f"held-out #{i}" for i in range(len(inputs))])


def register(app: typer.Typer) -> None:
    app.command("train-puzzle")(user_errors(train_puzzle_cmd))
    app.command("solve")(user_errors(solve_cmd))
    app.command("eval-puzzle")(user_errors(eval_puzzle_cmd))
