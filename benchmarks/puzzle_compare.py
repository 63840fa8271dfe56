"""TRM-MLP vs TRM-Att vs HRM vs direct prediction: same data, same wall-clock budget, same held-out set.

    python benchmarks/puzzle_compare.py --task sudoku --minutes 20   # the CPU comparison (~80 min)
    python benchmarks/puzzle_compare.py --task maze --minutes 20     # small-maze version
    python benchmarks/puzzle_compare.py --minutes 0.2 --n-train 64 --n-test 32   # smoke test

Each model starts from the task's CPU preset (configs/sudoku-cpu.yaml, configs/maze-cpu.yaml) and
changes only what defines it (docs/baselines.md). Prints a table; writes
benchmarks/results/puzzle_compare_<task>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import get_args, get_type_hints

import torch
from rich.console import Console
from rich.table import Table

from trmlm.cli.common import configs_dir
from trmlm.puzzles.run import get_task, resolve_config
from trmlm.config import TRMConfig
from trmlm.configtools import to_dict
from trmlm.puzzle.registry import build_puzzle_model
from trmlm.puzzle.train import run_config_dict, train_puzzle

PRESETS = {"sudoku": "sudoku-cpu", "maze": "maze-cpu"}
# name -> model-config changes from the CPU preset. HRM: two 4-block nets, H_cycles = L_cycles = 2
# (paper); direct: the same 2 blocks as TRM run once (same parameter count as TRM).
# The attention models' positions: ATTN_POS[task] unless --attn-pos (Sudoku: the measured table
# used 1-D RoPE; mazes: the maze-cpu preset's 2-D relative bias, docs/maze.md).
MODELS = {
    "TRM-MLP": {"arch": "trm", "mixer": "mlp", "pos_encoding": "none"},
    "TRM-Att": {"arch": "trm", "mixer": "attention"},
    "HRM": {"arch": "hrm", "mixer": "attention", "n_layers": 4, "n_cycles": 2, "n_latent": 2},
    "direct": {"arch": "direct", "mixer": "attention"},
}
ATTN_POS = {"sudoku": "rope", "maze": "grid_bias"}


def model_changes(name: str, attn_pos: str) -> dict:
    """MODELS[name] with the attention models' pos_encoding filled in."""
    changes = dict(MODELS[name])
    if changes["mixer"] == "attention":
        changes["pos_encoding"] = attn_pos
    if changes["pos_encoding"] not in ("grid", "grid_bias"):
        changes["grid_box"] = 0  # boxes exist only in the grid encodings
    return changes


def run_one(task: str, name: str, minutes: float, data, base, eval_size: int, seed: int,
            attn_pos: str) -> dict:
    model_cfg = replace(base.model, **model_changes(name, attn_pos))
    train_cfg = replace(base.train, max_minutes=minutes, train_steps=10**9, eval_every=10**9,
                        eval_size=eval_size, seed=seed)
    t0 = time.time()
    result = train_puzzle(model_cfg, train_cfg, data, out_dir=None,
                          run_config=run_config_dict(task, model_cfg, train_cfg, base.data),
                          progress=False)
    f = result.final
    return {"model": name, "arch": model_cfg.arch, "mixer": model_cfg.mixer,
            "params": build_puzzle_model(model_cfg).num_parameters(), "steps": result.steps,
            "seconds": round(time.time() - t0, 1), "exact_acc": f.get("exact_acc"),
            "cell_acc": f.get("cell_acc"), "blank_cell_acc": f.get("blank_cell_acc"), "n_eval": f.get("n_eval"),
            "model_config": to_dict(model_cfg)}


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
            and old.get("attn_pos", "rope") == report["attn_pos"])  # files from before the flag: rope
    if not same:
        return rows
    new_names = {r["model"] for r in rows}
    kept = [r for r in old.get("rows", []) if r["model"] not in new_names]
    order = list(MODELS)
    return sorted(kept + rows, key=lambda r: order.index(r["model"]) if r["model"] in order else len(order))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=sorted(PRESETS), default="sudoku")
    ap.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget per model")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--n-train", type=int, default=None, help="training puzzles (default: the preset's)")
    ap.add_argument("--n-test", type=int, default=None, help="held-out puzzles (default: the preset's)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attn-pos", default=None, choices=get_args(get_type_hints(TRMConfig)["pos_encoding"]),
                    help="pos_encoding of the attention models (default: rope for sudoku, grid_bias for maze)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sets = []
    if args.n_train is not None:
        sets.append(f"data.n_train={args.n_train}")
    if args.n_test is not None:
        sets.append(f"data.n_test={args.n_test}")
    base = resolve_config(args.task, configs_dir(), PRESETS[args.task], overrides=sets)
    data = get_task(args.task).build_data(base.data)
    eval_size = len(data.eval["inputs"])
    console = Console()
    console.print(f"{args.task}: {data.description}")
    rows = []
    attn_pos = args.attn_pos or ATTN_POS[args.task]
    for name in args.models:
        console.print(f"training {name} for {args.minutes:g} min ...")
        rows.append(run_one(args.task, name, args.minutes, data, base, eval_size, args.seed, attn_pos))
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "puzzle_compare", "task": args.task, "minutes_per_model": args.minutes,
              "threads": args.threads, "device": "cpu", "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "torch": torch.__version__, "data": data.description,
              "data_config": to_dict(base.data), "attn_pos": attn_pos, "rows": rows}
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
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
