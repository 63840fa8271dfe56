"""The workspace behind tests/test_bad_inputs.py: the fixture runs every row reads, the `Case` row
type, and the setup/check helpers that rows use to plant files and assert what survived."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
DEEPSPEED_JSON = REPO / "configs" / "deepspeed" / "zero2.json"
EASY_SUDOKU = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
MAZE_6 = "######\n#S   #\n#### #\n#    #\n# ####\n#   G#\n"
RUNS = ("sudoku", "maze", "arc", "lm", "ds")  # the tiny fixture runs, by name in the workspace
S, M, A, LM, DS = "@sudoku", "@maze", "@arc", "@lm", "@ds"  # a row's argument naming a fixture run
TRAIN_LM = ["train-lm", "--preset", "lm-tiny", "--quiet", "--set", "train.threads=1"]


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


# -- a row of the table, and the setup/check helpers rows use ----------------------------------

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


def _no_out(rel: str) -> Check:
    def check(ws: Workspace, d: Path, proc) -> None:
        assert not (d / rel).exists(), f"{rel} was written by a refused command"
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
