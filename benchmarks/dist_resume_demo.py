"""Demonstrations: 1 vs 2 processes (plain and DeepSpeed ZeRO-2) give the same loss curve, and a
run killed with SIGKILL then resumed follows the uninterrupted run's curve.

    python benchmarks/dist_resume_demo.py [--steps 12] [--out benchmarks/results]

Uses the tiny Sudoku preset on CPU (gloo), prints tables and writes dist_resume_demo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
BASE = ["train-puzzle", "sudoku", "--preset", "sudoku-tiny", "--quiet", "--set", "train.threads=1",
        "--set", "train.log_every=1", "--set", "train.eval_every=100000", "--set", "train.batch_size=16"]


def trm(args: list[str], wait: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "trmlm.cli.main", *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(cmd, env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="trm-demo-"))
    n = ["--set", f"train.train_steps={args.steps}"]
    runs = {"1 process": [], "2 processes (gloo)": ["--nproc", "2"],
            "2 processes, DeepSpeed ZeRO-2": ["--nproc", "2", "--deepspeed", str(REPO / "configs/deepspeed/zero2.json")]}
    curves = {}
    for name, extra in runs.items():
        out = tmp / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
        t = time.time()
        trm([*BASE, *n, "--out", str(out), *extra])
        curves[name] = losses(out)
        console.print(f"{name}: {time.time() - t:.0f} s")
    table = Table(title="loss per step (global batch 16, tiny Sudoku preset, CPU)")
    table.add_column("step", justify="right")
    for name in curves:
        table.add_column(name, justify="right")
    for s in range(1, args.steps + 1):
        table.add_row(str(s), *[f"{curves[k][s]:.6f}" for k in curves])
    console.print(table)
    ref = curves["1 process"]
    diffs = {k: max(abs(v[s] - ref[s]) for s in ref) for k, v in curves.items()}
    console.print("max |loss - 1 process loss|: " + ", ".join(f"{k}: {d:.1e}" for k, d in diffs.items()))

    # kill and resume
    steps = 4 * args.steps
    ck = ["--set", f"train.train_steps={steps}", "--set", "train.checkpoint_every=5"]
    full, killed = tmp / "uninterrupted", tmp / "killed"
    trm([*BASE, *ck, "--out", str(full)])
    proc = trm([*BASE, *ck, "--out", str(killed)], wait=False)
    latest = killed / "train_state" / "latest"
    def logged() -> int:  # last step written to metrics.jsonl (between two saved states)
        try:
            return max(losses(killed), default=0)
        except (OSError, ValueError):
            return 0

    # kill between two saved states (every 5 steps): after step 18 is logged, before 20 is saved
    while proc.poll() is None and not (latest.is_file() and latest.read_text().strip() >= "step_00000015"
                                       and logged() >= 18):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = latest.read_text().strip()
    last_logged = max(losses(killed))
    trm([*BASE, *ck, "--out", str(killed), "--resume"])
    resumed_from = int(saved.split("_")[1])
    a, b = losses(full), losses(killed)
    table = Table(title=f"SIGKILL after step {last_logged}; resumed from {saved}")
    for col in ("step", "uninterrupted", "killed + resumed", "diff"):
        table.add_column(col, justify="right")
    for s in range(resumed_from + 1, min(resumed_from + 9, steps + 1)):
        table.add_row(str(s), f"{a[s]:.6f}", f"{b[s]:.6f}", f"{b[s] - a[s]:.1e}")
    console.print(table)
    resume_diff = max(abs(a[s] - b[s]) for s in range(resumed_from + 1, steps + 1))
    console.print(f"max |diff| over steps {resumed_from + 1}..{steps}: {resume_diff:.1e}")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "dist_resume_demo", "hardware": "CPU, gloo, 1 thread per process",
              "parallel_max_abs_diff": diffs, "killed_after_step": last_logged, "resumed_from": saved,
              "resume_max_abs_diff": resume_diff,
              "curves": {k: {str(s): v for s, v in c.items()} for k, c in curves.items()}}
    (args.out / "dist_resume_demo.json").write_text(json.dumps(report, indent=1))
    console.print(f"wrote {args.out / 'dist_resume_demo.json'}")


if __name__ == "__main__":
    main()
