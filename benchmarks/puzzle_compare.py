"""TRM-MLP vs TRM-Att vs HRM vs direct prediction: same data, same wall-clock budget, same held-out set.

    python benchmarks/puzzle_compare.py --task sudoku --minutes 20   # the CPU comparison (~80 min)
    python benchmarks/puzzle_compare.py --task sudoku --minutes 20 --models --ablations   # ablations (~100 min)
    python benchmarks/puzzle_compare.py --task maze --minutes 20     # small-maze version
    python benchmarks/puzzle_compare.py --minutes 0.2 --n-train 64 --n-test 32 --out /tmp/pc --png /tmp/pc/c.png

Each model starts from the task's CPU preset (configs/sudoku-cpu.yaml, configs/maze-cpu.yaml) and
changes only what defines it (docs/baselines.md); the attention models (TRM-Att, HRM, direct) all
take the positions, learning rate and warmup of the task's attention preset (ATTN_PRESETS:
sudoku-att-cpu, maze-cpu). Each model trains on 2 torch threads (--threads).
`--ablations` adds the paper's TRM ablations (Table 1) as rows, each TRM-MLP with one change
(ABLATIONS). During training every model is scored at --curve-points evenly spaced times of its
budget on the first --curve-size held-out puzzles; the final figures use the whole held-out set.
Prints a table; writes benchmarks/results/puzzle_compare_<task>.json and the curves,
docs/img/puzzle_compare_<task>.png (the smoke test above writes under /tmp instead).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple, get_args, get_type_hints

import torch
from rich.console import Console
from rich.table import Table

from trmlm.cli.common import configs_dir
from trmlm.puzzles.run import get_task, resolve_config
from trmlm.config import TRMConfig
from trmlm.configtools import to_dict
from trmlm.puzzle.eval import evaluate
from trmlm.puzzle.registry import build_puzzle_model
from trmlm.puzzle.train import run_config_dict, train_puzzle
from trmlm.runtime import resolve_runtime

PRESETS = {"sudoku": "sudoku-cpu", "maze": "maze-cpu"}
# The attention models' recipe per task: positions (pos_encoding, grid_box, grid_bias_slope,
# grid_bias_prior) and the learning rate and warmup of the task's attention preset, the measured
# fix for the "copy the givens" plateau (docs/baselines.md). TRM-MLP and its ablations keep
# PRESETS[task]'s values.
ATTN_PRESETS = {"sudoku": "sudoku-att-cpu", "maze": "maze-cpu"}
ATTN_TRAIN_KEYS = ("lr", "warmup_steps")
# name -> model-config changes from the CPU preset. HRM: two 4-block nets, H_cycles = L_cycles = 2
# (paper); direct: the same 2 blocks as TRM run once (same parameter count as TRM).
MODELS = {
    "TRM-MLP": {"arch": "trm", "mixer": "mlp", "pos_encoding": "none"},
    "TRM-Att": {"arch": "trm", "mixer": "attention"},
    "HRM": {"arch": "hrm", "mixer": "attention", "n_layers": 4, "n_cycles": 2, "n_latent": 2},
    "direct": {"arch": "direct", "mixer": "attention"},
}
# The paper's TRM ablations (Table 1, Sudoku-Extreme; TRM-FACTS.md): name -> the changes to
# TRM-MLP on the preset, {"model": ..., "train": ...}. The preset (T=2, n=3, EMA 0.99) keeps its
# other values. "T=1,n=7": the paper's (T=k, n=2k) sweep puts k=1, where no cycle runs without
# grad, at 63.2 against 87.4 for T=3, n=6; n=7 keeps the preset's effective depth
# T(n+1) x 2 layers = 16, so the row measures the no-grad cycles, not depth (every one of the
# 8 calls of f then carries grad, so a step costs more and fewer fit in the budget).
ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "TRM-MLP single-z": {"model": {"single_z": True}},               # paper 71.9
    "TRM-MLP separate-nets": {"model": {"separate_nets": True}},     # paper 82.4
    "TRM-MLP 1-step grad": {"model": {"grad": "one_step"}},          # paper 56.5
    "TRM-MLP no EMA": {"train": {"ema_decay": 0.0}},                 # paper 79.9
    "TRM-MLP T=1,n=7": {"model": {"n_cycles": 1, "n_latent": 7}},   # paper (T=1, n=2): 63.2
}
ABLATION_OF = "TRM-MLP"


class AttnRecipe(NamedTuple):
    """What every attention model (TRM-Att, HRM, direct) takes from the task's attention preset."""

    pos_encoding: str
    grid_box: int
    grid_bias_slope: float  # the prior the grid bias starts as; 0 unless pos_encoding is grid_bias
    train: dict[str, Any]
    grid_bias_prior: str = "locality"  # its shape: locality (mazes) or peers (Sudoku)


