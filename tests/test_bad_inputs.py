"""Bad input through the real `trm` console script: a table of commands x inputs, one subprocess each.

Every row runs `trm ...` as a user would (a separate process, so a traceback cannot hide inside a
test runner) and asserts what the project promises: bad input ends with exit code 2 and exactly one
stderr line, `error: <what is wrong>`, never a traceback; the valid controls exit 0. Rows may also
check what must survive (a saved run, a user's own files) or must not happen (a pickle running code).

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
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
DEEPSPEED_JSON = REPO / "configs" / "deepspeed" / "zero2.json"
EASY_SUDOKU = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
MAZE_6 = "######\n#S   #\n#### #\n#    #\n# ####\n#   G#\n"
RUNS = ("sudoku", "maze", "arc", "lm", "ds")  # the tiny fixture runs, by name in the workspace


def trm_command() -> list[str]:
    """The installed console script beside this interpreter, else `python -m trmlm` (the same app)."""
    script = Path(sys.executable).with_name("trm")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "trmlm"]


# -- the workspace: tiny checkpoints every row reads (rows that change one work on a copy) --------

@dataclass
class Workspace:
    """Where the fixture runs live; each is trained the first time a row names it."""

    root: Path
    cache: Path
    lm_source: Path | None = None  # an lm-tiny checkpoint to copy instead of training one

    def run(self, name: str) -> Path:
        path = self.root / name
        if not path.exists():
            _build(self, name)
        return path

    def env(self) -> dict[str, str]:
        return {**os.environ, "OMP_NUM_THREADS": "1", "TRM_CACHE_DIR": str(self.cache), "COLUMNS": "200",
                "NO_COLOR": "1", "PYTHONWARNINGS": "ignore"}


def _train(ws: Workspace, args: list[str]) -> None:
    proc = subprocess.run([*trm_command(), *args, "--quiet", "--set", "train.threads=1"], cwd=ws.root,
                          env=ws.env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _build(ws: Workspace, name: str) -> None:
    """sudoku/maze/arc: the *-tiny presets; lm: lm-tiny (4 steps; copied when given); ds: a
    DeepSpeed ZeRO-2 sudoku-tiny run with resumable states at steps 3 and 6."""
    ws.root.mkdir(parents=True, exist_ok=True)
    if name in ("sudoku", "maze", "arc"):
        _train(ws, ["train-puzzle", name, "--preset", f"{name}-tiny", "--out", name])
    elif name == "lm" and ws.lm_source is not None:
        shutil.copytree(ws.lm_source, ws.root / "lm")
    elif name == "lm":
        _train(ws, ["train-lm", "--preset", "lm-tiny", "--out", "lm", "--set", "train.train_steps=4"])
    elif name == "ds":
        _train(ws, ["train-puzzle", "sudoku", "--preset", "sudoku-tiny", "--out", "ds", "--set",
                    "train.log_every=1", "--deepspeed", str(DEEPSPEED_JSON)])
    else:
        raise KeyError(name)


# -- the table ----------------------------------------------------------------------------------

Setup = Callable[[Workspace, Path], None]
Check = Callable[[Workspace, Path, subprocess.CompletedProcess], None]


@dataclass
class Case:
    name: str                      # the outside pass's short name, or a new one for issue items
    what: str                      # the input, in words (docs/reliability.md)
    args: list[str]                # after `trm`; fixture runs are named by RUNS, files by setup
    code: int = 2                  # 2: one-line error; 0: a valid control
    needle: str = ""               # must appear in the error line
    setup: Setup | None = None     # files the row needs, written into its own working directory
    check: Check | None = None     # what must (not) have happened besides the exit code
    stdin: bytes | None = None
    fast: bool = False             # in the default suite
    needs_permissions: bool = False  # read-only paths: meaningless as root

    def argv(self, ws: Workspace) -> list[str]:
        return [str(ws.run(a[1:])) if a.startswith("@") else a for a in self.args]


def write(name: str, data: str | bytes) -> Setup:
    def setup(ws: Workspace, d: Path) -> None:
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def copy_run(run: str, name: str, then: Callable[[Path], None] | None = None) -> Setup:
    def setup(ws: Workspace, d: Path) -> None:
        shutil.copytree(ws.run(run), d / name)
        if then is not None:
            then(d / name)
    return setup


def both(*setups: Setup) -> Setup:
    def setup(ws: Workspace, d: Path) -> None:
        for s in setups:
            s(ws, d)
    return setup


def read_only(name: str) -> Setup:
    def setup(ws: Workspace, d: Path) -> None:
        (d / name).mkdir(exist_ok=True)
        (d / name).chmod(0o555)
    return setup


def latest(run: Path) -> Path:
    return run / "train_state" / (run / "train_state" / "latest").read_text().strip()


def _reshape_state(prefix: str) -> Callable[[Path], None]:
    """Give the first saved tensor under `prefix` a shape the model does not have."""
    def edit(run: Path) -> None:
        import torch
        from safetensors.torch import load_file, save_file

        path = latest(run) / "state.safetensors"
        tensors = load_file(str(path))
        key = sorted(k for k in tensors if k.startswith(prefix))[0]
        tensors[key] = torch.zeros(3, 3)
        save_file(tensors, str(path))
    return edit


def _rewrite(rel: str, data: bytes | Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        path = run / rel
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)
    return edit


def _in_latest(rel: str, data: bytes | Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        _rewrite(str(latest(run).relative_to(run) / rel), data)(run)
    return edit


def _narrow_weights(run: Path) -> None:
    """model.safetensors with every 2-D tensor cut to half its rows (valid file, wrong shapes)."""
    from safetensors.torch import load_file, save_file

    w = load_file(str(run / "model.safetensors"))
    save_file({k: v[: max(1, v.shape[0] // 2)].contiguous() if v.dim() == 2 else v for k, v in w.items()},
              str(run / "model.safetensors"))


def _bad_offsets(run: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
    (run / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)


def _config_edit(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        cfg = json.loads((run / "config.json").read_text())
        fn(cfg)
        (run / "config.json").write_text(json.dumps(cfg))
    return edit


class _Evil:
    """A pickle whose loading runs a shell command (the DeepSpeed-resume attack)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant_pickle(ws: Workspace, d: Path) -> None:
    import pickle

    shutil.copytree(ws.run("ds"), d / "ds")
    target = latest(d / "ds") / "deepspeed" / "state" / "mp_rank_00_model_states.pt"
    assert target.is_file(), "DeepSpeed's model-states file moved: update the reproduction"
    target.write_bytes(pickle.dumps(_Evil(str(d / "PWNED"))))


