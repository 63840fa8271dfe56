"""Checkpoint directories: model.safetensors + config.json + meta.json, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from trmlm.errors import TRMError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
META = "meta.json"


@dataclass
class Checkpoint:
    path: Path
    weights: dict[str, Tensor]
    config: dict[str, Any]
    meta: dict[str, Any]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file through a temp file + rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_checkpoint(path: str | Path, weights: dict[str, Tensor], config: dict[str, Any],
                    meta: dict[str, Any], extra: dict[str, bytes] | None = None) -> Path:
    """Write (or update) a checkpoint directory; every file goes through temp file + rename.

    Other files in the directory (a tokenizer, metrics.jsonl, the resume state) are left alone.
    meta.json is written last, so a reader that sees the new step also sees the new weights.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    fd, tmp = tempfile.mkstemp(dir=path, prefix=f".{WEIGHTS}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt"})
        os.replace(tmp, path / WEIGHTS)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for name, data in (extra or {}).items():
        atomic_write_bytes(path / name, data)
    atomic_write_json(path / CONFIG, config)
    atomic_write_json(path / META, meta)
    return path


def read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise TRMError(f"{what} missing: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TRMError(f"corrupt {what} {path}: {exc.msg if hasattr(exc, 'msg') else exc}") from None
    if not isinstance(data, dict):
        raise TRMError(f"corrupt {what} {path}: expected a JSON object")
    return data


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint directory; every problem is a one-line TRMError."""
    path = Path(path)
    if not path.exists():
        raise TRMError(f"checkpoint not found: {path}")
    if not path.is_dir():
        raise TRMError(f"checkpoint must be a directory holding {WEIGHTS}: {path}")
    weights_file = path / WEIGHTS
    if not weights_file.is_file():
        raise TRMError(f"checkpoint {path} has no {WEIGHTS}")
    config = read_json(path / CONFIG, "checkpoint config")
    meta = read_json(path / META, "checkpoint metadata") if (path / META).exists() else {}
    try:
        weights = load_file(str(weights_file), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise TRMError(f"corrupt checkpoint weights {weights_file}: {str(exc).splitlines()[0]}") from None
    return Checkpoint(path=path, weights=weights, config=config, meta=meta)


def load_weights_into(model: torch.nn.Module, weights: dict[str, Tensor], where: Path) -> None:
    """load_state_dict(strict) with a one-line error naming the first mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        name = (missing or unexpected)[0]
        kind = "missing" if missing else "unexpected"
        raise TRMError(f"checkpoint {where} does not match its config: {kind} tensor '{name}'")
    for k, v in weights.items():
        if own[k].shape != v.shape:
            raise TRMError(f"checkpoint {where} does not match its config: '{k}' has shape "
                           f"{tuple(v.shape)}, model expects {tuple(own[k].shape)}")
    model.load_state_dict(weights, strict=True)
