"""Several seeds of the lm_tasks comparison side by side: per seed, mean and spread per model.

    python benchmarks/lm_seeds.py benchmarks/results/lm_tasks_30min.json=0 \
        benchmarks/results/lm_tasks_30min_seed1.json=1 benchmarks/results/lm_tasks_30min_seed2.json=2 \
        --out benchmarks/results/lm_tasks_30min_seeds.json

Each input is one seed's `benchmarks/lm_tasks.py` JSON (FILE=SEED). The TRM is read at fixed
full depth (N_sup, `exact_acc_full_depth`) and with its learned halting (`halt_exact_acc`); every
other model by its `exact_acc`. Prints a markdown table (per seed, mean, sample standard deviation)
and the paired difference TRM - model per seed; writes JSON with the same figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def read(spec: str) -> tuple[int, list[dict[str, Any]]]:
    path, sep, seed = spec.rpartition("=")
    if not sep or not seed.lstrip("-").isdigit():
        print(f"error: expected FILE=SEED, got {spec!r}", file=sys.stderr)
        raise SystemExit(2)
    return int(seed), json.loads(Path(path).read_text())["rows"]


def entries(rows: list[dict[str, Any]], task: str) -> dict[str, dict[str, Any]]:
    """label -> {exact, per_rung, train_tokens} for one seed's rows of `task`."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["task"] != task:
            continue
        if r["model"] == "trm":
            if r["budget"] != "equal_cpu":  # the TRM row is the same run under both budgets
                continue
            base = {"train_tokens": r["train_tokens"], "per_rung": None}
            out["trm full depth"] = dict(base, exact=r["exact_acc_full_depth"])
            out["trm depth 1"] = dict(base, exact=r["exact_acc_depth1"])
            out["trm halting"] = dict(base, exact=r["halt_exact_acc"], per_rung=r["exact_acc_per_rung"],
                                      mean_steps=r["halt_mean_steps"])
        else:
            out[f"{r['model']} {r['budget']}"] = {"exact": r["exact_acc"], "per_rung": r["exact_acc_per_rung"],
                                                  "train_tokens": r["train_tokens"]}
    return out


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", help="FILE=SEED, one lm_tasks.py JSON per seed")
    p.add_argument("--task", default="arith")
    p.add_argument("--out", default="")
    args = p.parse_args()
    seeds = dict(read(s) for s in args.inputs)
    per_seed = {seed: entries(rows, args.task) for seed, rows in sorted(seeds.items())}
    labels = [lab for lab in dict.fromkeys(lab for e in per_seed.values() for lab in e)
              if all(lab in e for e in per_seed.values())]  # only what every seed has
    table = {lab: {"per_seed": {s: per_seed[s][lab]["exact"] for s in per_seed},
                   **spread([per_seed[s][lab]["exact"] for s in per_seed])} for lab in labels}
    paired = {}
    for lab in labels:
        if lab.startswith("trm"):
            continue
        diffs = {s: per_seed[s]["trm full depth"]["exact"] - per_seed[s][lab]["exact"] for s in per_seed}
        paired[f"trm full depth - {lab}"] = {"per_seed": diffs, **spread(list(diffs.values())),
                                             "trm_ahead": sum(d > 0 for d in diffs.values()), "seeds": len(diffs)}
    rungs = {lab: {rung: spread([per_seed[s][lab]["per_rung"][rung] for s in per_seed])["mean"]
                   for rung in per_seed[next(iter(per_seed))][lab]["per_rung"]}
             for lab in labels if per_seed[next(iter(per_seed))][lab]["per_rung"]}
    ordered = list(per_seed)
    print(f"| model ({args.task}) | " + " | ".join(f"seed {s}" for s in ordered) + " | mean | sd |")
    print("|---|" + "---|" * (len(ordered) + 2))
    for lab, t in table.items():
        cells = " | ".join(f"{t['per_seed'][s]:.3f}" for s in ordered)
        print(f"| {lab} | {cells} | {t['mean']:.3f} | {t['sd']:.3f} |")
    print()
    for lab, d in paired.items():
        print(f"{lab}: " + ", ".join(f"seed {s} {d['per_seed'][s]:+.3f}" for s in ordered)
              + f"; mean {d['mean']:+.3f} (sd {d['sd']:.3f}); the TRM ahead on {d['trm_ahead']} of {d['seeds']} seeds")
    if args.out:
        from trmlm.bench.common import write_json

        report = {"benchmark": "lm_seeds", "task": args.task, "inputs": args.inputs,
                  "command": " ".join(["python", "benchmarks/lm_seeds.py", *sys.argv[1:]]),
                  "seeds": ordered, "models": table, "paired": paired, "mean_exact_per_rung": rungs}
        write_json(Path(args.out), report)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
