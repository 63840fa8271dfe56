"""Resumable training state: step directories written atomically, the last K kept, `latest` pointer.

Layout under the run directory:
    train_state/step_00001200/state.safetensors   model, EMA, optimizer, carry, RNG tensors
    train_state/step_00001200/state.json          step, data order, schedules, config, history
    train_state/step_00001200/deepspeed/          DeepSpeed's own checkpoint (DeepSpeed runs only),
                                                  stored as safetensors + JSON trees (never pickles)
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
from safetensors.torch import load_file
from torch import Tensor, nn

from trmlm.checkpoint import (atomic_write_bytes, atomic_write_json, check_tree_file, save_safetensors,
                              umask_mode)
from trmlm.errors import TRMError

STATE_DIR = "train_state"
# Keys that may change between a run and its resumption (budget, logging, hardware).
RESUMABLE_CHANGES = {"train_steps", "max_minutes", "eval_every", "eval_every_minutes", "log_every",
                     "checkpoint_every", "keep_checkpoints", "threads", "device", "eval_size", "eval_batch_size"}


def save_state(run_dir: Path, step: int, tensors: dict[str, Tensor], meta: dict[str, Any],
               keep: int, write_extra: Callable[[Path], None] | None = None) -> Path:
    """Write step_<step>/ into a temp dir, rename it into place, point `latest` at it, prune."""
    root = Path(run_dir) / STATE_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.", suffix=".tmp"))
    os.chmod(tmp, umask_mode(0o777))  # mkdtemp makes it 0700; the step directory keeps this mode
    try:
        save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / "state.safetensors")
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
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise TRMError(f"cannot resume: corrupt training state {path / 'state.json'} ({exc.__class__.__name__})") from None
    try:
        tensors = load_file(str(path / "state.safetensors"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise TRMError(f"cannot resume: corrupt training state {path / 'state.safetensors'}: "
                       f"{str(exc).splitlines()[0]}") from None
    return tensors, meta


def check_same_run(saved: dict[str, Any], current: dict[str, Any], where: Path,
                   defaults: dict[str, Any] | None = None) -> None:
    """Refuse to resume under a different model/data/optimisation config (names the first key).
    A key the saved config lacks (a field added to the code after the run was saved) matches
    when its current value is the field's default in `defaults` (a config of the same shape):
    a new field defaults to the behaviour before it."""
    def walk(a: Any, b: Any, d: Any, prefix: str) -> str | None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if prefix == "train." and k in RESUMABLE_CHANGES:
                    continue
                if k not in a and isinstance(d, dict) and k in d and b.get(k) == d[k]:
                    continue
                diff = walk(a.get(k), b.get(k), d.get(k) if isinstance(d, dict) else None, f"{prefix}{k}.")
                if diff:
                    return diff
            return None
        return None if a == b else f"{prefix.rstrip('.')} is {a!r} in the checkpoint but {b!r} now"

    diff = walk(saved, current, defaults, "")
    if diff:
        raise TRMError(f"cannot resume from {where}: config mismatch: {diff}")


DEEPSPEED_DIR = "deepspeed"


def check_deepspeed_dir(state_dir: Path) -> None:
    """Every file of a saved DeepSpeed state must be a state tree (trmlm.checkpoint.save_tree) or
    DeepSpeed's `latest` tag; anything else (a pickle above all) is refused, naming the file."""
    root = Path(state_dir) / DEEPSPEED_DIR
    if not root.is_dir():
        raise TRMError(f"cannot resume: no DeepSpeed state in {state_dir}")
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise TRMError(f"cannot resume: {path} is a symbolic link; a saved state holds plain files")
        if not path.is_file():
            continue
        if path.name == "latest" and path.parent == root:
            if path.stat().st_size > 256:
                raise TRMError(f"cannot resume: {path} is not a DeepSpeed tag file")
            continue
        try:
            check_tree_file(path)
        except TRMError as exc:
            raise TRMError(f"cannot resume: {exc}") from None