def attention_recipe(task: str, pos_encoding: str | None = None) -> AttnRecipe:
    """ATTN_PRESETS[task]'s positions, lr and warmup; `pos_encoding` (--attn-pos) replaces its positions."""
    att = resolve_config(task, configs_dir(), ATTN_PRESETS[task], overrides=[])
    pos = pos_encoding or att.model.pos_encoding
    box = att.model.grid_box if pos in ("grid", "grid_bias") else 0
    slope = att.model.grid_bias_slope if pos == "grid_bias" else 0.0
    prior = att.model.grid_bias_prior if slope else "locality"
    return AttnRecipe(pos, box, slope, {k: getattr(att.train, k) for k in ATTN_TRAIN_KEYS}, prior)


def model_changes(name: str, attn: AttnRecipe) -> dict:
    """MODELS[name] (an ablation: TRM-MLP's plus its own) with the attention models' positions filled in."""
    if name in ABLATIONS:
        changes = {**MODELS[ABLATION_OF], **ABLATIONS[name].get("model", {})}
    else:
        changes = dict(MODELS[name])
    if changes["mixer"] == "attention":
        changes["pos_encoding"] = attn.pos_encoding
        changes["grid_box"] = attn.grid_box
        changes["grid_bias_slope"] = attn.grid_bias_slope
        changes["grid_bias_prior"] = attn.grid_bias_prior
    else:
        changes["grid_box"] = 0  # boxes and the locality prior exist only in the grid encodings
        changes["grid_bias_slope"] = 0.0
    return changes


def train_changes(name: str, attn: AttnRecipe) -> dict:
    """Train-config changes: an ablation's own; the attention recipe's lr and warmup for attention models."""
    if name in MODELS and MODELS[name]["mixer"] == "attention":
        return dict(attn.train)
    return dict(ABLATIONS.get(name, {}).get("train", {}))


def selected(models: list[str], ablations: bool) -> list[str]:
    """--models, then (with --ablations) every ablation not already named; each name once."""
    return list(dict.fromkeys(models + (list(ABLATIONS) if ablations else [])))


def run_one(task: str, name: str, minutes: float, data, base, seed: int, attn: AttnRecipe,
            curve_size: int, curve_points: int) -> dict:
    """Train one model for `minutes`, scoring the first `curve_size` held-out puzzles at
    `curve_points` evenly spaced training times; the final figures cover the whole held-out set."""
    model_cfg = replace(base.model, **model_changes(name, attn))
    train_cfg = replace(base.train, **train_changes(name, attn), max_minutes=minutes, train_steps=10**9,
                        eval_every=10**9, eval_every_minutes=minutes / curve_points, eval_size=curve_size,
                        seed=seed)
    t0 = time.time()
    result = train_puzzle(model_cfg, train_cfg, data, out_dir=None,
                          run_config=run_config_dict(task, model_cfg, train_cfg, base.data),
                          progress=False)
    rt = resolve_runtime(train_cfg.device, train_cfg.dtype, train_cfg.threads)
    f = evaluate(result.model, data.eval, rt, train_cfg.eval_batch_size, is_correct=data.score)
    curve = [{"minutes": round(r["train_s"] / 60, 3), "step": r["step"], "exact_acc": r["exact_acc"],
              "cell_acc": r["cell_acc"], "blank_cell_acc": r["blank_cell_acc"], "n_eval": r["n_eval"]}
             for r in result.history]
    row = {"model": name, "arch": model_cfg.arch, "mixer": model_cfg.mixer,
           "params": build_puzzle_model(model_cfg).num_parameters(), "steps": result.steps,
           "seconds": round(time.time() - t0, 1), "exact_acc": f["exact_acc"], "cell_acc": f["cell_acc"],
           "blank_cell_acc": f["blank_cell_acc"], "n_eval": f["n_eval"], "curve": curve,
           "model_config": to_dict(model_cfg), "lr": train_cfg.lr, "warmup_steps": train_cfg.warmup_steps}
    if name in ABLATIONS:
        changed = {f"{part}.{k}": v for part, kv in ABLATIONS[name].items() for k, v in kv.items()}
        row = {**row, "ablation_of": ABLATION_OF, "changed": changed}
    return row


def merge_rows(path: Path, rows: list[dict], report: dict) -> list[dict]:
    """Re-measuring some models (--models HRM) keeps the other rows of an earlier run with the same
    task, budget, threads and data; each row records when it was measured."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for r in rows:
        r["measured"] = stamp
    if not path.exists():
        return rows
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return rows
    same = (all(old.get(k) == report[k] for k in ("minutes_per_model", "threads", "data_config"))
            and old.get("attn_pos", "rope") == report["attn_pos"]  # files from before the flag: rope
            and old.get("attn_grid_bias_slope", 0.0) == report["attn_grid_bias_slope"]  # before: 0
            and old.get("attn_grid_bias_prior", "locality") == report["attn_grid_bias_prior"]
            and old.get("attn_train", _legacy_attn_train(report)) == report["attn_train"])
    if not same:
        return rows
    new_names = {r["model"] for r in rows}
    kept = [r for r in old.get("rows", []) if r["model"] not in new_names]
    order = list(MODELS) + list(ABLATIONS)
    return sorted(kept + rows, key=lambda r: order.index(r["model"]) if r["model"] in order else len(order))


def _legacy_attn_train(report: dict) -> dict | None:
    """What a file from before `attn_train` was recorded used: the base preset's lr and warmup,
    which are today's recipe only where the attention preset is the base preset (maze)."""
    task = report.get("task")
    return report["attn_train"] if task in PRESETS and ATTN_PRESETS[task] == PRESETS[task] else None