def _no_marker(ws: Workspace, d: Path, proc) -> None:
    assert not (d / "PWNED").exists(), "the planted pickle ran its command"


def _unchanged(rel: str, source: str) -> Check:
    def check(ws: Workspace, d: Path, proc) -> None:
        assert (d / rel).read_bytes() == (ws.run(source) / Path(rel).name).read_bytes(), f"{rel} changed"
    return check


def _user_file_intact(ws: Workspace, d: Path, proc) -> None:
    assert (d / "userdir" / "config.json").read_text() == '{"mine": 1}\n'
    assert not (d / "userdir" / "model.safetensors").exists()


def _png_reported(ws: Workspace, d: Path, proc) -> None:
    reported = Path(json.loads(proc.stdout)["png"])
    assert reported.name == "pngdir.png" and (d / reported).is_file()


def _stale_files(ws: Workspace, d: Path) -> None:
    shutil.copytree(ws.run("sudoku"), d / "run")
    for rel in (".config.json.k1ll3d.tmp", ".meta.json.k1ll3d.tmp", "train_state/.latest.k1ll3d.tmp"):
        (d / "run" / rel).write_text("half a file")
    with (d / "run" / "metrics.jsonl").open("a") as fh:  # rows logged after the last save
        fh.write(json.dumps({"step": 7, "train/loss": 1.0}) + "\n")


def _stale_removed(ws: Workspace, d: Path, proc) -> None:
    run = d / "run"
    assert not list(run.glob(".*.tmp")) and not list((run / "train_state").glob(".*.tmp"))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(7) == 1, steps  # step 7 logged once, by the resumed run


def _sudoku_9x9(rows: list[str]) -> str:
    return "".join(rows)


UNSOLVABLE = "12345678." + "........9" + "." * 63  # r1c9 must be 9; column 9 already has one
CSV_BAD = "a,b\n1,2\n"
RAGGED_MAZE = "#######\n#S #\n#  # #\n# ## G\n#     #\n######\n"  # row lengths 7,4,6,6,7,6: 36 cells

S, M, A, LM, DS = "@sudoku", "@maze", "@arc", "@lm", "@ds"
TRAIN_S0 = ["train-puzzle", "sudoku", "--preset", "sudoku-tiny", "--quiet"]
TRAIN_S = [*TRAIN_S0, "--set", "train.threads=1"]
TRAIN_LM = ["train-lm", "--preset", "lm-tiny", "--quiet", "--set", "train.threads=1"]
SOLVE_S = ["solve", "sudoku"]
DSJ = str(DEEPSPEED_JSON)

