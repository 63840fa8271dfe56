"""Resumable training state: step directories written atomically, the last K kept, `latest` pointer.

Layout under the run directory:
    train_state/step_00001200/state.safetensors   model, EMA, optimizer, carry, RNG tensors
    train_state/step_00001200/state.json          step, data order, schedules, config, history
    train_state/step_00001200/deepspeed/          DeepSpeed's own checkpoint (DeepSpeed runs only)
    train_state/latest                            name of the newest complete step directory
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from trmlm.checkpoint import atomic_write_bytes, atomic_write_json
from trmlm.errors import TRMError

STATE_DIR = "train_state"
# Keys that may change between a run and its resumption (budget, logging, hardware).
RESUMABLE_CHANGES = {"train_steps", "max_minutes", "eval_every", "log_every", "checkpoint_every",
                     "keep_checkpoints", "threads", "device", "eval_size", "eval_batch_size"}


def save_state(run_dir: Path, step: int, tensors: dict[str, Tensor], meta: dict[str, Any],
               keep: int, write_extra: Callable[[Path], None] | None = None) -> Path:
    """Write step_<step>/ into a temp dir, rename it into place, point `latest` at it, prune."""
    root = Path(run_dir) / STATE_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.", suffix=".tmp"))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
        atomic_write_json(tmp / "state.json", meta)
        if write_extra is not None:
            write_extra(tmp)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(root / "latest", (name + "\n").encode())
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step_*.tmp"):  # left by a killed writer
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_state_dir(run_dir: Path) -> Path | None:
    root = Path(run_dir) / STATE_DIR
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not path.is_dir():
        raise TRMError(f"cannot resume: {pointer} names {path.name}, which is missing")
    return path


def load_state(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    try:
        meta = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TRMError(f"cannot resume: corrupt training state {path / 'state.json'} ({exc.__class__.__name__})") from None
    try:
        tensors = load_file(str(path / "state.safetensors"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise TRMError(f"cannot resume: corrupt training state {path / 'state.safetensors'}: "
                       f"{str(exc).splitlines()[0]}") from None
    return tensors, meta


def check_same_run(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Refuse to resume under a different model/data/optimisation config (names the first key)."""
    def walk(a: Any, b: Any, prefix: str) -> str | None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if prefix == "train." and k in RESUMABLE_CHANGES:
                    continue
                diff = walk(a.get(k), b.get(k), f"{prefix}{k}.")
                if diff:
                    return diff
            return None
        return None if a == b else f"{prefix.rstrip('.')} is {a!r} in the checkpoint but {b!r} now"

    diff = walk(saved, current, "")
    if diff:
        raise TRMError(f"cannot resume from {where}: config mismatch: {diff}")


def check_resumable(run_dir: Path, run_config: dict[str, Any]) -> Path:
    """Cheap up-front check (before any work): a readable latest state saved under the same config."""
    path = latest_state_dir(run_dir)
    if path is None:
        raise TRMError(f"cannot resume: no saved training state in {run_dir}")
    try:
        meta = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TRMError(f"cannot resume: corrupt training state {path / 'state.json'} ({exc.__class__.__name__})") from None
    check_same_run(meta.get("config", {}), run_config, path)
    try:
        with safe_open(str(path / "state.safetensors"), framework="pt") as fh:
            fh.keys()
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise TRMError(f"cannot resume: corrupt training state {path / 'state.safetensors'}: "
                       f"{str(exc).splitlines()[0]}") from None
    return path
