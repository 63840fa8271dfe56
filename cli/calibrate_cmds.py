"""`trm calibrate-halt`: refit an LM checkpoint's halting head on the states decoding reaches."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from trmlm.cli.common import DeviceOpt, ThreadsOpt, err, out
from trmlm.errors import TRMError


def calibrate_halt_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="TRM LM checkpoint directory (train-lm)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Where to write the calibrated checkpoint (default: CHECKPOINT-halt). Never the input directory."),
    margin: float = typer.Option(0.02, help="Nats: halt after a step unless a later step lowers the token's loss by more than this (0.02 chosen on arithmetic validation problems for --scored all, 0.005 for --scored targets)."),
    label: str = typer.Option("loss", help="What the labels judge: loss (halt unless a later step lowers the loss by more than --margin) | argmax (halt once the step's top token is the true next token, or no later step's is: what greedy decoding keeps; --margin unused)."),
    threshold: float = typer.Option(0.5, help="The exit the head is fitted for (sigmoid(q) >= this); stored as the checkpoint's default."),
    max_steps: int = typer.Option(0, help="Depth labelled and allowed (0 = N_sup)."),
    windows: int = typer.Option(256, help="Training-distribution windows the labels come from (fresh problems for a task, the train split for text)."),
    rounds: int = typer.Option(2, help="Round r+1 labels the states under the cache of round r's exit."),
    sweeps: int = typer.Option(4, help="Jacobi sweeps behind each round's cache."),
    scored: str = typer.Option("all", help="Positions whose own prediction the labels judge: all (a language model) | targets (a task checkpoint: only positions predicting an answer token; the rest are labelled 'halt now')."),
    pick_threshold: str = typer.Option("", help="Comma list of exit thresholds (e.g. 0.5,0.9,0.99,0.995,0.999): after the fit, decode the task's validation problems at full depth and at each, and store the one with the fewest mean steps per token within --pick-tolerance of full depth's exact accuracy (else the most accurate) instead of --threshold. Task checkpoints only; the test problems are never read."),
    pick_tolerance: float = typer.Option(0.01, help="Exact-answer accuracy a picked threshold may lose against full depth on the validation problems."),
    pick_problems: int = typer.Option(200, help="Validation problems decoded per candidate threshold."),
    seed: int = typer.Option(1234, help="Seed of the calibration windows (training used train.seed)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 0,
) -> None:
    """Refit the halting head q (and only it) on labels from the states sequential decoding reaches.

    Every other weight is kept. The labels say "halt after step s" unless a later step lowers the
    token's next-token loss by more than --margin (docs/lm-experiments.md, "Halting calibrated on
    decoding's states"). Writes a new checkpoint; the input directory is never touched.
    """
    import dataclasses

    import numpy as np

    from trmlm.lm.calibrate import CalibrationConfig, calibrate_halting
    from trmlm.lm.checkpoint import load_lm, save_lm
    from trmlm.lm.model import TRMLanguageModel
    from trmlm.runtime import resolve_runtime

    target = out_dir or checkpoint.with_name(checkpoint.name + "-halt")
    if target.resolve() == checkpoint.resolve():
        raise TRMError("--out must differ from --checkpoint (the original halting head is kept)")
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise TRMError(f"{target} exists and is not empty (give --overwrite to replace it)")
    if scored not in ("all", "targets"):
        raise TRMError(f"--scored must be all or targets, got {scored!r}")
    if windows < 1:
        raise TRMError("--windows must be >= 1")
    candidates = _thresholds(pick_threshold)
    if candidates and not 0.0 <= pick_tolerance < 1.0:
        raise TRMError(f"--pick-tolerance must lie in [0, 1), got {pick_tolerance:g}")
    if candidates and pick_problems < 1:
        raise TRMError("--pick-problems must be >= 1")
    try:
        cal = CalibrationConfig(margin=margin, threshold=threshold, max_steps=max_steps,
                                rounds=rounds, sweeps=sweeps, label=label)
    except ValueError as exc:
        raise TRMError(str(exc)) from None
    rt = resolve_runtime(device, "float32", threads)
    lm = load_lm(checkpoint)
    if not isinstance(lm.model, TRMLanguageModel):
        raise TRMError(f"{checkpoint} is a {lm.cfg.arch} checkpoint: only a TRM has a halting head")
    generation = dataclasses.replace(lm.generation, halt_threshold=threshold,
                                     max_steps=max_steps or lm.generation.max_steps)
    generation.validate(lm.cfg.model.max_sup_steps)  # --max-steps at most 4 x N_sup
    if warning := generation.depth_warning(lm.cfg.model.max_sup_steps):
        err.print(f"warning: {warning}", soft_wrap=True)
    lm.model.to(rt.device)
    rng = np.random.default_rng(seed)
    mask = None
    if candidates and not lm.cfg.data.task:
        raise TRMError(f"--pick-threshold decodes a task's validation problems; {checkpoint} was trained on text")
    if scored == "targets" and not lm.cfg.data.task:
        raise TRMError(f"--scored targets needs a checkpoint trained on a task; {checkpoint} was trained on text")
    if lm.cfg.data.task:
        from trmlm.lm.prepare import prepare_task
        from trmlm.lm.tasks.batches import TaskBatches
        from trmlm.puzzles.lm_tasks import get_task

        _, _, setup = prepare_task(lm.cfg, get_task(lm.cfg.data.task), lm.tokenizer)
        batches = TaskBatches(setup.task, lm.tokenizer, lm.cfg.context, setup.heldout + setup.test,
                              loss_on="target" if scored == "targets" else "all")
        ids, mask = batches.draw(rng, windows)
    else:
        from trmlm.lm.data import random_windows
        from trmlm.lm.prepare import prepare_data

        _, data = prepare_data(lm.cfg, lm.tokenizer)
        ids = random_windows(data.train, windows, lm.cfg.context, rng)

    def show(row: dict) -> None:
        if not as_json:
            err.print(f"round {row['round']} ({row['cache']} cache): mean label per step "
                      f"{row['mean_label_per_step']}, BCE {row['bce']:.4f}, exit at {threshold:g} after "
                      f"{row['mean_exit_step']:.2f} steps (oracle {row['oracle_mean_step']:.2f})", soft_wrap=True)

    report = calibrate_halting(lm.model, ids.to(rt.device), cal, scored=mask, on_round=show)
    report.update(checkpoint=str(checkpoint), seed=seed, scored=scored)
    if candidates:
        report["threshold_pick"] = _pick(lm, setup, candidates, generation.max_steps or
                                         lm.cfg.model.max_sup_steps, pick_tolerance, pick_problems, as_json)
        generation = dataclasses.replace(generation, halt_threshold=report["threshold_pick"]["picked"])
    meta = dict(lm.meta, halt_calibration=report)
    save_lm(target, lm.model.state_dict(), lm.cfg, lm.tokenizer, meta, generation)
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    judged = f"margin {margin:g} nats" if label == "loss" else "argmax labels"
    out.print(f"calibrated halting head written to {target} ({judged}, fitted at {threshold:g}, "
              f"stored threshold {generation.halt_threshold:g})")


def _thresholds(text: str) -> list[float]:
    """--pick-threshold: a comma list of thresholds in (0, 1); empty = no pick."""
    values = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            values.append(float(part))
        except ValueError:
            raise TRMError(f"--pick-threshold: {part!r} is not a number") from None
        if not 0.0 < values[-1] < 1.0:
            raise TRMError(f"--pick-threshold: thresholds lie in (0, 1), got {part}")
    if text.strip() and not values:
        raise TRMError(f"--pick-threshold: a comma list of thresholds, got {text!r}")
    return values


def _pick(lm, setup, candidates: list[float], max_steps: int, tolerance: float, problems: int,
          quiet: bool) -> dict:
    """Decode the validation problems at full depth and at every candidate; the pick and its rows."""
    from trmlm.lm.calibrate import threshold_sweep

    task = setup.task  # the first `problems` validation problems (a prefix of the ones prepare_task made)
    examples = (setup.heldout[:problems] if problems <= len(setup.heldout)
                else task.examples(problems, lm.cfg.data.task_eval_seed))  # (score_task checks they fit)

    def show(row: dict) -> None:
        if not quiet:
            name = "full depth" if row["threshold"] is None else f"q >= {row['threshold']:g}"
            err.print(f"validation ({problems} problems), {name}: exact {row['exact_acc']:.3f} at "
                      f"{row['steps_mean']:.2f} mean steps per token", soft_wrap=True)

    pick = threshold_sweep(lm.model, lm.tokenizer, task, examples, candidates, max_steps, tolerance, show)
    if not pick["within_tolerance"]:
        err.print(f"warning: no candidate threshold is within {tolerance:g} of full depth on the validation "
                  f"problems; storing the most accurate, {pick['picked']:g}", soft_wrap=True)
    return dict(pick, split="val", seed=lm.cfg.data.task_eval_seed)
