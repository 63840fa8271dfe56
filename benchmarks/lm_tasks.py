"""The per-token TRM LM against transformers with and without a scratchpad, on reasoning-text tasks.

    python benchmarks/lm_tasks.py --task arith --minutes 20            # the CPU comparison
    python benchmarks/lm_tasks.py --task sudoku-text --preset lm-sudoku-text-cpu --minutes 30
    python benchmarks/lm_tasks.py --task add-2 --preset lm-tiny --minutes 0.1 --problems 20   # smoke

For one task: the TRM trains for `--minutes` of process-CPU time (1 thread); every baseline then
trains twice, once to the TRM's training tokens (`equal_tokens`) and once for the CPU time the TRM
used (`equal_cpu`; less than `--minutes` when a step budget, `--trm-set train.train_steps=N`, ended
the TRM first): the same-size transformer (same blocks once), the iso-FLOP transformer (T (n+1)
layers, one TRM supervision step's FLOPs per token), and the chain-of-thought transformer (the
same-size transformer trained on the task's `-cot` form, which writes a scratchpad before the
answer). Every model is scored on the same held-out *test* problems (kept out of training; tuning
used the separate validation set) by greedy sequential decoding with the real KV cache; the TRM
also at every fixed depth 1..4 N_sup (the depth curve; beyond N_sup is test-time depth the model
was never trained at) and with learned halting against random exits (`trm bench
--adaptive-compute`). Each run is a `trm` command; with `--lock FILE` every run waits for that
flock (one heavy job at a time on a shared machine). `--calibrate-halt MARGIN` scores the TRM's
learned halting after `trm calibrate-halt` (the halting head refitted on decoding's states; the
depth curve is the same weights either way). Writes a table and
benchmarks/results/lm_tasks.json (rows merged by (task, model, budget)).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lm_tasks.json"
BASELINES = ("transformer", "transformer-iso", "transformer-cot")


def trm_cmd(args: argparse.Namespace, *cli: str) -> list[str]:
    cmd = [sys.executable, "-m", "trmlm", *cli]
    return (["flock", args.lock] + cmd) if args.lock else cmd


def run(args: argparse.Namespace, *cli: str) -> str:
    cmd = trm_cmd(args, *cli)
    print("$", " ".join(cmd[cmd.index("-m") + 2:] if "-m" in cmd else cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(args))
    if proc.returncode == 2:  # the trm CLI's one-line refusal of bad input: pass it on as one line
        message = (proc.stderr.strip().splitlines() or ["(no message)"])[-1].removeprefix("error: ")
        print(f"error: {' '.join(cli[:1])}: {message}", file=sys.stderr)
        raise SystemExit(2)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return proc.stdout


def _env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    return env


def train(args: argparse.Namespace, name: str, model: str, task: str, extra: list[str]) -> dict[str, Any]:
    out = Path(args.runs) / name
    if not (args.reuse and _finished(out)):
        run(args, "train-lm", "--preset", args.preset, "--task", task, "--model", model, "--out", str(out),
            "--overwrite", "--quiet", "--set", f"train.threads={args.threads}",
            "--set", "budget_clock=cpu", *sum((["--set", s] for s in extra), []))
    meta = json.loads((out / "meta.json").read_text())
    return {"dir": str(out), "meta": meta}


def _finished(out: Path) -> bool:
    """A run that trained to its end (meta.json is also written at every validation mid-run)."""
    meta = out / "meta.json"
    return meta.is_file() and json.loads(meta.read_text()).get("finished", False)


def score(args: argparse.Namespace, ckpt: str, task: str, *flags: str) -> dict[str, Any]:
    text = run(args, "eval-lm", "--checkpoint", ckpt, "--task", task, "--problems", str(args.problems),
               "--split", "test", "--json", "--threads", str(args.threads), *flags)
    return json.loads(text.strip().splitlines()[-1])


def row(task: str, model: str, budget: str, trained: dict[str, Any], rep: dict[str, Any]) -> dict[str, Any]:
    meta = trained["meta"]
    return {"task": task, "model": model, "budget": budget, "params": meta["parameters"],
            "train_tokens": meta.get("train_tokens"), "optimizer_steps": meta["step"],
            "cpu_minutes": cpu_minutes(meta),
            "exact_acc": rep["exact_acc"], "exact_acc_ci95": rep.get("exact_ci95"),
            "exact_acc_per_rung": {k.removesuffix("-cot"): v["exact_acc"] for k, v in rep["per_rung"].items()},
            "tokens_per_answer": rep["tokens_per_answer"],
            "kv_bytes_per_answer": sum(v["kv_bytes_per_answer"] * v["problems"] for v in rep["per_rung"].values())
            / rep["problems"],
            "flops_per_answer": rep["flops_per_answer"], "ms_per_answer": rep["ms_per_answer"],
            "token_acc": rep.get("token_acc"), "checkpoint": trained["dir"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="arith")
    p.add_argument("--preset", default="lm-arith-cpu")
    p.add_argument("--minutes", type=float, default=20.0, help="CPU minutes of the TRM (equal_cpu runs get the minutes it used)")
    p.add_argument("--problems", type=int, default=500, help="held-out test problems scored per model")
    p.add_argument("--models", default="trm," + ",".join(BASELINES))
    p.add_argument("--trm-set", action="append", default=[], help="--set for the TRM run only")
    p.add_argument("--set", dest="common_set", action="append", default=[], help="--set for every run")
    p.add_argument("--baseline-set", action="append", default=[], help="--set for the baseline runs only (e.g. their best batch)")
    p.add_argument("--calibrate-halt", type=float, default=None, metavar="MARGIN",
                   help="refit the TRM's halting head on decoding's states (trm calibrate-halt --margin MARGIN) "
                        "before scoring its learned halting")
    p.add_argument("--calibrate-label", default="loss", choices=("loss", "argmax"),
                   help="trm calibrate-halt --label: what the labels judge (argmax: the step's top token is right)")
    p.add_argument("--calibrate-threshold", type=float, default=0.5,
                   help="trm calibrate-halt --threshold: the exit the head is fitted for, the checkpoint's default")
    p.add_argument("--calibrate-pick", default="", metavar="THRESHOLDS",
                   help="trm calibrate-halt --pick-threshold: the stored exit picked among these on the "
                        "validation problems (fewest steps within 0.01 of full depth)")
    p.add_argument("--calibrate-scored", default="targets", choices=("targets", "all"),
                   help="trm calibrate-halt --scored: the positions whose own prediction the labels judge")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", default=str(ROOT / "runs" / "lm_tasks"))
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--lock", default="", help="flock file every run waits for")
    p.add_argument("--reuse", action="store_true", help="keep runs that trained to their end (meta.json says finished)")
    p.add_argument("--thresholds", default="0.05,0.1,0.2,0.3,0.5,0.7,0.9")
    p.add_argument("--budgets", default="equal_tokens,equal_cpu",
                   help="the baselines' budgets to train (a comma list of equal_tokens, equal_cpu)")
    args = p.parse_args()
    budgets = _comma_list(p, "--budgets", args.budgets, ("equal_tokens", "equal_cpu"))
    models = _comma_list(p, "--models", args.models, ("trm", *BASELINES))
    tag = args.task
    base = [f"train.max_minutes={args.minutes}", "train.train_steps=100000000", *args.common_set]
    rows: list[dict[str, Any]] = []
    trm = train(args, f"{tag}-trm", "trm", args.task, base + args.trm_set)
    tokens = trm["meta"]["train_tokens"]
    trm_minutes = max(cpu_minutes(trm["meta"], digits=4), 1e-4)  # the equal_cpu budget (0 would be no limit)
    if "trm" in models:
        scored = trm["dir"]
        if args.calibrate_halt is not None:  # the same weights, the halting head refitted
            scored = trm["dir"] + "-halt"
            run(args, "calibrate-halt", "--checkpoint", trm["dir"], "--out", scored, "--overwrite",
                "--margin", str(args.calibrate_halt), "--scored", args.calibrate_scored,
                "--label", args.calibrate_label, "--threshold", str(args.calibrate_threshold),
                "--threads", str(args.threads),
                *(["--pick-threshold", args.calibrate_pick] if args.calibrate_pick else []))
        rep = score(args, scored, args.task)
        bench_dir = Path(scored) / "bench"
        run(args, "bench", "--adaptive-compute", "--checkpoint", scored, "--task", args.task,
            "--problems", str(args.problems), "--max-steps", str(4 * rep["max_steps"]), "--out",
            str(bench_dir), "--quiet", "--thresholds", args.thresholds, "--threads", str(args.threads))
        ada = json.loads((bench_dir / "task_report.json").read_text())
        r = row(args.task, "trm", "equal_cpu", trm, rep)
        r.update(n_sup=ada["n_sup"], exact_acc_depth1=ada["exact_acc_depth1"],
                 exact_acc_full_depth=ada["exact_acc_full_depth"],
                 exact_acc_2x_depth=ada.get("exact_acc_2x_depth"), halt_exact_acc=ada["halt_exact_acc"],
                 halt_vs_full_depth=ada.get("halt_vs_full_depth"),
                 exact_acc_by_depth={int(x["param"]): x["exact_acc"] for x in ada["rows"] if x["kind"] == "fixed"},
                 halt_mean_steps=ada["halt_mean_steps"], halt_decided_steps_mean=ada.get("halt_decided_steps_mean"),
                 halt_operating_point=ada["operating_point"],
                 steps_hard=ada["steps_hard"], steps_easy=ada["steps_easy"],
                 steps_hard_decode=ada.get("steps_hard_decode"), steps_easy_decode=ada.get("steps_easy_decode"),
                 steps_per_category_decode=rep.get("steps_per_category_decode"),
                 halt_beats_random=ada["halt_beats_random"], halt_targets=ada["targets"],
                 steps_mean=rep["steps_mean"], steps_per_category=rep["steps_per_category"],
                 adaptive_report=str(bench_dir / "task_report.json"), halt_calibration_margin=args.calibrate_halt,
                 halt_calibration_scored=args.calibrate_scored if args.calibrate_halt is not None else None,
                 halt_calibration_label=args.calibrate_label if args.calibrate_halt is not None else None,
                 halt_threshold_pick=_threshold_pick(scored),
                 checkpoint=scored,
                 trm_set=list(args.trm_set))
        rows.append(r)
        rows.append(dict(r, budget="equal_tokens"))  # the TRM defines both budgets
    for model in [m for m in models if m in BASELINES]:
        arch = "transformer" if model == "transformer-cot" else model
        task = args.task + "-cot" if model == "transformer-cot" else args.task
        for budget in budgets:
            if budget == "equal_tokens":
                extra = ["train.max_minutes=0", f"train.train_steps={math.ceil(tokens / _tokens_per_step(args))}"]
            else:
                extra = [f"train.max_minutes={trm_minutes}", "train.train_steps=100000000"]
            trained = train(args, f"{tag}-{model}-{budget}", arch, task,
                            [*args.common_set, *args.baseline_set, *extra])
            rows.append(dict(row(args.task, model, budget, trained, score(args, trained["dir"], task)),
                             baseline_set=list(args.baseline_set)))
    write(args, rows)


def _threshold_pick(ckpt: str) -> dict[str, Any] | None:
    """The validation sweep behind a calibrated checkpoint's stored threshold (None without one)."""
    meta = json.loads((Path(ckpt) / "meta.json").read_text())
    return meta.get("halt_calibration", {}).get("threshold_pick")