def check_state_shapes(state_file: Path, model: nn.Module,
                       optimizers: list | None = None) -> None:
    """The saved model/EMA (and optimizer) tensors have the shapes of `model`'s (reads the header
    only): a state that does not fit is refused before anything is loaded into the model."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    params: list[list[tuple]] = []
    for opt in optimizers or []:
        params.append([tuple(p.shape) for group in opt.param_groups for p in group["params"]])
    try:
        with safe_open(str(state_file), framework="pt") as fh:
            saved = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise TRMError(f"cannot resume: corrupt training state {state_file}: "
                       f"{str(exc).splitlines()[0]}") from None

    def refuse(key: str, shape: tuple | None, want: tuple | None) -> None:
        owner = "its parameter has" if key.startswith("opt") else "the model expects"
        what = ("is missing" if shape is None else "is not expected" if want is None
                else f"has shape {shape}, {owner} {want}")
        raise TRMError(f"cannot resume: {state_file} does not fit this model: '{key}' {what}")

    for prefix in ("model.", "ema."):
        keys = {k[len(prefix):] for k in saved if k.startswith(prefix)}
        if prefix == "ema." and not keys:
            continue
        for k in sorted(keys | set(own)):
            if own.get(k) != saved.get(prefix + k):
                refuse(prefix + k, saved.get(prefix + k), own.get(k))
    for key, shape in saved.items():
        if not key.startswith("opt") or not shape or not params:
            continue
        head, _, name = key.partition(".")
        pid = name.split(".", 1)[0]
        i = int(head[3:]) if head[3:].isdigit() else -1
        if not (0 <= i < len(params)) or not pid.isdigit() or int(pid) >= len(params[i]):
            refuse(key, shape, None)
        if shape != params[i][int(pid)]:
            refuse(key, shape, params[i][int(pid)])


def check_resumable(run_dir: Path, run_config: dict[str, Any] | None, *, deepspeed: bool | None = None,
                    model: nn.Module | None = None, optimizers: list | None = None,
                    defaults: dict[str, Any] | None = None) -> Path:
    """Cheap up-front check (before any work): a readable latest state saved under the same config
    (when `run_config` is given), by the same kind of stepper (plain or DeepSpeed, when known),
    whose tensors fit `model` (a meta-device copy will do); a DeepSpeed state holds no pickles."""
    path = latest_state_dir(run_dir)
    if path is None:
        raise TRMError(f"cannot resume: no saved training state in {run_dir}")
    try:
        meta = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise TRMError(f"cannot resume: corrupt training state {path / 'state.json'} ({exc.__class__.__name__})") from None
    if not isinstance(meta, dict):
        raise TRMError(f"cannot resume: corrupt training state {path / 'state.json'} (not a JSON object)")
    if run_config is not None:
        check_same_run(meta.get("config", {}), run_config, path, defaults)
    saved_with_ds = bool((meta.get("stepper") or {}).get("deepspeed"))
    if deepspeed is not None and saved_with_ds != deepspeed:
        raise TRMError(f"cannot resume from {path}: it was saved with DeepSpeed; pass the same --deepspeed"
                       if saved_with_ds else
                       f"cannot resume from {path}: it was saved without DeepSpeed; leave out --deepspeed")
    try:
        with safe_open(str(path / "state.safetensors"), framework="pt") as fh:
            fh.keys()
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise TRMError(f"cannot resume: corrupt training state {path / 'state.safetensors'}: "
                       f"{str(exc).splitlines()[0]}") from None
    if model is not None:
        check_state_shapes(path / "state.safetensors", model, None if saved_with_ds else optimizers)
    if saved_with_ds:
        check_deepspeed_dir(path)
    return path


def saved_step(state_dir: Path) -> int:
    """The optimizer step a state directory was saved at."""
    return int(json.loads((Path(state_dir) / "state.json").read_text())["step"])


def truncate_jsonl(path: Path, step: int) -> None:
    """Keep the rows of a metrics .jsonl logged at or before `step` (resuming from that step
    would otherwise log the later ones twice); unreadable lines are dropped."""
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line + "\n")
    atomic_write_bytes(path, "".join(kept).encode())