CASES = [
    # solve sudoku
    Case("s00_valid", "a valid puzzle (control)", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", S], 0, fast=True),
    Case("s01_len80", "80 cells", [*SOLVE_S, EASY_SUDOKU[:80], "--checkpoint", S], needle="80 cells, expected 81"),
    Case("s02_len82", "82 cells", [*SOLVE_S, EASY_SUDOKU + ".", "--checkpoint", S], needle="82 cells"),
    Case("s03_letters", "a letter among the digits", [*SOLVE_S, EASY_SUDOKU[:80] + "x", "--checkpoint", S],
         needle="illegal character 'x'"),
    Case("s04_conflict", "a digit twice in a row", [*SOLVE_S, "55" + "." * 79, "--checkpoint", S],
         needle="contradictory puzzle"),
    Case("s05_unicode", "an Arabic-Indic digit", [*SOLVE_S, EASY_SUDOKU[:80] + "\u0663", "--checkpoint", S],
         needle="illegal character"),
    Case("s06_empty", "an empty puzzle", [*SOLVE_S, "", "--checkpoint", S], needle="0 cells"),
    Case("s07_solved_invalid", "a full grid breaking the rules", [*SOLVE_S, "1" * 81, "--checkpoint", S],
         needle="contradictory puzzle"),
    Case("s08_all_blank", "81 blanks (control: no unique solution)", [*SOLVE_S, "." * 81, "--checkpoint", S], 0),
    Case("s09_unsolvable", "clues no grid satisfies", [*SOLVE_S, UNSOLVABLE, "--checkpoint", S],
         needle="unsolvable puzzle"),
    Case("s10_zeros", "zeros as blanks (control)", [*SOLVE_S, "0" * 81, "--checkpoint", S], 0),
    Case("s11_steps0", "--steps 0", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", S, "--steps", "0"],
         needle="--steps must lie in 1..1024"),
    Case("s12_steps_huge", "--steps 1000000 (unbounded before)", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", S,
         "--steps", "1000000"], needle="--steps must lie in 1..1024", fast=True),
    Case("s12b_steps_beyond_nsup", "--steps 5 > N_sup (control: runs, warns)",
         [*SOLVE_S, EASY_SUDOKU, "--checkpoint", S, "--steps", "5"], 0),
    Case("s13_badtask", "an unknown task", ["solve", "kakuro", EASY_SUDOKU, "--checkpoint", S],
         needle="unknown puzzle task 'kakuro'"),
    # command-line usage mistakes (click's several-line usage message before): one line
    Case("u01_flag_value", "--json true (a flag takes no value)", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", S,
         "--json", "true"], needle="unexpected extra argument", fast=True),
    Case("u02_unknown_option", "an unknown option", ["generate", "--bogus"], needle="No such option: --bogus",
         fast=True),
    Case("u03_bad_int", "--steps abc", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", S, "--steps", "abc"],
         needle="Invalid value for '--steps'"),
    Case("s14_nullbyte_file", "a puzzle file with a NUL byte", [*SOLVE_S, "p.txt", "--checkpoint", S],
         needle="illegal character", setup=write("p.txt", b"\x00" + EASY_SUDOKU[1:].encode())),
    Case("s15_non_utf8_file", "a puzzle file that is not UTF-8", [*SOLVE_S, "p.txt", "--checkpoint", S],
         needle="not UTF-8 text", setup=write("p.txt", b"\xff\xfe" + b"." * 79)),
    Case("s16_non_utf8_stdin", "non-UTF-8 bytes on stdin", [*SOLVE_S, "-", "--checkpoint", S],
         needle="stdin is not UTF-8", stdin=b"\xff" * 81),
    Case("s17_threads_neg", "--threads -1", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", S, "--threads", "-1"],
         needle="threads must be >= 0"),
    # solve maze
    Case("m00_valid", "a valid 6x6 maze (control)", ["solve", "maze", "m.txt", "--checkpoint", M], 0,
         setup=write("m.txt", MAZE_6)),
    Case("m01_noS", "no start", ["solve", "maze", MAZE_6.replace("S", " "), "--checkpoint", M],
         needle="exactly one start 'S', found 0"),
    Case("m02_twoG", "two goals", ["solve", "maze", MAZE_6.replace("#S", "GS"), "--checkpoint", M],
         needle="exactly one goal 'G', found 2"),
    Case("m03_nonsquare", "6 cells", ["solve", "maze", "#S  G#", "--checkpoint", M], needle="not a square grid"),
    Case("m04_unsolvable", "the goal walled off", ["solve", "maze", MAZE_6.replace("#### #", "######"),
         "--checkpoint", M], needle="unsolvable maze"),
    Case("m05_badchar", "an illegal character", ["solve", "maze", MAZE_6.replace("#S   #", "#S X #"),
         "--checkpoint", M], needle="illegal character 'X'"),
    Case("m06_wrongsize", "a 3x3 maze for a 6x6 model", ["solve", "maze", "S G\n   \n   \n", "--checkpoint", M],
         needle="9 cells but the model was trained on 36"),
    Case("m07_ragged", "rows of 7,4,6,6,7,6 characters (was reflowed into another maze)",
         ["solve", "maze", "m.txt", "--checkpoint", M], needle="ragged rows",
         setup=write("m.txt", RAGGED_MAZE)),
    Case("m08_empty", "an empty maze", ["solve", "maze", "\n", "--checkpoint", M], needle="not a square grid"),
    Case("m09_unicode", "a euro sign", ["solve", "maze", MAZE_6.replace("#S   #", "#S \u20ac #"),
         "--checkpoint", M], needle="illegal character"),
    # solve arc
    Case("a00_valid", "a 2x2 grid (control)", ["solve", "arc", "[[1,2],[3,4]]", "--checkpoint", A], 0),
    Case("a00b_task", "a task JSON (control)", ["solve", "arc", json.dumps(
        {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]]}]}), "--checkpoint", A], 0),
    Case("a01_truncated", "truncated JSON", ["solve", "arc", "[[1,2],[3", "--checkpoint", A], needle="invalid JSON"),
    Case("a02_schema", "a task without a test input", ["solve", "arc", '{"test": []}', "--checkpoint", A],
         needle="'test' list"),
    Case("a03_31x31", "a 31x31 grid", ["solve", "arc", json.dumps([[0] * 31] * 31), "--checkpoint", A],
         needle="grid is 31x31"),
    Case("a04_floatcol", "colour 1.5", ["solve", "arc", "[[1.5]]", "--checkpoint", A], needle="colour 1.5"),
    Case("a05_strcol", "colour '1'", ["solve", "arc", '[["1"]]', "--checkpoint", A], needle="colour '1'"),
    Case("a06_col10", "colour 10", ["solve", "arc", "[[10]]", "--checkpoint", A], needle="colour 10"),
    Case("a07_negcol", "colour -1", ["solve", "arc", "[[-1]]", "--checkpoint", A], needle="colour -1"),
    Case("a08_ragged", "a ragged grid", ["solve", "arc", "[[1,2,3],[1,2]]", "--checkpoint", A], needle="ragged grid"),
    Case("a09_emptygrid", "an empty grid", ["solve", "arc", "[]", "--checkpoint", A], needle="non-empty list"),
    Case("a10_boolcol", "colour true", ["solve", "arc", "[[true]]", "--checkpoint", A], needle="colour True"),
    Case("a11_nan", "colour NaN", ["solve", "arc", "[[NaN]]", "--checkpoint", A], needle="colour nan"),
    Case("a12_deep", "a grid cell nested 900 deep", ["solve", "arc", "-", "--checkpoint", A],
         needle="outside 0-9", stdin=("[[" + "[" * 900 + "]" * 900 + "]]").encode()),
    Case("a12b_deep2k", "JSON nested 2000 deep on stdin", ["solve", "arc", "-", "--checkpoint", A],
         needle="nested too deeply", stdin=("[" * 2000 + "]" * 2000).encode(), fast=True),
    Case("a13_floatint", "colour 1.0", ["solve", "arc", "[[1.0]]", "--checkpoint", A], needle="colour 1.0"),
    Case("a14_bigint", "colour 1e999", ["solve", "arc", "[[1e999]]", "--checkpoint", A], needle="colour inf"),
    Case("a15_emptyrow", "rows without cells", ["solve", "arc", "[[],[]]", "--checkpoint", A], needle="grid is 2x0"),
    Case("a16_stdin_empty", "nothing on stdin", ["solve", "arc", "-", "--checkpoint", A], needle="invalid JSON",
         stdin=b""),
    # generate
    Case("g00_valid", "a prompt (control)", ["generate", "--checkpoint", LM, "--prompt", "ROMEO", "--max-new-tokens",
         "5"], 0),
    Case("g01_emptyprompt", "an empty prompt", ["generate", "--checkpoint", LM, "--prompt", ""], needle="empty prompt"),
    Case("g02_100k", "a 100000-character prompt", ["generate", "--checkpoint", LM, "--prompt", "a" * 100_000],
         needle="does not fit the model's context"),
    Case("g03_oov", "a character outside the tokenizer", ["generate", "--checkpoint", LM, "--prompt", "\u00e9"],
         needle="is not in the tokenizer"),
    Case("g04_mnt0", "--max-new-tokens 0", ["generate", "--checkpoint", LM, "--prompt", "A", "--max-new-tokens", "0"],
         needle="--max-new-tokens must be >= 1"),
    Case("g05_mnt_neg", "--max-new-tokens -5", ["generate", "--checkpoint", LM, "--prompt", "A",
         "--max-new-tokens", "-5"], needle="--max-new-tokens must be >= 1"),
    Case("g06_mnt_1e9", "--max-new-tokens 1e9 (unbounded before)", ["generate", "--checkpoint", LM, "--prompt",
         "A", "--max-new-tokens", "1000000000"], needle="--max-new-tokens must be <= 1,000,000"),
    Case("g06b_maxsteps_huge", "--max-steps 100000", ["generate", "--checkpoint", LM, "--prompt", "A",
         "--max-steps", "100000"], needle="--max-steps 100000 is more than 4 x the trained N_sup"),
    Case("g14_html_under_file", "--html under an existing file", ["generate", "--checkpoint", LM, "--prompt", "A",
         "--html", "afile/page.html"], needle="is a file, not a directory", setup=lambda ws, d: (d / "afile").write_text("x")),
    Case("g07_temp_neg", "--temperature -1", ["generate", "--checkpoint", LM, "--prompt", "A", "--temperature", "-1"],
         needle="--temperature must be"),
    Case("g08_topp15", "--top-p 1.5", ["generate", "--checkpoint", LM, "--prompt", "A", "--top-p", "1.5"],
         needle="--top-p must lie in (0, 1]"),
    Case("g09_topk0", "--top-k 0 (control: off)", ["generate", "--checkpoint", LM, "--prompt", "A", "--top-k", "0",
         "--max-new-tokens", "5"], 0),
    Case("g10_topk_neg", "--top-k -1", ["generate", "--checkpoint", LM, "--prompt", "A", "--top-k", "-1"],
         needle="--top-k must be >= 0"),
    Case("g11_topp0", "--top-p 0", ["generate", "--checkpoint", LM, "--prompt", "A", "--top-p", "0"],
         needle="--top-p must lie in (0, 1]"),
    Case("g12_temp_nan", "--temperature nan", ["generate", "--checkpoint", LM, "--prompt", "A", "--temperature",
         "nan"], needle="--temperature must be"),
    Case("g13_reppen0", "--repetition-penalty 0", ["generate", "--checkpoint", LM, "--prompt", "A",
         "--repetition-penalty", "0"], needle="--repetition-penalty must be > 0"),
    Case("g14_cache_bad", "--cache foo", ["generate", "--checkpoint", LM, "--prompt", "A", "--cache", "foo"],
         needle="--cache must be commit-last or per-step"),
    Case("g15_numsamples0", "--num-samples 0", ["generate", "--checkpoint", LM, "--prompt", "A", "--num-samples",
         "0"], needle="--num-samples must be >= 1"),
    Case("g16_minmax", "--min-steps 5 --max-steps 1", ["generate", "--checkpoint", LM, "--prompt", "A",
         "--min-steps", "5", "--max-steps", "1"], needle="--min-steps (5) <= --max-steps (1)"),
    Case("g17_halt2", "--halt-threshold 2", ["generate", "--checkpoint", LM, "--prompt", "A", "--halt-threshold",
         "2"], needle="--halt-threshold must lie in [0, 1]"),
    Case("g19_threads_neg", "--threads -1 (was accepted)", ["generate", "--checkpoint", LM, "--prompt", "A",
         "--threads", "-1"], needle="threads must be >= 0"),
    Case("g20_temp_inf", "--temperature inf (was accepted)", ["generate", "--checkpoint", LM, "--prompt", "A",
         "--temperature", "inf"], needle="--temperature must be a finite number"),
    Case("g21_stop_empty", "--stop ''", ["generate", "--checkpoint", LM, "--prompt", "A", "--stop", ""],
         needle="stop strings must not be empty"),
    # configuration (train-puzzle, train-lm): refused before anything is written
    Case("c01_unknown_set", "--set train.stepz=1", [*TRAIN_S, "--set", "train.stepz=1", "--out", "r"],
         needle="unknown config key 'train.stepz'"),
    Case("c02_wrongtype", "--set train.train_steps=abc", [*TRAIN_S, "--set", "train.train_steps=abc", "--out", "r"],
         needle="train.train_steps: expected an integer"),
    Case("c03_noequals", "--set without '='", [*TRAIN_S, "--set", "train.train_steps", "--out", "r"],
         needle="--set expects key=value"),
    Case("c04_unknown_section", "--set foo.bar=1", [*TRAIN_S, "--set", "foo.bar=1", "--out", "r"],
         needle="unknown config key 'foo'"),
    Case("c05_negsteps", "--set train.train_steps=-1", [*TRAIN_S, "--set", "train.train_steps=-1", "--out", "r"],
         needle="train_steps must be >= 1"),
    Case("c06_dmodel_bad", "--set model.d_model=33", [*TRAIN_S, "--set", "model.d_model=33", "--out", "r"],
         needle="not divisible by n_heads"),
    Case("c07_ntrain0", "--set data.n_train=0", [*TRAIN_S, "--set", "data.n_train=0", "--out", "r"],
         needle="must be >= 1"),
    Case("c08_yaml_unknown", "an unknown key in --config YAML", [*TRAIN_S, "--config", "c.yaml", "--out", "r"],
         needle="unknown config key 'train.bogus_key'", setup=write("c.yaml", "train:\n  bogus_key: 1\n")),
    Case("c09_yaml_broken", "broken YAML", [*TRAIN_S, "--config", "c.yaml", "--out", "r"],
         needle="invalid YAML in c.yaml", setup=write("c.yaml", "train: [1,\n  : :\n")),
    Case("c10_yaml_missing", "a missing --config file", [*TRAIN_S, "--config", "nope.yaml", "--out", "r"],
         needle="config file not found: nope.yaml"),
    Case("c11_preset_unknown", "an unknown preset", ["train-puzzle", "sudoku", "--preset", "nope", "--out", "r"],
         needle="unknown preset 'nope'"),
    Case("c12_lm_unknown_set", "--set model.d_modl=3 (train-lm; no stray 'config.' prefix)",
         [*TRAIN_LM, "--set", "model.d_modl=3", "--out", "r"], needle="unknown config key 'model.d_modl'", fast=True),
    Case("c13_lm_wrongtype", "--set model.d_model=[1,2] (train-lm)", [*TRAIN_LM, "--set", "model.d_model=[1,2]",
         "--out", "r"], needle="model.d_model: expected an integer"),
    Case("c14_lm_yaml_unknown", "an unknown key in a train-lm YAML", [*TRAIN_LM, "--config", "c.yaml", "--out", "r"],
         needle="unknown config key 'train.bogus_key'", setup=write("c.yaml", "train:\n  bogus_key: 1\n")),
    Case("c15_lm_heads", "--set model.n_heads=3 (train-lm)", [*TRAIN_LM, "--set", "model.n_heads=3", "--out", "r"],
         needle="model: d_model 32 is not divisible by n_heads 3"),
    Case("c16_lm_bool_as_int", "--set train.lr=true (train-lm)", [*TRAIN_LM, "--set", "train.lr=true", "--out", "r"],
         needle="train.lr: expected a number"),
    Case("c17_lm_data_missing", "--data of a missing file", [*TRAIN_LM, "--data", "/nonexistent.txt", "--out", "r"],
         needle="data file not found"),
    Case("c18_lm_model_bad", "--model rnn (train-lm)", [*TRAIN_LM, "--model", "rnn", "--out", "r"],
         needle="--model must be trm, transformer or transformer-iso"),
    Case("c19_task_bad", "train-puzzle kakuro", ["train-puzzle", "kakuro", "--out", "r"],
         needle="unknown puzzle task 'kakuro'"),
    Case("c20_nproc0", "--nproc 0", [*TRAIN_S, "--nproc", "0", "--out", "r"], needle="--nproc must be >= 1"),
    Case("c20b_nproc_batch", "--nproc 3 with batch 8", [*TRAIN_S, "--nproc", "3", "--out", "r"],
         needle="not divisible by 3 processes"),
    Case("c21_puzzle_arch_bad", "--model rnn (train-puzzle)", [*TRAIN_S, "--model", "rnn", "--out", "r"],
         needle="model.arch: 'rnn' is not one of"),
    Case("c22_set_section_scalar", "--set train=5 (was a TypeError)", [*TRAIN_S, "--set", "train=5", "--out", "r"],
         needle="train: expected a mapping, got 5", fast=True),
    Case("c23_lm_set_section_scalar", "--set model=5 (train-lm)", [*TRAIN_LM, "--set", "model=5", "--out", "r"],
         needle="model: expected a mapping, got 5"),
    Case("c24_yaml_section_scalar", "YAML 'train: 5' (was a TypeError)", [*TRAIN_S0, "--config", "c.yaml", "--out",
         "r"], needle="train: expected a mapping, got 5", setup=write("c.yaml", "train: 5\n")),
    Case("c25_yaml_toplist", "a YAML list at top level", [*TRAIN_S, "--config", "list.yaml", "--out", "r"],
         needle="must hold a mapping at top level", setup=write("list.yaml", "- 1\n- 2\n")),
    # checkpoints given to the wrong command, or damaged
    Case("k01_missing_ckpt", "a missing checkpoint", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", "nope"],
         needle="checkpoint not found: nope"),
    Case("k02_ckpt_is_file", "a file as checkpoint", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", "big.txt"],
         needle="must be a directory", setup=write("big.txt", "x" * 1000)),
    Case("k03_trunc_safetensors", "truncated weights", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", "c"],
         needle="corrupt checkpoint weights", setup=copy_run("sudoku", "c", _rewrite("model.safetensors",
                                                                               lambda b: b[:5]))),
    Case("k04_random_safetensors", "random bytes as weights", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", "c"],
         needle="corrupt checkpoint weights", setup=copy_run("sudoku", "c", _rewrite("model.safetensors",
                                                                               os.urandom(4096)))),
    Case("k05_bad_offsets", "a header whose offsets overrun the file", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", "c"],
         needle="corrupt checkpoint weights", setup=copy_run("sudoku", "c", _bad_offsets)),
    Case("k06_wrong_width", "weights of other shapes than the config", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", "c"],
         needle="does not match its config", setup=copy_run("sudoku", "c", _narrow_weights)),
    Case("k07_corrupt_config", "config.json not JSON", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", "c"],
         needle="corrupt checkpoint config", setup=copy_run("sudoku", "c", _rewrite("config.json", b"{oops"))),
    Case("k08_no_config", "config.json missing", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", "c"],
         needle="checkpoint config missing", setup=copy_run("sudoku", "c", lambda r: (r / "config.json").unlink())),
    Case("k09_config_wrongtype", "d_model 'wide' in config.json", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", "c"],
         needle="model.d_model: expected an integer", setup=copy_run("sudoku", "c", _config_edit(
             lambda c: c["model"].update(d_model="wide")))),
    Case("k10_lm_to_solve", "an LM checkpoint to trm solve", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", LM],
         needle="is a language-model checkpoint (trm train-lm); use trm generate", fast=True),
    Case("k11_puzzle_to_generate", "a puzzle checkpoint to trm generate", ["generate", "--checkpoint", S,
         "--prompt", "A"], needle="is a puzzle checkpoint (trm train-puzzle, task 'sudoku'); use trm solve"),
    Case("k12_maze_ckpt_sudoku", "a maze checkpoint to solve sudoku", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", M],
         needle="was trained on 'maze', not 'sudoku'"),
    Case("k13_sud_ckpt_to_evallm", "a puzzle checkpoint to eval-lm", ["eval-lm", "--checkpoint", S],
         needle="is a puzzle checkpoint"),
    Case("k14_lm_to_evalpuzzle", "an LM checkpoint to eval-puzzle", ["eval-puzzle", "sudoku", "--checkpoint", LM],
         needle="is a language-model checkpoint"),
    Case("k15_lm_trunc", "truncated LM weights", ["generate", "--checkpoint", "c", "--prompt", "A"],
         needle="corrupt checkpoint weights", setup=copy_run("lm", "c", _rewrite("model.safetensors",
                                                                           lambda b: b[: len(b) // 2]))),
    Case("k16_lm_width", "LM weights of other shapes", ["generate", "--checkpoint", "c", "--prompt", "A"],
         needle="does not match its config", setup=copy_run("lm", "c", _narrow_weights)),
    Case("k17_lm_bad_tokenizer", "tokenizer.json not JSON", ["generate", "--checkpoint", "c", "--prompt", "A"],
         needle="corrupt tokenizer file", setup=copy_run("lm", "c", _rewrite("tokenizer.json", b"{oops"))),
    Case("k18_lm_no_tokenizer", "no tokenizer file", ["generate", "--checkpoint", "c", "--prompt", "A"],
         needle="no tokenizer.json or tokenizer.model", setup=copy_run("lm", "c",
                                                                        lambda r: (r / "tokenizer.json").unlink())),
    Case("k19_empty_dir", "an empty directory", [*SOLVE_S, EASY_SUDOKU, "--checkpoint", "c"],
         needle="has no model.safetensors", setup=lambda ws, d: (d / "c").mkdir()),
    # output paths: checked before any work; nothing saved is lost
    Case("o01_existing_run", "--out holding a run", [*TRAIN_S, "--out", "run"], needle="already holds a run",
         setup=copy_run("sudoku", "run"), check=_unchanged("run/model.safetensors", "sudoku")),
    Case("o02_overwrite", "--overwrite of a run (control)", [*TRAIN_S, "--out", "run", "--overwrite"], 0,
         setup=copy_run("sudoku", "run")),
    Case("o03_nonrun_dir", "--out holding the user's own config.json (was overwritten)",
         [*TRAIN_S, "--out", "userdir"], needle="is not empty and is not a trm run directory",
         setup=write("userdir/config.json", '{"mine": 1}\n'), check=_user_file_intact, fast=True),
    Case("o04_out_is_file", "--out naming a file", [*TRAIN_S, "--out", "big.txt"], needle="is a file, not a directory",
         setup=write("big.txt", "x")),
    Case("o05_lm_out_is_file", "--out naming a file (train-lm)", [*TRAIN_LM, "--out", "big.txt"],
         needle="is a file, not a directory", setup=write("big.txt", "x")),
    Case("o06_resume_overwrite", "--resume --overwrite", [*TRAIN_S, "--out", "r", "--resume", "--overwrite"],
         needle="--resume and --overwrite exclude each other"),
    Case("o07_lm_existing_run", "--out holding a run (train-lm)", [*TRAIN_LM, "--out", "run"],
         needle="already holds a run", setup=copy_run("lm", "run"), check=_unchanged("run/model.safetensors", "lm")),
    Case("o08_out_under_file", "--out below a file", [*TRAIN_S, "--out", "big.txt/run"], needle="cannot write there",
         setup=write("big.txt", "x")),
    Case("o09_tok_out_is_file", "train-tokenizer --out naming a file", ["train-tokenizer", "--kind", "char",
         "--out", "big.txt"], needle="is a file, not a directory", setup=write("big.txt", "x")),
    Case("o10_bench_out_is_file", "bench --out naming a file", ["bench", "--decode", "--no-gpt2", "--out",
         "big.txt"], needle="is a file, not a directory", setup=write("big.txt", "x")),
    Case("o11_png_under_file", "eval-puzzle --png below a file (checked before the evaluation)",
         ["eval-puzzle", "sudoku", "--checkpoint", S, "--png", "big.txt/p.png"], needle="--png big.txt",
         setup=write("big.txt", "x"), fast=True),
    Case("o12_png_is_dir", "eval-puzzle --png naming a directory", ["eval-puzzle", "sudoku", "--checkpoint", S,
         "--png", "pics.png"], needle="is a directory", setup=lambda ws, d: (d / "pics.png").mkdir()),
    Case("r01_ro_out_puzzle", "--out in a read-only directory", [*TRAIN_S, "--out", "ro/run"],
         needle="cannot write there", setup=read_only("ro"), needs_permissions=True),
    Case("r02_ro_out_lm", "--out in a read-only directory (train-lm)", [*TRAIN_LM, "--out", "ro/run"],
         needle="cannot write there", setup=read_only("ro"), needs_permissions=True),
    Case("r03_ro_existing_overwrite", "--overwrite of a read-only run", [*TRAIN_S, "--out", "run", "--overwrite"],
         needle="cannot write there", setup=both(copy_run("sudoku", "run"), lambda ws, d: (d / "run").chmod(0o555)),
         needs_permissions=True),
    Case("r04_ro_evalpng", "--png in a read-only directory", ["eval-puzzle", "sudoku", "--checkpoint", S, "--png",
         "ro/p.png"], needle="cannot write there", setup=read_only("ro"), needs_permissions=True),
    Case("r05_ro_tokenizer", "train-tokenizer --out read-only", ["train-tokenizer", "--kind", "char", "--out", "ro/t"],
         needle="cannot write there", setup=read_only("ro"), needs_permissions=True),
    Case("r06_ro_bench", "bench --out read-only", ["bench", "--decode", "--no-gpt2", "--out", "ro/b"],
         needle="cannot write there", setup=read_only("ro"), needs_permissions=True),
    # resume
    Case("u01_resume_nostate", "--resume of a fresh directory", [*TRAIN_S, "--out", "r", "--resume"],
         needle="cannot resume: no saved training state"),
    Case("u02_lm_resume_nostate", "--resume of a fresh directory (train-lm)", [*TRAIN_LM, "--out", "r", "--resume"],
         needle="cannot resume: no saved training state"),
    Case("u03_resume_diffcfg", "--resume with another d_model", [*TRAIN_S, "--set", "model.d_model=64", "--out",
         "run", "--resume"], needle="config mismatch: model.d_model is 32", setup=copy_run("sudoku", "run")),
    Case("u04_resume_difftask", "--resume with other data", [*TRAIN_S, "--set", "data.n_blanks=20", "--out", "run",
         "--resume"], needle="config mismatch: data.n_blanks", setup=copy_run("sudoku", "run")),
    Case("u05_lm_resume_diffcfg", "--resume with another d_model (train-lm)", [*TRAIN_LM, "--set", "model.d_model=64",
         "--out", "run", "--resume"], needle="config mismatch: model.d_model is 32", setup=copy_run("lm", "run")),
    Case("u06_resume_more_steps", "--resume with more steps (control)", [*TRAIN_S, "--set", "train.train_steps=8",
         "--out", "run", "--resume"], 0, setup=copy_run("sudoku", "run")),
    Case("u07_lm_resume_diffdata", "--resume on other text (train-lm)", [*TRAIN_LM, "--data", "t.txt", "--out",
         "run", "--resume"], needle="config mismatch: data.files", setup=both(copy_run("lm", "run"),
                                                                              write("t.txt", "hello world\n" * 400))),
    Case("u08_resume_dangling_latest", "latest naming a missing step", [*TRAIN_S, "--out", "run", "--resume"],
         needle="names step_00000099, which is missing", setup=copy_run("sudoku", "run", _rewrite(
             "train_state/latest", b"step_00000099\n"))),
    Case("u09_resume_trunc_state", "a truncated state.safetensors", [*TRAIN_S, "--out", "run", "--resume"],
         needle="corrupt training state", setup=copy_run("sudoku", "run", _in_latest("state.safetensors",
                                                                                     lambda b: b[:7]))),
    Case("u10_resume_corrupt_statejson", "state.json not JSON", [*TRAIN_S, "--out", "run", "--resume"],
         needle="corrupt training state", setup=copy_run("sudoku", "run", _in_latest("state.json", b"{oops"))),
    Case("u11_lm_resume_shape_state", "a saved LM tensor of the wrong shape (was a traceback)",
         [*TRAIN_LM, "--set", "train.train_steps=8", "--out", "run", "--resume"], needle="does not fit this model",
         setup=copy_run("lm", "run", _reshape_state("model."))),
    Case("u12_resume_shape_state", "a saved tensor of the wrong shape (was a traceback)",
         [*TRAIN_S, "--set", "train.train_steps=8", "--out", "run", "--resume"], needle="does not fit this model",
         setup=copy_run("sudoku", "run", _reshape_state("model.")), fast=True),
    Case("u12b_resume_shape_optimizer", "a saved optimizer moment of the wrong shape",
         [*TRAIN_S, "--set", "train.train_steps=8", "--out", "run", "--resume"], needle="'opt0.",
         setup=copy_run("sudoku", "run", _reshape_state("opt0."))),
    Case("u13_resume_stale_tmp", "--resume after a kill mid-save: stale temp files, metrics past the save (control)",
         [*TRAIN_S, "--set", "train.train_steps=8", "--set", "train.log_every=1", "--out", "run", "--resume"], 0,
         setup=_stale_files, check=_stale_removed),
    # DeepSpeed resume: a run directory is data, never code
    Case("z01_ds_pickle_resume", "a pickle that runs a command, as DeepSpeed's model-states file",
         [*TRAIN_S, "--set", "train.train_steps=9", "--out", "ds", "--resume", "--deepspeed", DSJ],
         needle="is a pickle (torch.save format); a run directory is data, never code",
         setup=_plant_pickle, check=_no_marker, fast=True),
    Case("z02_ds_trunc_resume", "a truncated DeepSpeed optimizer file", [*TRAIN_S, "--set", "train.train_steps=9",
         "--out", "ds", "--resume", "--deepspeed", DSJ], needle="zero_pp_rank_0_mp_rank_00_optim_states.pt",
         setup=copy_run("ds", "ds", _in_latest("deepspeed/state/zero_pp_rank_0_mp_rank_00_optim_states.pt",
                                               lambda b: b[:100]))),
    Case("z03_resume_plain_with_ds", "a DeepSpeed state resumed without --deepspeed", [*TRAIN_S, "--set",
         "train.train_steps=9", "--out", "ds", "--resume"], needle="saved with DeepSpeed; pass the same --deepspeed",
         setup=copy_run("ds", "ds")),
    Case("z03b_resume_ds_with_plain", "a plain state resumed with --deepspeed", [*TRAIN_S, "--set",
         "train.train_steps=9", "--out", "run", "--resume", "--deepspeed", DSJ], needle="saved without DeepSpeed",
         setup=copy_run("sudoku", "run")),
    Case("z04_bad_ds_json", "a broken DeepSpeed JSON", [*TRAIN_S, "--out", "r", "--deepspeed", "badds.json"],
         needle="invalid DeepSpeed JSON badds.json", setup=write("badds.json", "{\n oops\n}")),
    Case("z05_ds_universal", "a DeepSpeed JSON selecting its pickle-reading loaders", [*TRAIN_S, "--out", "r",
         "--deepspeed", "u.json"], needle="load_universal", setup=write("u.json", json.dumps(
             {"zero_optimization": {"stage": 2}, "checkpoint": {"load_universal": True}}))),
    # evaluation and the other commands
    Case("e01_limit0", "eval-puzzle --limit 0 (was 'accuracy 0.0000')", ["eval-puzzle", "sudoku", "--checkpoint", S,
         "--limit", "0"], needle="--limit must be >= 1", fast=True),
    Case("e02_limit_neg", "eval-puzzle --limit -1", ["eval-puzzle", "sudoku", "--checkpoint", S, "--limit", "-1"],
         needle="--limit must be >= 1"),
    Case("e03_source_missing", "eval-puzzle --source of a missing path", ["eval-puzzle", "sudoku", "--checkpoint", S,
         "--source", "/nonexistent/dir"], needle="/nonexistent/dir"),
    Case("e04_source_badcsv", "eval-puzzle --source CSV with another header", ["eval-puzzle", "sudoku",
         "--checkpoint", S, "--source", "bad.csv"], needle="header lacks", setup=write("bad.csv", CSV_BAD)),
    Case("e05_evallm_tokens0", "eval-lm --tokens 0 (control: parallel estimate only)", ["eval-lm", "--checkpoint",
         LM, "--tokens", "0", "--parallel-tokens", "64"], 0),
    Case("e06_evallm_batch0", "eval-lm --batch 0 (was a ValueError)", ["eval-lm", "--checkpoint", LM, "--batch", "0"],
         needle="--batch must be >= 1", fast=True),
    Case("e07_tok_kind_bad", "train-tokenizer --kind wordpiece", ["train-tokenizer", "--kind", "wordpiece", "--out",
         "t"], needle="unknown tokenizer 'wordpiece'"),
    Case("e08_tok_vocab0", "train-tokenizer --vocab-size 0", ["train-tokenizer", "--vocab-size", "0", "--out", "t"],
         needle="--vocab-size must be >= 1"),
    Case("e09_bench_nomode", "bench without a mode", ["bench", "--out", "b"],
         needle="choose at least one of --adaptive-compute, --decode, --train-step"),
    Case("e10_bench_badthresh", "bench --thresholds a,b", ["bench", "--adaptive-compute", "--checkpoint", LM,
         "--thresholds", "a,b", "--out", "b"], needle="--thresholds takes comma-separated numbers"),
    Case("e11_evallm_data_empty", "eval-lm --data of an empty file", ["eval-lm", "--checkpoint", LM, "--data",
         "empty.txt"], needle="empty", setup=write("empty.txt", "")),
    Case("e12_trainlm_data_empty", "train-lm --data of an empty file", [*TRAIN_LM, "--data", "empty.txt", "--out",
         "r"], needle="data file empty.txt is empty", setup=write("empty.txt", "")),
    Case("e13_trainlm_data_binary", "train-lm --data of binary bytes", [*TRAIN_LM, "--data", "bin.dat", "--out", "r"],
         needle="is not UTF-8 text", setup=write("bin.dat", bytes(range(128, 256)) * 16)),
    Case("e14_png_dir", "eval-puzzle --png pngdir (control: writes and reports pngdir.png)",
         ["eval-puzzle", "sudoku", "--checkpoint", S, "--png", "pngdir", "--json"], 0, check=_png_reported),
    Case("e15_calib_puzzle", "a puzzle checkpoint to calibrate-halt", ["calibrate-halt", "--checkpoint", S,
         "--out", "cal"], needle="is a puzzle checkpoint"),
    Case("e16_calib_same_out", "calibrate-halt --out the checkpoint itself (its halting head would be lost)",
         ["calibrate-halt", "--checkpoint", LM, "--out", LM], needle="--out must differ from --checkpoint", fast=True),
    Case("e17_calib_margin", "calibrate-halt --margin -1", ["calibrate-halt", "--checkpoint", LM, "--out", "cal",
         "--margin", "-1"], needle="margin must be >= 0"),
    Case("e18_init_puzzle", "train-lm --init-from a puzzle checkpoint", [*TRAIN_LM, "--init-from", S, "--out", "r"],
         needle="is a puzzle checkpoint"),
    Case("e19_init_other_net", "train-lm --init-from a checkpoint of another width",
         [*TRAIN_LM, "--init-from", LM, "--set", "model.d_model=48", "--out", "r"], needle="its model.d_model is"),
]

_names = [c.name for c in CASES]
assert len(_names) == len(set(_names)), "duplicate case names"


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
