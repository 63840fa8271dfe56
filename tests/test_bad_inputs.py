"""Bad input through the real `trm` console script: a table of commands x inputs, one subprocess each.

Every row runs `trm ...` as a user would (a separate process, so a traceback cannot hide inside a
test runner) and asserts what the project promises: bad input ends with exit code 2 and exactly one
stderr line, `error: <what is wrong>`, never a traceback; the valid controls exit 0. Rows may also
check what must survive (a saved run, a user's own files) or must not happen (a pickle running code).
The rows are `CASES` in tests/bad_input_cases.py; the fixture runs they read and the helpers that
set them up and check them are in tests/bad_input_workspace.py.

The same table, run by this file as a script, writes docs/reliability.md:

    .venv/bin/python tests/test_bad_inputs.py --write-table docs/reliability.md

A fast, representative subset runs in the default suite; the rest is marked `slow`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bad_input_cases import CASES, DSJ, TRAIN_S
from bad_input_workspace import REPO, RUNS, Case, Workspace, latest, trm_command


# -- running a row ------------------------------------------------------------------------------

@dataclass
class Outcome:
    case: Case
    argv: list[str]
    proc: subprocess.CompletedProcess
    workdir: Path
    lines: list[str] = field(default_factory=list)  # non-empty stderr lines


def run_case(case: Case, ws: Workspace, workdir: Path) -> Outcome:
    workdir.mkdir(parents=True, exist_ok=True)
    if case.setup is not None:
        case.setup(ws, workdir)
    argv = case.argv(ws)
    try:
        proc = subprocess.run([*trm_command(), *argv], cwd=workdir, env=ws.env(), input=case.stdin or b"",
                              capture_output=True, timeout=300)
    finally:
        for p in workdir.rglob("*"):  # read-only rows: let the temp dir be removed
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
    proc = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                       proc.stderr.decode(errors="replace"))
    return Outcome(case, argv, proc, workdir, [line for line in proc.stderr.splitlines() if line.strip()])


def assert_outcome(o: Outcome, ws: Workspace) -> None:
    c, proc = o.case, o.proc
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert proc.returncode == c.code, f"exit {proc.returncode}, wanted {c.code}:\n{proc.stderr[-3000:]}"
    if c.code == 2:
        assert len(o.lines) == 1, f"wanted one stderr line, got {len(o.lines)}:\n{proc.stderr[-3000:]}"
        assert o.lines[0].startswith("error: "), o.lines[0]
        assert c.needle in o.lines[0], (c.needle, o.lines[0])
    else:
        assert not any(line.startswith("error:") for line in o.lines), proc.stderr[-3000:]
    if c.check is not None:
        c.check(ws, o.workdir, proc)


def _skip_reason(case: Case) -> str | None:
    if case.needs_permissions and hasattr(os, "geteuid") and os.geteuid() == 0:
        return "file permissions do not bind root"
    return None


# -- pytest ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def workspace(tmp_path_factory, lm_ckpt) -> Workspace:
    root = tmp_path_factory.mktemp("bad-inputs")
    return Workspace(root / "runs", root / "cache", lm_ckpt)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=() if c.fast else pytest.mark.slow)
                                  for c in CASES])
def test_bad_input(case: Case, workspace: Workspace, tmp_path: Path) -> None:
    reason = _skip_reason(case)
    if reason:
        pytest.skip(reason)
    assert_outcome(run_case(case, workspace, tmp_path), workspace)


def test_every_issue_item_has_a_fast_row():
    """The default suite keeps a row for each kind of defect the hardening pass found."""
    fast = {c.name for c in CASES if c.fast}
    for name in ("z01_ds_pickle_resume", "o03_nonrun_dir", "o11_png_under_file", "e01_limit0",
                 "c22_set_section_scalar", "k10_lm_to_solve", "u12_resume_shape_state",
                 "a12b_deep2k", "s12_steps_huge", "e06_evallm_batch0", "c12_lm_unknown_set"):
        assert name in fast, name


def test_deepspeed_resume_through_safe_files_is_bit_identical(workspace: Workspace, tmp_path: Path):
    """Resuming the ZeRO-2 run from its step-3 state (DeepSpeed's files written and read as
    safetensors + JSON) ends with the same weights and loss curve as the uninterrupted run."""
    from trmlm.checkpoint import check_tree_file

    run = tmp_path / "ds"
    shutil.copytree(workspace.run("ds"), run)
    state = run / "train_state"
    shutil.rmtree(state / "step_00000006")
    (state / "latest").write_text("step_00000003\n")
    files = sorted(p for p in (state / "step_00000003" / "deepspeed").rglob("*") if p.is_file())
    assert [p.name for p in files] == ["latest", "mp_rank_00_model_states.pt",
                                       "zero_pp_rank_0_mp_rank_00_optim_states.pt"]  # no converter scripts
    for p in files[1:]:
        check_tree_file(p)  # DeepSpeed's *.pt names, safetensors contents
        assert not p.read_bytes().startswith((b"PK\x03\x04", b"\x80"))
    proc = subprocess.run([*trm_command(), *TRAIN_S, "--set", "train.log_every=1", "--out", str(run), "--resume",
                           "--deepspeed", DSJ], cwd=tmp_path, env=workspace.env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "model.safetensors").read_bytes() == (workspace.run("ds") / "model.safetensors").read_bytes()

    def curve(path: Path) -> list[tuple[int, float]]:
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]

    assert curve(run) == curve(workspace.run("ds")) and len(curve(run)) == 6


def test_checkpoint_files_honour_the_umask(workspace: Workspace):
    """Released checkpoint files get the mode any new file gets (they were 0600 through mkstemp)."""
    from trmlm.checkpoint import umask_mode

    want = umask_mode()
    for run, names in (("sudoku", ("model.safetensors", "config.json", "meta.json")),
                       ("lm", ("model.safetensors", "config.json", "tokenizer.json", "generation_config.json"))):
        for name in names:
            assert (workspace.run(run) / name).stat().st_mode & 0o777 == want, (run, name)
    state = latest(workspace.run("sudoku"))
    assert (state / "state.safetensors").stat().st_mode & 0o777 == want
    assert state.stat().st_mode & 0o777 == umask_mode(0o777)


def test_eval_limit_that_is_not_a_multiple_of_the_batch():
    """`eval-puzzle --limit N` scores exactly the first N puzzles: it used to take whole batches
    but divide by N (exact accuracy 11.35 at --limit 20, 227.0 at --limit 1)."""
    from types import SimpleNamespace

    import numpy as np
    import torch

    from trmlm.puzzle.eval import evaluate
    from trmlm.runtime import resolve_runtime

    V, L, N = 6, 4, 10

    class Echo(torch.nn.Module):
        """Predicts its input: exact on the rows whose labels equal the inputs."""
        cfg = SimpleNamespace(max_sup_steps=2)

        def initial_state(self, batch, device):
            return None

        def forward(self, state, inputs, puzzle_ids, grad="none"):
            logits = torch.nn.functional.one_hot(inputs, V).float() * 10  # (B, L, V)
            return SimpleNamespace(state=None, logits=logits, halt_logit=torch.zeros(len(inputs)))

    rng = np.random.default_rng(0)
    inputs = rng.integers(1, V, size=(N, L))
    labels = inputs.copy()
    labels[1::2, 0] = labels[1::2, 0] % (V - 1) + 1  # odd rows: one cell the echo gets wrong
    data = {"inputs": inputs, "labels": labels, "puzzle_ids": np.zeros(N, np.int64)}
    rt = resolve_runtime("cpu")
    for limit, exact, cells in ((5, 3 / 5, 18 / 20), (1, 1.0, 1.0), (2, 1 / 2, 7 / 8), (None, 1 / 2, 35 / 40)):
        m = evaluate(Echo(), data, rt, batch_size=4, limit=limit)
        assert m["n_eval"] == (limit or N)
        assert m["exact_acc"] == pytest.approx(exact) and m["exact_acc_per_step"][-1] == pytest.approx(exact)
        assert m["cell_acc"] == pytest.approx(cells)


# -- docs/reliability.md ----------------------------------------------------------------------

def _cell(text: str, limit: int = 150) -> str:
    text = text.replace("\n", "\\n")
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return text.replace("|", "\\|")


def _shown(argv: list[str], ws: Workspace) -> str:
    def arg(a: str) -> str:
        for name in RUNS:
            if a == str(ws.root / name):
                return f"<{name} run>"
        a = a.replace(f"{REPO}/", "")
        if len(a) > 40:
            return f"'{a[:12]}…' ({len(a)} chars)"
        return a if a and all(ch.isprintable() and ch not in " '\"" for ch in a) else repr(a)
    return "trm " + " ".join(arg(a) for a in argv)


PAGE_HEAD = """# Reliability: what bad input does

