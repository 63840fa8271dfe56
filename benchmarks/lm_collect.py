"""Gather the current rows of several `benchmarks/lm_tasks.py` reports into one file.

    python benchmarks/lm_collect.py benchmarks/results/lm_tasks_arith_step_targets_seed0.json:arith \
        benchmarks/results/lm_tasks_hops_step_targets.json:hops --out benchmarks/results/lm_tasks.json

`lm_tasks.py` writes one report per experiment (a task, a recipe, a seed), and each is re-run by
the command its rows carry. This script makes `benchmarks/results/lm_tasks.json` the table of the
current figures: every row of each input whose task is named (`FILE:TASK[,TASK]`; all of its tasks
without `:`), unchanged, plus `source` (the file it came from), `hardware` (that file's) and `seed`
(read from the row's `train.seed=` flag, else the preset's 0). A later input replaces an earlier
row with the same (task, model, budget). The file is rewritten from the inputs alone, so a row
never outlives the experiment that measured it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def read(spec: str) -> list[dict[str, Any]]:
    """The rows `spec` (FILE or FILE:TASK[,TASK]) names, each stamped with its source."""
    path, sep, tasks = spec.partition(":")
    try:
        report = json.loads(Path(path).read_text())
        rows = report["rows"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"{path}: not a readable lm_tasks.py report ({type(e).__name__}: {e})")
    wanted = {t for t in tasks.split(",") if t} if sep else None
    rows = [r for r in rows if wanted is None or r.get("task") in wanted]
    if not rows:
        fail(f"{spec}: no rows" + (f" of task {tasks}" if sep else ""))
    return [dict(r, source=_relative(path), hardware=report.get("hardware"), seed=seed_of(r)) for r in rows]


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def seed_of(row: dict[str, Any]) -> int:
    """The training seed a row's command set (`--set train.seed=S`), else the presets' 0."""
    found = re.findall(r"train\.seed=(\d+)", row.get("command", ""))
    return int(found[-1]) if found else 0


def _relative(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", help="FILE or FILE:TASK[,TASK], lm_tasks.py reports")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lm_tasks.json"))
    args = p.parse_args()
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for spec in args.inputs:
        merged.update({(r["task"], r["model"], r["budget"]): r for r in read(spec)})
    from trmlm.bench.common import write_json

    command = " ".join(["python", "benchmarks/lm_collect.py", *sys.argv[1:]])
    write_json(Path(args.out), {"benchmark": "lm_tasks", "collected_by": command,
                                "rows": [merged[k] for k in sorted(merged)]})
    print(f"{'task':12s} {'model':16s} {'budget':12s} {'seed':>4s} {'exact':>6s} {'full depth':>10s}  source")
    for (task, model, budget), r in sorted(merged.items()):
        full = f"{r['exact_acc_full_depth']:10.3f}" if "exact_acc_full_depth" in r else " " * 10
        print(f"{task:12s} {model:16s} {budget:12s} {r['seed']:4d} {r['exact_acc']:6.3f} {full}  {r['source']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
