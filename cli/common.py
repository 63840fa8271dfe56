"""Shared CLI plumbing: one-line errors with exit code 2, consoles, preset lookup."""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from trmlm.distributed import launch_local, load_deepspeed_config
from trmlm.errors import TRMError
from trmlm.logging import Logger, make_logger
from trmlm.train_state import STATE_DIR, check_resumable, latest_state_dir

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

RUN_MARKER = ".trm-run"  # written when a training run starts: this directory is a trm run


def check_output_dir(path: Path, option: str = "--out") -> Path:
    """Before any work: `path` is a directory this process can write into (created if missing).
    A file, a path under a file, or a read-only place is a one-line error, not a late traceback."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TRMError(f"{option} {path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".trm-write-check."):
            pass
    except OSError as exc:
        raise TRMError(f"{option} {path}: cannot write there ({exc.strerror or type(exc).__name__})") from None
    return path


def check_output_file(path: Path, option: str, suffix: str = "") -> Path:
    """Before any work: the file `path` (with `suffix` appended when it lacks it) can be written;
    returns the path that will be written, so the command reports the real one."""
    path = Path(path)
    if suffix and path.suffix.lower() != suffix:
        path = path.with_name(path.name + suffix)
    if path.is_dir():
        raise TRMError(f"{option} {path} is a directory; give a file name")
    check_output_dir(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise TRMError(f"{option} {path}: cannot write there (read-only file)")
    return path


def guard_out_dir(out_path: Path, resume: bool, overwrite: bool) -> None:
    """Never lose a saved run by accident: a used --out needs --resume or --overwrite, and a
    non-empty directory that is not a trm run (no RUN_MARKER) is left alone unless --overwrite.
    Checked before any work; then stale temp files of a killed save are removed, a resumed
    run's metrics.jsonl is cut back to the saved step, and the marker is written."""
    from trmlm.checkpoint import atomic_write_bytes, remove_stale_temp_files
    from trmlm.train_state import saved_step, truncate_jsonl

    if resume and overwrite:
        raise TRMError("--resume and --overwrite exclude each other")
    if out_path.exists() and not out_path.is_dir():
        raise TRMError(f"--out {out_path} is a file, not a directory")
    main_rank = os.environ.get("RANK", "0") == "0"
    used = (out_path / "model.safetensors").exists() or (out_path / STATE_DIR).exists()
    marked = (out_path / RUN_MARKER).is_file()
    if resume:
        state = latest_state_dir(out_path) if (out_path / STATE_DIR / "latest").is_file() else None
        if state is None:
            raise TRMError(f"cannot resume: no saved training state in {out_path}")
        check_output_dir(out_path)
        if main_rank:
            remove_stale_temp_files(out_path)
            try:
                truncate_jsonl(out_path / "metrics.jsonl", saved_step(state))
            except (OSError, ValueError, KeyError, TypeError):
                pass  # an unreadable state.json is refused by the resume check itself
            if not marked:  # a run from before the marker existed
                atomic_write_bytes(out_path / RUN_MARKER, b"trm run directory\n")
        return
    if used and not overwrite:
        raise TRMError(f"{out_path} already holds a run; pass --resume to continue it or --overwrite to replace it")
    if (main_rank and not used and not marked and not overwrite and out_path.is_dir()
            and any(out_path.iterdir())):
        raise TRMError(f"{out_path} is not empty and is not a trm run directory; choose a new or empty "
                       "--out, or pass --overwrite to write into it anyway")
    check_output_dir(out_path)
    if not main_rank:
        return
    if used or marked:  # what a replaced (or never-saved) run of ours left behind
        shutil.rmtree(out_path / STATE_DIR, ignore_errors=True)
        for name in ("metrics.jsonl", "curve.json"):
            (out_path / name).unlink(missing_ok=True)
        for name in ("tensorboard", "wandb"):  # --logger sinks of the replaced run
            shutil.rmtree(out_path / name, ignore_errors=True)
    remove_stale_temp_files(out_path)
    atomic_write_bytes(out_path / RUN_MARKER, b"trm run directory\n")


def prepare_run_dir(out_path: Path, resume: bool, overwrite: bool, run_config: dict[str, Any] | None,
                    deepspeed: bool, build_model: Callable[[], Any] | None = None,
                    train_cfg: Any = None, defaults: dict[str, Any] | None = None) -> None:
    """guard_out_dir, preceded on --resume by the whole up-front check of the saved state (same
    config, same stepper kind, tensors that fit the model `build_model` makes, built on the meta
    device so nothing is allocated, no pickles), so a bad state is refused before any work."""
    if resume and not overwrite:
        model = optimizers = None
        if build_model is not None:
            import torch

            from trmlm.optim import build_optimizers

            with torch.device("meta"):
                model = build_model()
            optimizers = build_optimizers(model, train_cfg) if train_cfg is not None else None
        check_resumable(out_path, run_config, deepspeed=deepspeed, model=model, optimizers=optimizers,
                        defaults=defaults)
    guard_out_dir(out_path, resume, overwrite)


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
# Options shared by the commands that run a model (solve, eval-puzzle, generate, eval-lm, bench).
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda (auto: CUDA when present).")]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="CPU threads (0 = torch default).")]


def metrics_table(title: str, metrics: dict[str, Any]) -> Table:
    """The metric/value table eval-puzzle and eval-lm print (lists joined, floats to 4 places)."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, ", ".join(f"{x:.3f}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, list)
                      else f"{v:.4f}" if isinstance(v, float) else str(v))
    return table


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


def parallel_setup(nproc: int, deepspeed: Path | None, train_cfg: Any,
                   prepare: Callable[[], None] | None = None) -> dict | None:
    """--nproc N re-runs this command in N worker processes (and exits with their code); in a
    worker (or with N = 1) returns the DeepSpeed config to train with, if any.

    Everything checkable is checked first, once, in this process: --nproc, the DeepSpeed JSON,
    the batch split, then `prepare()` (the --out checks), so bad input is one error line, not
    one per worker."""
    if nproc < 1:
        raise TRMError("--nproc must be >= 1")
    launching = nproc > 1 and "WORLD_SIZE" not in os.environ
    world = nproc if launching else int(os.environ.get("WORLD_SIZE", "1"))
    if train_cfg.batch_size % world:
        raise TRMError(f"train.batch_size {train_cfg.batch_size} is not divisible by {world} processes")
    ds_config = load_deepspeed_config(deepspeed, train_cfg, world) if deepspeed else None
    if prepare is not None:
        prepare()
    if launching:
        raise typer.Exit(launch_local(nproc, ["-m", "trmlm.cli.main", *strip_option(sys.argv[1:], "--nproc")]))
    return ds_config
