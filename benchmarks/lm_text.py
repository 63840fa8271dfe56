"""The per-token TRM LM against the same-size transformer on text (tiny Shakespeare by default):
held-out bits per character at equal parameters and equal training tokens, and at equal CPU time.

    python benchmarks/lm_text.py --minutes 12                  # lm-shakespeare-cpu, ~40 min
    python benchmarks/lm_text.py --preset lm-tiny --minutes 0.05 --tokens 256   # smoke

The TRM trains for `--minutes` of process-CPU time (or the step budget of its `--trm-set`); the
transformer once to the TRM's training tokens and once for the TRM's CPU time. Every model is scored by `trm eval-lm` (sequential decoding
with the real KV cache, the TRM with its learned halting and at full depth) on the same held-out
characters. Writes benchmarks/results/lm_text.json (rows merged by (data, model, budget)).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm_tasks import ROOT, _finished, merge_report, run  # noqa: E402  (the same run / reuse / JSON helpers)

RESULTS = ROOT / "benchmarks" / "results" / "lm_text.json"


def train(args: argparse.Namespace, name: str, model: str, extra: list[str]) -> dict[str, Any]:
    out = Path(args.runs) / name
    if not (args.reuse and _finished(out)):
        run(args, "train-lm", "--preset", args.preset, "--model", model, "--out", str(out), "--overwrite",
            "--quiet", "--set", f"train.threads={args.threads}", "--set", "budget_clock=cpu",
            *sum((["--set", s] for s in [*args.common_set, *extra]), []))
    return {"dir": str(out), "meta": json.loads((out / "meta.json").read_text())}


def score(args: argparse.Namespace, ckpt: str) -> dict[str, Any]:
    text = run(args, "eval-lm", "--checkpoint", ckpt, "--tokens", str(args.tokens), "--parallel-tokens",
               str(args.tokens), "--json", "--threads", str(args.threads))
    return json.loads(text.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="lm-shakespeare-cpu")
    p.add_argument("--minutes", type=float, default=12.0)
    p.add_argument("--tokens", type=int, default=8192, help="held-out tokens scored")
    p.add_argument("--trm-set", action="append", default=[])
    p.add_argument("--set", dest="common_set", action="append", default=[])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", default=str(ROOT / "runs" / "lm_text"))
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--lock", default="")
    p.add_argument("--reuse", action="store_true")
    args = p.parse_args()
    from trmlm.cli.common import configs_dir
    from trmlm.lm.config import load_lm_config

    cfg = load_lm_config(args.preset, [], list(args.common_set), configs_dir())
    per_step = cfg.train.batch_size * cfg.context
    rows = []
    trm = train(args, "trm", "trm", [f"train.max_minutes={args.minutes}", "train.train_steps=100000000",
                                     *args.trm_set])
    runs = [("trm", "equal_cpu", trm)]
    tokens = trm["meta"]["train_tokens"]
    runs.append(("transformer", "equal_tokens", train(args, "transformer-equal_tokens", "transformer",
                 ["train.max_minutes=0", f"train.train_steps={math.ceil(tokens / per_step)}"])))
    # the TRM's own CPU time (its budget may be steps: --trm-set train.max_minutes=0)
    cpu_minutes = max(trm["meta"]["train_cpu_seconds"] / 60, 1e-4)  # (0 would mean no time limit)
    runs.append(("transformer", "equal_cpu", train(args, "transformer-equal_cpu", "transformer",
                 [f"train.max_minutes={cpu_minutes:.6g}", "train.train_steps=100000000"])))
    for model, budget, trained in runs:
        rep, meta = score(args, trained["dir"]), trained["meta"]
        rows.append({"data": args.preset, "model": model, "budget": budget, "params": meta["parameters"],
                     "train_tokens": meta.get("train_tokens"), "optimizer_steps": meta["step"],
                     "cpu_minutes": round(meta["train_cpu_seconds"] / 60, 2),
                     "bpc_sequential": rep["bpc_sequential"], "bpc_parallel": rep["bpc_parallel"],
                     "bpc_sequential_full_depth": rep.get("bpc_sequential_full_depth"),
                     "steps_mean": rep.get("steps_mean"), "eval_tokens": rep.get("eval_tokens"),
                     "checkpoint": trained["dir"]})
        if model == "trm":
            rows.append(dict(rows[-1], budget="equal_tokens"))
    write(args, rows)


def write(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    report = merge_report(args, "lm_text", ("data", "model", "budget"), rows)
    print(f"\n{'data':20s} {'model':12s} {'budget':12s} {'bits/char':>9s} {'tokens':>9s} {'CPU min':>7s}")
    for r in report["rows"]:
        print(f"{r['data']:20s} {r['model']:12s} {r['budget']:12s} {r['bpc_sequential']:9.3f} "
              f"{r['train_tokens'] or 0:9d} {r['cpu_minutes']:7.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