Every `trm` command turns bad input into one line on stderr, `error: <what is wrong>`, and exit
code 2: never a Python traceback, never a half-finished run. The rules behind the table:

- **Checked before any work.** Configuration, output paths (`--out`, `eval-puzzle --png` and
  `--submission`, `train-tokenizer --out`, `bench --out`) and the saved state of a `--resume` are
  checked before training or evaluation starts, so a typo never costs a finished evaluation.
  An output path that is a file, lies below a file or is not writable is refused.
- **Nothing saved is lost.** A `--out` that holds a run needs `--resume` or `--overwrite`; a
  non-empty directory that is not a trm run (training writes a `.trm-run` marker when it starts)
  is left alone unless `--overwrite`. Runs from before the marker stay resumable.
- **A run directory is data, never code.** Weights and state are safetensors, metadata is JSON,
  DeepSpeed's state is safetensors + JSON too; a planted pickle is refused, not loaded
  (docs/training.md, "Checkpoints are data").
- **Resume continues exactly.** Stale temp files of a killed save are removed at the start,
  `metrics.jsonl` is cut back to the resumed step, and a state whose tensors do not fit the model
  (or that was saved by the other stepper, plain or DeepSpeed) is refused, naming the file.
- **Bounded work.** `trm solve --steps` takes 1 to 1024 supervision steps (beyond the trained
  N_sup it warns); `eval-puzzle --limit` must be at least 1.