def plot_curves(report: dict, path: Path) -> Path:
    """Held-out accuracy vs training minutes, one line per row that has a curve (ablations dashed)."""
    from trmlm.bench.plots import pyplot

    plt = pyplot()
    metric = "valid+shortest" if report["task"] == "maze" else "exact"
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in report["rows"]:
        if not r.get("curve"):
            continue  # a row kept from a file written before the curves
        ax.plot([c["minutes"] for c in r["curve"]], [c["exact_acc"] for c in r["curve"]],
                "o--" if "ablation_of" in r else "o-", markersize=4, label=r["model"])
    ax.set_xlabel("training minutes (evaluation excluded)")
    ax.set_ylabel(f"held-out {metric}")
    ax.set_xlim(left=0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{report['task']}: first {report['curve_size']} held-out puzzles, "
                 f"{report['minutes_per_model']:g} min per model, CPU fp32, {report['threads']} thread(s)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=sorted(PRESETS), default="sudoku")
    ap.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget per model")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS) + list(ABLATIONS))
    ap.add_argument("--ablations", action="store_true", help="append every ablation row (ABLATIONS) to --models")
    ap.add_argument("--n-train", type=int, default=None, help="training puzzles (default: the preset's)")
    ap.add_argument("--n-test", type=int, default=None, help="held-out puzzles (default: the preset's)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attn-pos", default=None, choices=get_args(get_type_hints(TRMConfig)["pos_encoding"]),
                    help="pos_encoding of the attention models (default: their preset's, ATTN_PRESETS)")
    ap.add_argument("--curve-size", type=int, default=200, help="held-out puzzles scored for the curves")
    ap.add_argument("--curve-points", type=int, default=8, help="curve evaluations per model, evenly spaced")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--png", type=Path, default=None, help="the curves (default: docs/img/puzzle_compare_<task>.png)")
    args = ap.parse_args(argv)
    if args.curve_size < 1 or args.curve_points < 1:
        ap.error("--curve-size and --curve-points must be >= 1")
    names = selected(args.models, args.ablations)
    if not names:
        ap.error("no models to train: name some with --models or pass --ablations")
    torch.set_num_threads(args.threads)
    sets = []
    if args.n_train is not None:
        sets.append(f"data.n_train={args.n_train}")
    if args.n_test is not None:
        sets.append(f"data.n_test={args.n_test}")
    base = resolve_config(args.task, configs_dir(), PRESETS[args.task], overrides=sets)
    data = get_task(args.task).build_data(base.data)
    eval_size = len(data.eval["inputs"])
    curve_size = min(args.curve_size, eval_size)
    console = Console()
    console.print(f"{args.task}: {data.description}")
    rows = []
    attn = attention_recipe(args.task, args.attn_pos)
    for name in names:
        console.print(f"training {name} for {args.minutes:g} min ...")
        rows.append(run_one(args.task, name, args.minutes, data, base, args.seed, attn, curve_size,
                            args.curve_points))
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "puzzle_compare", "task": args.task, "minutes_per_model": args.minutes,
              "threads": args.threads, "device": "cpu", "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "torch": torch.__version__, "data": data.description,
              "data_config": to_dict(base.data), "attn_pos": attn.pos_encoding, "attn_grid_box": attn.grid_box,
              "attn_grid_bias_slope": attn.grid_bias_slope, "attn_grid_bias_prior": attn.grid_bias_prior,
              "attn_train": attn.train, "curve_size": curve_size,
              "curve_points": args.curve_points, "rows": rows}
    path = args.out / f"puzzle_compare_{args.task}.json"
    report["rows"] = rows = merge_rows(path, rows, report)
    metric = "valid+shortest" if args.task == "maze" else "exact"
    table = Table(title=f"{args.task}: {args.minutes:g} min per model, CPU fp32, {args.threads} thread(s), "
                        f"{eval_size} held-out puzzles")
    changed = "path-cell acc" if args.task == "maze" else "blank-cell acc"
    for col in ("model", "params", "steps", f"held-out {metric}", "cell acc", changed):
        table.add_column(col, justify="right")
    for r in rows:
        blank = r.get("blank_cell_acc")
        table.add_row(r["model"], f"{r['params'] / 1e3:.0f}k", str(r["steps"]), f"{r['exact_acc']:.3f}",
                      f"{r['cell_acc']:.3f}", "" if blank is None else f"{blank:.3f}")
    console.print(table)
    path.write_text(json.dumps(report, indent=2))
    png = plot_curves(report, args.png or Path("docs/img") / f"puzzle_compare_{args.task}.png")
    console.print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
