"""Training throughput of the paper Sudoku configs on this machine, and achieved GFLOP/s vs matmul peak.

    python benchmarks/train_throughput.py [--batch 16] [--steps 3] [--threads 2] [--out benchmarks/results]

Prints a table and writes train_throughput.json. Throughput unit: examples x supervision steps per
second (one optimizer step = one supervision step of every example in the carry).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from cli.common import configs_dir
from puzzles.run import resolve_config
from trmlm.act import act_step, new_carry
from trmlm.flops import measure_matmul_peak, train_step_flops
from trmlm.optim import build_optimizers
from trmlm.puzzle_model import TRMPuzzleModel

PRESETS = ["sudoku-extreme-mlp", "sudoku-extreme-att", "sudoku-cpu"]


def bench_preset(name: str, batch: int, steps: int, warmup: int) -> dict:
    run = resolve_config("sudoku", configs_dir(), name)
    model = TRMPuzzleModel(run.model)
    opts = build_optimizers(model, run.train)
    g = torch.Generator().manual_seed(0)
    data = {"inputs": torch.randint(1, 11, (batch, 81), generator=g),
            "labels": torch.randint(2, 11, (batch, 81), generator=g),
            "puzzle_ids": torch.zeros(batch, dtype=torch.long)}
    carry = new_carry(model, data)
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        carry, stats = act_step(model, carry)
        for o in opts:
            o.zero_grad(set_to_none=True)
        stats.loss.backward()
        for o in opts:
            o.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    sec = sorted(times)[len(times) // 2]  # median step time
    flops = train_step_flops(run.model, batch)["total"]
    m = run.model
    return {"preset": name, "mixer": m.mixer, "d_model": m.d_model, "n": m.n_latent, "T": m.n_cycles,
            "params": model.num_parameters(), "batch": batch, "step_seconds": round(sec, 4),
            "examples_x_steps_per_s": round(batch / sec, 2),
            "gflop_per_step": round(flops / 1e9, 2), "achieved_gflops": round(flops / sec / 1e9, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16, help="carry size (paper: 768; CPU-sized here)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--presets", nargs="*", default=PRESETS)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peak = measure_matmul_peak()
    rows = [bench_preset(p, args.batch, args.steps, args.warmup) for p in args.presets]
    for r in rows:
        r["mfu_vs_matmul_peak"] = round(r["achieved_gflops"] / peak, 3)
    table = Table(title=f"TRM training throughput, CPU fp32, {args.threads} threads "
                        f"(matmul peak {peak:.0f} GFLOP/s)")
    for col in ("preset", "params", "batch", "s/step", "ex*steps/s", "GFLOP/step", "GFLOP/s", "of peak"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["preset"], f"{r['params'] / 1e6:.2f}M", str(r["batch"]), f"{r['step_seconds']:.2f}",
                      f"{r['examples_x_steps_per_s']:.1f}", f"{r['gflop_per_step']:.0f}",
                      f"{r['achieved_gflops']:.1f}", f"{100 * r['mfu_vs_matmul_peak']:.0f}%")
    Console(width=140).print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "train_throughput", "threads": args.threads, "matmul_peak_gflops": round(peak, 1),
              "device": "cpu", "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "torch": torch.__version__, "rows": rows}
    path = args.out / "train_throughput.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
