"""Training-step throughput and MFU of the puzzle and LM presets on this CPU (wraps puzzles.throughput).

    python benchmarks/train_throughput.py [--batch 16] [--lm-batch N] [--steps 3] [--threads 2]
        [--presets ...] [--lm-presets ...] [--out benchmarks/results]

Prints a table and writes train_step.json. Throughput: puzzles examples x supervision steps per
second (one optimizer step = one supervision step of every example in the carry); LM tokens/s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console

from trmlm.puzzles.throughput import LM_PRESETS, PUZZLE_PRESETS, run_train_step_bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16, help="puzzle carry size (paper: 768; CPU-sized here)")
    ap.add_argument("--lm-batch", type=int, default=None,
                    help="LM windows per step (default 16; lm-paper 1, see LM_CPU_DEFAULTS)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--presets", nargs="*", default=PUZZLE_PRESETS)
    ap.add_argument("--lm-presets", nargs="*", default=LM_PRESETS)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    run_train_step_bench(args.out, args.threads, batch=args.batch, lm_batch=args.lm_batch, steps=args.steps,
                         warmup=args.warmup, presets=args.presets, lm_presets=args.lm_presets,
                         console=Console(width=140))


if __name__ == "__main__":
    main()