## The table

Generated by `tests/test_bad_inputs.py`, the test that runs each row through the installed `trm`
console script in its own process (the default test suite runs a representative subset, the rest
is marked `slow`):

    .venv/bin/python tests/test_bad_inputs.py --write-table docs/reliability.md

`<sudoku run>`, `<maze run>`, `<arc run>`, `<lm run>` are checkpoints of the `*-tiny` presets and
`<ds run>` a ZeRO-2 DeepSpeed Sudoku run, trained by the same script; other file names are made by
the row itself. Exit 0 rows are valid controls (their first stderr line is the command's summary).
"""


def write_table(path: Path, lm: Path | None = None, only: set[str] | None = None) -> int:
    """Run every row (or those named in `only`), assert each, write the page; returns the failures."""
    import tempfile

    failures = 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="trm-bad-inputs-") as tmp:
        ws = Workspace(Path(tmp) / "runs", Path(tmp) / "cache", lm)
        for i, case in enumerate(CASES):
            if only and case.name not in only:
                continue
            reason = _skip_reason(case)
            if reason:
                rows.append((case, _shown(case.argv(ws), ws), "-", f"(not run here: {reason})"))
                continue
            o = run_case(case, ws, Path(tmp) / f"case{i:03d}")
            status = "ok"
            try:
                assert_outcome(o, ws)
            except AssertionError as exc:
                failures += 1
                status = f"FAILED: {str(exc).splitlines()[0] if str(exc) else 'assertion'}"
            first = o.lines[0] if o.lines else "(nothing on stderr)"
            print(f"{status:6.6s} {case.name:32s} exit {o.proc.returncode}  {first[:100]}", file=sys.stderr)
            rows.append((case, _shown(o.argv, ws), str(o.proc.returncode), first))
    import torch

    stamp = (f"Last generated {datetime.date.today().isoformat()} on {platform.system()} "
             f"{platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}; "
             f"{len(rows)} rows, {failures} failing.\n")
    lines = [PAGE_HEAD, stamp, "| case | input | command | exit | first line of stderr |", "|---|---|---|---|---|"]
    for case, shown, code, first in rows:
        lines.append(f"| {case.name} | {_cell(case.what)} | `{_cell(shown, 200)}` | {code} | {_cell(first, 400)} |")
    path.write_text("\n".join(lines) + "\n")
    return failures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-table", type=Path, required=True, help="the page to write (docs/reliability.md)")
    parser.add_argument("--only", default="", help="comma-separated case names (default: all)")
    ns = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(1 if write_table(ns.write_table, only=set(filter(None, ns.only.split(",")))) else 0)
