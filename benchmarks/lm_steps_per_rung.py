"""Steps a TRM LM spends per answer, rung by rung of a task ladder: does the work track the difficulty?

    python benchmarks/lm_steps_per_rung.py --checkpoint runs/lmhops_steps/hops-trm-halt --task hops \
        --problems 200 --out benchmarks/results/lm_steps_per_rung_hops.json

For each rung of `--task` (hops: hops-1 .. hops-6), `trm eval-lm --task RUNG --json` on the
held-out test problems: exact answers and mean supervision steps on the answer tokens under the
checkpoint's learned halting (or `--halt-threshold`), and exact answers at fixed full depth (N_sup) and at fixed depth 1.
A halting head that spends compute where it is needed gives more steps to the rungs with more
work. Each eval is one `trm` command (1 thread); the JSON has one row per rung.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm_tasks import ROOT, score  # noqa: E402  (the same eval-lm --json runner)

sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--task", default="hops", help="a ladder (mixture) task; each of its rungs is scored")
    p.add_argument("--problems", type=int, default=200, help="test problems per rung")
    p.add_argument("--halt-threshold", type=float, default=None,
                   help="the learned exit's threshold (default: the checkpoint's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lock", default="", help="flock file every eval waits for (as lm_tasks.py)")
    p.add_argument("--out", default="")
    args = p.parse_args()
    from trmlm.bench.common import hardware, write_json
    from trmlm.lm.tasks import get_task, rungs

    try:
        names = [r.name for r in rungs(get_task(args.task))]
    except Exception as e:  # noqa: BLE001 - the task's own one-line message
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    rows = []
    print(f"{'rung':10s} {'halting exact':>13s} {'answer steps':>12s} {'full depth':>10s} {'depth 1':>8s}")
    for name in names:
        halt = score(args, args.checkpoint, name, *([] if args.halt_threshold is None else
                                      ["--halt-threshold", str(args.halt_threshold)]))
        full = score(args, args.checkpoint, name, "--no-halting")
        one = score(args, args.checkpoint, name, "--no-halting", "--max-steps", "1")
        row = {"rung": name, "problems": halt["problems"], "halt_exact_acc": halt["exact_acc"],
               "halt_answer_steps": halt["steps_per_category_decode"]["answer"],
               "n_sup": full["max_steps"], "exact_acc_full_depth": full["exact_acc"], "exact_acc_depth1": one["exact_acc"]}
        rows.append(row)
        print(f"{name:10s} {row['halt_exact_acc']:13.3f} {row['halt_answer_steps']:12.2f} "
              f"{row['exact_acc_full_depth']:10.3f} {row['exact_acc_depth1']:8.3f}", flush=True)
    if args.out:
        write_json(Path(args.out), {"benchmark": "lm_steps_per_rung", "hardware": dict(hardware("cpu"), threads=args.threads),
                                    "command": " ".join(["python", "benchmarks/lm_steps_per_rung.py", *sys.argv[1:]]),
                                    "checkpoint": args.checkpoint, "task": args.task,
                                    "halt_threshold": args.halt_threshold, "rows": rows})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
