"""What a training token costs: the TRM LM's recipes against the same-size transformer, interleaved.

    python benchmarks/lm_token_cost.py                      # lm-arith-cpu, 1 thread, ~2 minutes
    python benchmarks/lm_token_cost.py --preset lm-sudoku-text-cpu --batches 8 --out /tmp/sudoku_cost.json
    python benchmarks/lm_token_cost.py --group step-targets --batches 100 \
        --out benchmarks/results/lm_token_cost_step_targets.json
    python benchmarks/lm_token_cost.py --group state-cache --batches 60 \
        --out benchmarks/results/lm_token_cost_state_cache.json

Each variant is a Trainer built from the preset (a task preset) plus its `--set` overrides (every
TRM variant with the token cache and the loss on the answers), fed real batches of the preset's task (`Trainer.train_batch`: forward, backward, optimizer step). The variants take
turns batch by batch (so a slower or busier stretch of the machine hits all of them alike); the
first `--warmup` batches of each are left out. Cost = process CPU seconds per training token
(batch x context), median over batches, and its ratio to the first variant (the transformer);
also the ratio of the means (what a variant whose batches differ in cost, the hold step's, pays).
Writes a table and benchmarks/results/lm_token_cost.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

TARGETS = ["commit_input=x", "data.loss_on=target"]  # the token cache, loss on the task's answers
BEFORE = ["model.n_latent=2", "model.max_sup_steps=3", "train.batch_size=8"]  # the recipe until 2026-12-05
VARIANTS = {
    "transformer (batch 16)": ["arch=transformer", "train.batch_size=16", "data.loss_on=target"],
    "trm, the preset (n 1, N_sup 2, batch 16)": [*TARGETS, "refine_on=loss"],
    "trm, n 1, N_sup 2, batch 8": [*TARGETS, "refine_on=loss", "train.batch_size=8"],
    "trm, n 2, N_sup 2, batch 8": [*TARGETS, "refine_on=loss", *BEFORE, "model.max_sup_steps=2"],
    "trm, n 2, N_sup 3, batch 8 (before)": [*TARGETS, "refine_on=loss", *BEFORE],
    "trm, before, 1-step gradient": [*TARGETS, "refine_on=loss", *BEFORE, "model.grad=one_step"],
    "trm, before, refining every position": [*TARGETS, "refine_on=all", *BEFORE],
}
# --group step-targets: intermediate answers as per-step targets (the lm-arith-steps-cpu recipe),
# and with the hold step (`hold_steps`: 0-2 untrained steps past N_sup, then one trained; the
# batches draw that depth, so its cost is a mean over the draws)
STEPS = [*TARGETS, "refine_on=loss", "model.max_sup_steps=3", "step_weights=equal", "updates=per_batch",
         "step_targets=true"]
STEP_VARIANTS = {
    "transformer (batch 16)": VARIANTS["transformer (batch 16)"],
    "trm, the preset (n 1, N_sup 2, batch 16)": VARIANTS["trm, the preset (n 1, N_sup 2, batch 16)"],
    "trm, step targets (N_sup 3, one update per batch)": STEPS,
    "trm, step targets and hold_steps 3": [*STEPS, "hold_steps=3"],
}
# --group state-cache: the step-target recipe with the last step weighted most, with the token
# cache and with the two-level state cache (cache_levels 2), refining every position or only the
# positions with loss (the others keep their initial state), or those in full and the others for
# the one step the cache stores (refine_on cached: the every-position model's gradients)
LINEAR = ["model.max_sup_steps=3", "step_weights=linear", "updates=per_batch", "step_targets=true"]
STATE = ["commit_input=x+y+z", "data.loss_on=target", "cross_grad=true", "train_cache=previous_step",
         "cache_levels=2", *LINEAR]
STATE_VARIANTS = {
    "transformer (batch 16)": VARIANTS["transformer (batch 16)"],
    "trm, step targets, last weighted most, token cache": [*TARGETS, "refine_on=loss", *LINEAR],
    "trm, the same, state cache (2 levels), every position refined": [*STATE, "refine_on=all"],
    "trm, the same, state cache (2 levels), the loss positions refined": [*STATE, "refine_on=loss"],
    "trm, the same, state cache (2 levels), the loss positions in full, the others 1 step":
        [*STATE, "refine_on=cached"],
}
GROUPS = {"recipes": VARIANTS, "step-targets": STEP_VARIANTS, "state-cache": STATE_VARIANTS}


def build(preset: str, overrides: list[str]):
    from trmlm.cli.common import configs_dir
    from trmlm.lm.config import load_lm_config
    from trmlm.lm.train import build_trainer

    return build_trainer(load_lm_config(preset, [], ["train.max_minutes=0", *overrides], configs_dir()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="lm-arith-cpu")
    p.add_argument("--batches", type=int, default=12, help="timed batches per variant")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--group", default="recipes", choices=tuple(GROUPS), help="which variants to time")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lm_token_cost.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from trmlm.bench.common import hardware, write_json

    variants = GROUPS[args.group]
    trainers = {name: build(args.preset, sets) for name, sets in variants.items()}
    per_token: dict[str, list[float]] = {name: [] for name in trainers}
    loss_share: list[float] = []
    for i in range(args.warmup + args.batches):
        for name, tr in trainers.items():
            batch, mask, step_batch = tr._draw(tr.cfg.train.batch_size)
            if mask is not None:
                loss_share.append(float(mask.float().mean()))
            c0 = time.process_time()
            tr.train_batch(batch, mask, step_batch)
            if i >= args.warmup:
                per_token[name].append((time.process_time() - c0) / (tr.cfg.train.batch_size * tr.cfg.context))
    base_name = next(iter(trainers))
    base = statistics.median(per_token[base_name])
    rows = []
    base_mean = statistics.mean(per_token[base_name])
    print(f"{'variant':50s} {'us/token':>9s} {'vs transformer':>14s} {'mean vs transformer':>19s}")
    for name, values in per_token.items():
        med, mean = statistics.median(values), statistics.mean(values)
        rows.append({"variant": name, "set": variants[name], "us_per_token": round(med * 1e6, 1),
                     "ratio": round(med / base, 2), "ratio_of_means": round(mean / base_mean, 2),
                     "batch": trainers[name].cfg.train.batch_size})
        print(f"{name:50s} {med * 1e6:9.1f} {med / base:13.2f}x {mean / base_mean:18.2f}x")
    share = statistics.mean(loss_share) if loss_share else 1.0
    print(f"positions with loss: {share:.3f}")
    write_json(args.out, {"benchmark": "lm_token_cost", "preset": args.preset,
                          "hardware": dict(hardware("cpu"), threads=args.threads),
                          "command": "python benchmarks/lm_token_cost.py " + " ".join(
                              f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
                          "batches": args.batches, "loss_position_share": round(share, 3), "rows": rows})


if __name__ == "__main__":
    main()
