"""Where learned halting loses exact answers: the prompt tokens' early exits or the answer tokens'.

    python benchmarks/lm_prompt_depth.py --checkpoint DIR [DIR ...] --task arith --problems 500

For each TRM task checkpoint, greedy real-cache decoding of the test problems three ways: the
learned exit (its halting threshold) for every token; prompt tokens refined to full depth and
the generated answer tokens halted by the learned head; full depth for every token. If the
second recovers the third, what halting loses comes from the states that early-halted prompt
tokens commit to the cache, not from the answer tokens' own exits. Prints a table; writes JSON
(default benchmarks/results/lm_prompt_depth_<task>.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from trmlm.bench.common import hardware
from trmlm.lm.checkpoint import load_lm
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.tasks import get_task
from trmlm.lm.tasks.score import score_task


def measure(checkpoint: Path, task_name: str, problems: int) -> dict:
    lm = load_lm(checkpoint)
    task = get_task(task_name)
    examples = task.examples(problems, lm.cfg.data.task_test_seed)
    n_sup = lm.cfg.model.max_sup_steps
    learned = lm.generation.validate(n_sup)  # the checkpoint's own exit, as `trm eval-lm` uses it
    full = HaltPolicy.fixed(learned.max_steps)
    row = {"checkpoint": str(checkpoint), "threshold": learned.threshold, "n_sup": n_sup}
    for name, policy, prompt in (("learned", learned, None), ("prompt_full_answer_learned", learned, full),
                                 ("full", full, None)):
        res = score_task(lm.model, lm.tokenizer, task, examples, policy, teacher_forced=False,
                         prompt_policy=prompt)
        row[name] = res["exact_acc"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, nargs="+", required=True)
    ap.add_argument("--task", default="arith")
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'checkpoint':40s} {'learned':>8s} {'prompt full':>12s} {'full':>6s}")
    for ck in args.checkpoint:
        r = measure(ck, args.task, args.problems)
        rows.append(r)
        print(f"{str(ck)[-40:]:40s} {r['learned']:8.3f} {r['prompt_full_answer_learned']:12.3f} {r['full']:6.3f}",
              flush=True)
    out = args.out or Path("benchmarks/results") / f"lm_prompt_depth_{args.task}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "lm_prompt_depth", "task": args.task, "problems": args.problems,
              "hardware": hardware(torch.device("cpu")), "rows": rows}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
