"""A puzzle CPU preset's learning curve: held-out exact accuracy vs training time.

    python benchmarks/puzzle_curve.py                      # train sudoku-cpu (~20 min), then plot
    python benchmarks/puzzle_curve.py --from-run runs/sudoku-cpu   # plot an existing run
    python benchmarks/puzzle_curve.py --preset sudoku-hard-cpu --threads 2 --set train.eval_every=1000
    python benchmarks/puzzle_curve.py --task maze --preset maze-cpu --threads 2 \
        --out benchmarks/results/maze_cpu_curve_2threads.json --png docs/img/maze_cpu_curve_2threads.png

Writes benchmarks/results/sudoku_cpu_curve.json and docs/img/sudoku_cpu_curve.png (or --out / --png),
prints a table. "exact" is whole-grid exact for Sudoku, valid-and-shortest for mazes; the second
curve is the accuracy on the cells a solver must fill (Sudoku's blanks, a maze's path cells).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

# per task: what "exact" means, the cells a solver must fill, the preset's target (the dotted line)
TASKS = {"sudoku": ("whole-grid exact", "blank cells", 0.5), "maze": ("valid and shortest", "path cells", 0.6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from-run", type=Path, help="an existing train-puzzle output directory")
    ap.add_argument("--task", choices=tuple(TASKS), default="sudoku")
    ap.add_argument("--preset", default="sudoku-cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sudoku_cpu_curve.json"))
    ap.add_argument("--png", type=Path, default=Path("docs/img/sudoku_cpu_curve.png"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override passed to train-puzzle (repeatable), e.g. train.eval_every=1000")
    args = ap.parse_args()
    run_dir = args.from_run
    if run_dir is None:
        run_dir = Path("runs") / f"{args.preset}-curve"
        cmd = [sys.executable, "-m", "trmlm.cli.main", "train-puzzle", args.task, "--preset", args.preset,
               "--out", str(run_dir), "--set", f"train.threads={args.threads}",
               *sum((["--set", o] for o in args.overrides), [])]
        subprocess.run(cmd, check=True)
    curve = json.loads((run_dir / "curve.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    exact, filled, target = TASKS[args.task]
    table = Table(title=f"{args.preset}: held-out {exact} accuracy vs wall time")
    for col in ("step", "train min", "wall min", "exact", "cell", filled):
        table.add_column(col, justify="right")
    for r in curve:
        table.add_row(str(r["step"]), f"{r['train_s'] / 60:.1f}", f"{r['time_s'] / 60:.1f}", f"{r['exact_acc']:.3f}",
                      f"{r['cell_acc']:.3f}", f"{r['blank_cell_acc']:.3f}")
    Console().print(table)
    report = {"benchmark": f"{args.task}_cpu_curve", "preset": args.preset, "hardware":
              f"{platform.machine()} CPU, {os.cpu_count()} cores, fp32, threads={config['train']['threads'] or 'default'}",
              "data": config["data"], "model": config["model"], "curve": curve}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6))
    minutes = [r["train_s"] / 60 for r in curve]
    ax.plot(minutes, [r["exact_acc"] for r in curve], "o-", label=exact)
    ax.plot(minutes, [r["blank_cell_acc"] for r in curve], "s--", label=filled)
    ax.axhline(target, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training wall time, evaluation excluded (minutes)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    what = (f"{config['data']['n_blanks']}-blank generated puzzles" if args.task == "sudoku"
            else f"{config['data'].get('n_train')} training mazes")
    ax.set_title(f"{args.preset}, {what}, CPU fp32")
    ax.legend(loc="lower right")
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=120)
    print(f"wrote {args.out} and {args.png}")


if __name__ == "__main__":
    main()
