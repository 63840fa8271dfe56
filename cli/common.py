"""Shared CLI plumbing: one-line errors with exit code 2, consoles, preset lookup."""

from __future__ import annotations

import functools
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer
from rich.console import Console

from trmlm.distributed import launch_local, load_deepspeed_config
from trmlm.errors import TRMError
from trmlm.logging import Logger, make_logger
from trmlm.train_state import STATE_DIR, latest_state_dir

F = TypeVar("F", bound=Callable)

out = Console(highlight=False)              # results (stdout)
err = Console(stderr=True, highlight=False)  # progress, stats, errors (stderr)


def fail(message: str) -> None:
    """Print `error: message` on one line to stderr and exit 2."""
    first = str(message).strip().splitlines()[0] if str(message).strip() else "unknown error"
    print(f"error: {first}", file=sys.stderr)
    raise typer.Exit(code=2)


def user_errors(fn: F) -> F:
    """Turn TRMError (bad input) into a one-line message and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TRMError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def configs_dir() -> Path:
    """The presets: trmlm/configs inside an installed wheel, else configs/ beside the packages
    (a repository checkout or an editable install)."""
    import trmlm

    package = Path(trmlm.__file__).resolve().parent
    for candidate in (package / "configs", package.parent / "configs"):
        if candidate.is_dir():
            return candidate
    raise TRMError(f"no presets found (looked for {package / 'configs'} and {package.parent / 'configs'})")

def guard_out_dir(out_path: Path, resume: bool, overwrite: bool) -> None:
    """Never lose a saved run by accident: a used --out needs --resume or --overwrite."""
    if resume and overwrite:
        raise TRMError("--resume and --overwrite exclude each other")
    used = (out_path / "model.safetensors").exists() or (out_path / STATE_DIR).exists()
    if resume:
        if not (out_path / STATE_DIR / "latest").is_file():
            raise TRMError(f"cannot resume: no saved training state in {out_path}")
        return
    if used and not overwrite:
        raise TRMError(f"{out_path} already holds a run; pass --resume to continue it or --overwrite to replace it")
    if used and os.environ.get("RANK", "0") == "0":
        shutil.rmtree(out_path / STATE_DIR, ignore_errors=True)
        for name in ("metrics.jsonl", "curve.json"):
            (out_path / name).unlink(missing_ok=True)
        for name in ("tensorboard", "wandb"):  # --logger sinks of the replaced run
            shutil.rmtree(out_path / name, ignore_errors=True)


def strip_option(argv: list[str], option: str) -> list[str]:
    """argv without `option VALUE` / `option=VALUE` (to re-launch a command per process)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


# Options shared by the training commands (train-puzzle, train-lm).
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the latest saved state in --out.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Start afresh even if --out holds a run.")]
DeepSpeedOpt = Annotated[Optional[Path], typer.Option(
    "--deepspeed", help="DeepSpeed JSON (configs/deepspeed/*.json): train through deepspeed.initialize.")]
NprocOpt = Annotated[int, typer.Option("--nproc", help="Data-parallel processes on this machine (gloo on CPU, NCCL on GPU).")]
LoggerOpt = Annotated[str, typer.Option(
    "--logger", help="jsonl (metrics.jsonl only), tensorboard (+ OUT/tensorboard) or wandb (+ an offline run in OUT/wandb).")]


def make_run_logger(kind: str, out_path: Path, resume: bool, name: str, config: dict) -> Logger:
    """The --logger sink on the main rank (metrics.jsonl + tensorboard/wandb), nothing on the others."""
    if os.environ.get("RANK", "0") != "0":
        return Logger()
    state = latest_state_dir(out_path) if resume else None
    # the saved state is taken after everything logged at its step: a resume logs from step + 1
    step = int(state.name.split("_")[1]) + 1 if state is not None else None
    return make_logger(kind, out_path, name=name, config=config, first_step=step)


def parallel_setup(nproc: int, deepspeed: Path | None, train_cfg: Any) -> dict | None:
    """--nproc N re-runs this command in N worker processes (and exits with their code); in a
    worker (or with N = 1) returns the DeepSpeed config to train with, if any."""
    if nproc < 1:
        raise TRMError("--nproc must be >= 1")
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        raise typer.Exit(launch_local(nproc, ["-m", "trmlm.cli.main", *strip_option(sys.argv[1:], "--nproc")]))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return load_deepspeed_config(deepspeed, train_cfg, world) if deepspeed else None
