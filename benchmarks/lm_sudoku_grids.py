"""Sudoku as text on solved grids from elsewhere: do the figures hold off the project's generator?

    python benchmarks/lm_sudoku_grids.py --checkpoint runs/sud/sudoku-text-trm-halt \
        --checkpoint runs/sud/sudoku-text-transformer-equal_tokens --grids solved.csv \
        --per-rung 50 --out benchmarks/results/lm_sudoku_text_grids.json

The test puzzles of `--task sudoku-text` come from the project's generator (random grids from a
randomized solver, cells dug out while the solution stays unique). A re-check on data made
elsewhere should not depend on that generator's habits, so this script takes *solved grids from
another source* (`--grids`: a CSV with `question,answer` columns, the Sudoku-Extreme layout,
whose `answer` grids are used; or one 81-digit grid per line), digs each to 10 / 20 / 30 / 45
blanks (unique solution kept, cells tried in a seeded random order, a different grid for every
puzzle) and scores every checkpoint on them beside the same number of the generator's test
puzzles, in one run: greedy sequential decoding with the real cache, at the checkpoint's stored
halting and (a TRM) at fixed full depth. The digging is the project's; the grids are not.
Writes a table and a JSON (one row per checkpoint, source and exit rule).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def read_grids(path: Path) -> list[str]:
    """The solved grids of `path` as 81-digit strings (each checked): a CSV with an `answer`
    column (load_sudoku_csv's checks), else one grid per non-empty line."""
    from trmlm.errors import TRMError
    from trmlm.puzzles.sudoku.data import load_sudoku_csv
    from trmlm.puzzles.sudoku.grid import is_valid_solution

    if not path.is_file():
        raise TRMError(f"--grids: no such file: {path}")
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline()
    if "answer" in first.split(","):
        return ["".join(map(str, a)) for a in load_sudoku_csv(path).answers]
    grids = []
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if len(line) != 81 or not line.isdigit() or not is_valid_solution([[int(c) for c in line[r * 9:r * 9 + 9]]
                                                                            for r in range(9)]):
            raise TRMError(f"--grids {path} line {i}: not a solved grid (81 digits, every row, column and box 1-9)")
        grids.append(line)
    return grids


def grid_examples(grids: list[str], blanks: tuple[int, ...], per_rung: int, seed: int) -> list[Any]:
    """per_rung puzzles per number of blanks, puzzle i of rung r dug from grid r * per_rung + i
    (a different grid each) with the generator [seed, blanks, i]."""
    import numpy as np

    from trmlm.errors import TRMError
    from trmlm.puzzles.sudoku.generator import dig_puzzle
    from trmlm.puzzles.sudoku.text_task import SudokuText

    if len(grids) < per_rung * len(blanks):
        raise TRMError(f"--grids holds {len(grids)} grids; {per_rung} per rung x {len(blanks)} rungs need "
                       f"{per_rung * len(blanks)}")
    out = []
    for r, b in enumerate(blanks):
        task = SudokuText(b)
        for i in range(per_rung):
            solution = np.array([int(c) for c in grids[r * per_rung + i]], np.uint8)
            puzzle = dig_puzzle(solution, np.random.default_rng([seed, b, i]), n_blanks=b)
            out.append(task.from_grids(puzzle, solution))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", action="append", required=True, help="a sudoku-text checkpoint (repeatable)")
    p.add_argument("--grids", required=True, help="solved grids from elsewhere (CSV with an answer column, "
                                                  "or one 81-digit grid per line)")
    p.add_argument("--per-rung", type=int, default=50, help="puzzles per number of blanks, from each source")
    p.add_argument("--blanks", default="10,20,30,45")
    p.add_argument("--pool", type=int, default=0, help="draw the grids at random from the file's first POOL "
                                                       "(0: use them in file order)")
    p.add_argument("--seed", type=int, default=0, help="the grid draw and the digging")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="")
    args = p.parse_args()
    from trmlm.errors import TRMError

    try:
        report = run(args)
    except TRMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.out:
        from trmlm.bench.common import write_json

        write_json(Path(args.out), report)
        print(f"wrote {args.out}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from trmlm.bench.common import hardware
    from trmlm.errors import TRMError
    from trmlm.lm.checkpoint import load_lm
    from trmlm.lm.halting import HaltPolicy
    from trmlm.lm.tasks.score import score_task
    from trmlm.puzzles.lm_tasks import get_task
    from trmlm.puzzles.sudoku.text_task import BLANK_LEVELS, SudokuText

    try:
        blanks = tuple(int(b) for b in args.blanks.split(","))
    except ValueError:
        raise TRMError(f"--blanks: a comma list of {BLANK_LEVELS}, got {args.blanks!r}") from None
    if not blanks or set(blanks) - set(BLANK_LEVELS):
        raise TRMError(f"--blanks: a comma list of {BLANK_LEVELS}, got {args.blanks!r}")
    if args.per_rung < 1 or args.pool < 0:
        raise TRMError("--per-rung must be >= 1 and --pool >= 0")
    torch.set_num_threads(args.threads)
    grids = read_grids(Path(args.grids))
    if args.pool:
        pool = grids[:args.pool]
        need = min(len(pool), args.per_rung * len(blanks))
        grids = [pool[i] for i in np.random.default_rng(args.seed).choice(len(pool), need, replace=False)]
    outside = grid_examples(grids, blanks, args.per_rung, args.seed)
    task = get_task("sudoku-text")
    rows = []
    for ckpt in args.checkpoint:
        lm = load_lm(Path(ckpt))
        if lm.cfg.data.task not in ("sudoku-text", *(f"sudoku-text-{b}" for b in BLANK_LEVELS)):
            raise TRMError(f"{ckpt} was trained on {lm.cfg.data.task or 'text'!r}, not Sudoku as text")
        generated = [ex for b in blanks for ex in SudokuText(b).examples(args.per_rung, lm.cfg.data.task_test_seed)]
        policies = {"stored": lm.generation.validate(lm.cfg.model.max_sup_steps)}
        if lm.cfg.arch == "trm":
            policies["full depth"] = HaltPolicy.fixed(lm.cfg.model.max_sup_steps)
        for source, examples in (("generated", generated), ("grids", outside)):
            for rule, policy in policies.items():
                rep = score_task(lm.model, lm.tokenizer, task, examples, policy, teacher_forced=False)
                rows.append({"checkpoint": ckpt, "arch": lm.cfg.arch, "source": source, "exit": rule,
                             "halt_threshold": policy.threshold if rule == "stored" and lm.cfg.arch == "trm" else None,
                             "exact_acc": rep["exact_acc"], "exact_acc_ci95": rep["exact_ci95"],
                             "steps_mean": rep["steps_mean"],
                             "exact_acc_per_rung": {k: v["exact_acc"] for k, v in rep["per_rung"].items()}})
                print_row(rows[-1])
    return {"benchmark": "lm_sudoku_grids", "grids_file": Path(args.grids).name, "grids_used": len(outside),
            "per_rung": args.per_rung, "blanks": list(blanks), "seed": args.seed, "pool": args.pool,
            "hardware": hardware(torch.device("cpu")), "command": " ".join(["python", *sys.argv]), "rows": rows}


def print_row(r: dict[str, Any]) -> None:
    rungs = " ".join(f"{k.removeprefix('sudoku-text-')}:{v:.3f}" for k, v in r["exact_acc_per_rung"].items())
    print(f"{Path(r['checkpoint']).name:40s} {r['arch']:12s} {r['source']:10s} {r['exit']:10s} "
          f"exact {r['exact_acc']:.3f} ({r['exact_acc_ci95'][0]:.3f}-{r['exact_acc_ci95'][1]:.3f})  steps {r['steps_mean']:.2f}  per rung {rungs}", flush=True)


if __name__ == "__main__":
    main()