def cpu_minutes(meta: dict[str, Any], digits: int = 2) -> float:
    """The process-CPU minutes a run's training used, whether its time budget or its step budget
    ended it."""
    return round(meta["train_cpu_seconds"] / 60, digits)


def _comma_list(p: argparse.ArgumentParser, flag: str, text: str, allowed: tuple[str, ...]) -> list[str]:
    """A comma list of names from `allowed` (at least one), else the parser's usage error."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names or set(names) - set(allowed):
        p.error(f"{flag}: a comma list of {', '.join(allowed)}, got {text!r}")
    return names


def _tokens_per_step(args: argparse.Namespace) -> int:
    """Training tokens per optimizer step of a transformer run: the preset's batch x context."""
    from trmlm.cli.common import configs_dir
    from trmlm.lm.config import load_lm_config

    cfg = load_lm_config(args.preset, [], [*args.common_set, *args.baseline_set], configs_dir())
    return cfg.train.batch_size * cfg.context


def merge_report(args: argparse.Namespace, benchmark: str, key_fields: tuple[str, ...],
                 rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge `rows` into the JSON at args.out (a row replaces the old one with the same key
    fields), stamp hardware and command (the report's: the latest; each row's: its own), write
    it, and return the report. Invocations side by side (one per core) may share one --out: the
    read-merge-write holds an exclusive flock on the file's directory, so none loses another's rows."""
    import fcntl

    from trmlm.bench.common import hardware, write_json

    path = Path(args.out)
    command = " ".join(["python", f"benchmarks/{benchmark}.py", *sys.argv[1:]])
    rows = [dict(r, command=command) for r in rows]  # merged files mix invocations: each row says its own
    key = lambda r: tuple(r[k] for k in key_fields)  # noqa: E731
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        old = json.loads(path.read_text()).get("rows", []) if path.is_file() else []
        merged = {key(r): r for r in old}
        merged.update({key(r): r for r in rows})
        report = {"benchmark": benchmark, "hardware": dict(hardware("cpu"), threads=args.threads),
                  "command": command, "rows": sorted(merged.values(), key=key)}
        write_json(path, report)
    finally:
        os.close(folder)  # releases the lock
    return report


def write(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    report = merge_report(args, "lm_tasks", ("task", "model", "budget"), rows)
    print(f"\n{'task':12s} {'model':16s} {'budget':12s} {'exact':>6s} {'tokens':>9s} {'CPU min':>7s} "
          f"{'tok/ans':>7s} {'KV B/ans':>8s} {'MFLOP/ans':>9s}")
    for r in report["rows"]:
        print(f"{r['task']:12s} {r['model']:16s} {r['budget']:12s} {r['exact_acc']:6.3f} "
              f"{r['train_tokens'] or 0:9d} {r['cpu_minutes']:7.2f} {r['tokens_per_answer']:7.1f} "
              f"{r['kv_bytes_per_answer']:8.0f} {r['flops_per_answer'] / 1e6:9.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
