"""Metric loggers behind one interface; the default does nothing (so the loop has no branches).

A training loop calls `logger.log(step, metrics)` and `logger.close()` and never asks which
logger it has. `make_logger` builds the one `--logger` names: metrics.jsonl is always written
(resume checks and the docs' curves read it); `tensorboard` adds event files under
<out>/tensorboard, `wandb` an offline Weights & Biases run under <out>/wandb (never the network;
`wandb sync <out>/wandb/offline-run-*` uploads it later, from a machine that may).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from trmlm.errors import TRMError

LOGGERS = ("jsonl", "tensorboard", "wandb")
_EXTRA = {"tensorboard": "tensorboard", "wandb": "wandb"}  # --logger -> (module, pyproject extra)


class Logger:
    """Interface and no-op default."""

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


_DROP = object()


def _plain(v: Any) -> Any:
    """A JSON scalar: tensor/numpy scalars -> Python numbers, non-finite floats -> None;
    anything else (lists, dicts, arrays) -> _DROP."""
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if v is None or isinstance(v, (bool, int, float, str)) else _DROP


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numeric metrics (what TensorBoard and W&B plot)."""
    out = {}
    for k, v in metrics.items():
        v = _plain(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


class JsonlLogger(Logger):
    """Appends one JSON object per call to a .jsonl file (step, wall time, metrics).

    The file is opened by path on every call: no handle is held between steps, and every line
    is on disk when `log` returns (a killed run leaves whole lines)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._t0 = time.time()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row: dict[str, Any] = {"step": step, "time": round(time.time() - self._t0, 3)}
        row.update((k, p) for k, p in ((k, _plain(v)) for k, v in metrics.items()) if p is not _DROP)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")


class TensorBoardLogger(Logger):
    """Scalars as TensorBoard event files (torch.utils.tensorboard; the `tensorboard` extra)."""

    def __init__(self, log_dir: str | Path, first_step: int | None = None) -> None:
        require_logger("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        # first_step: a resumed run logs from this step on; TensorBoard hides the events at steps
        # >= first_step that the interrupted run wrote after its last save (no doubled stretch).
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=first_step, flush_secs=30)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        for k, v in _scalars(metrics).items():
            self.writer.add_scalar(k, v, global_step=step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger(Logger):
    """An offline Weights & Biases run (the `wandb` extra); this class never enables online mode."""

    def __init__(self, out_dir: str | Path, name: str, config: dict[str, Any] | None = None) -> None:
        require_logger("wandb")
        # Offline, and no error reports or telemetry: the process must not reach the network.
        os.environ["WANDB_MODE"] = "offline"
        os.environ["WANDB_ERROR_REPORTING"] = "false"
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(mode="offline", silent=True, console="off", disable_git=True)
        self.run = wandb.init(dir=str(out_dir), name=name, config=config or {}, settings=settings)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        scalars = _scalars(metrics)
        if scalars:
            self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class MultiLogger(Logger):
    def __init__(self, *loggers: Logger) -> None:
        self.loggers = loggers

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.log(step, metrics)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


def require_logger(kind: str) -> None:
    """Refuse an unknown --logger or one whose optional package is not installed (one line)."""
    if kind not in LOGGERS:
        raise TRMError(f"--logger must be one of {', '.join(LOGGERS)}, got {kind!r}")
    module = _EXTRA.get(kind)
    if module and importlib.util.find_spec(module) is None:
        raise TRMError(f"--logger {kind} needs the {module} package: pip install 'trmlm[{module}]'")


def make_logger(kind: str, out_dir: str | Path, *, name: str, config: dict[str, Any] | None = None,
                first_step: int | None = None) -> Logger:
    """metrics.jsonl in out_dir, plus the sink `kind` names (see the module docstring)."""
    require_logger(kind)
    out_dir = Path(out_dir)
    jsonl = JsonlLogger(out_dir / "metrics.jsonl")
    if kind == "tensorboard":
        return MultiLogger(jsonl, TensorBoardLogger(out_dir / "tensorboard", first_step=first_step))
    if kind == "wandb":
        return MultiLogger(jsonl, WandbLogger(out_dir, name, config))
    return jsonl
