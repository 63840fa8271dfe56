"""Checkpoint directories: model.safetensors + config.json + meta.json, written atomically.

Everything here is data, never code: weights are safetensors, metadata is JSON, and nested state
(DeepSpeed's checkpoints) is a safetensors file whose header holds a JSON tree (`save_tree`);
nothing is ever unpickled.
"""

from __future__ import annotations

import collections
import enum
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from trmlm import modelcard
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


def umask_mode(mode: int = 0o666) -> int:
    """`mode` as the process umask lets a new file have it (what open() would give)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def _temp_file(directory: Path, name: str) -> tuple[int, str]:
    """mkstemp in `directory` (its files are always 0600), then the umask's usual mode: others on a
    shared filesystem can read a released checkpoint exactly when they could read any new file."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    os.fchmod(fd, umask_mode())
    return fd, tmp


def save_safetensors(tensors: dict[str, Tensor], path: str | Path,
                     metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file, then the umask's mode (save_file always creates files 0600)."""
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, umask_mode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file through a temp file + rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file(path.parent, path.name)
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
    meta.json is written after the weights, so a reader that sees the new step also sees the new
    weights; then the README.md model card generated from config and meta (trmlm/modelcard.py).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    fd, tmp = _temp_file(path, WEIGHTS)
    os.close(fd)
    try:
        save_safetensors(tensors, tmp, metadata={"format": "pt"})
        os.replace(tmp, path / WEIGHTS)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for name, data in (extra or {}).items():
        atomic_write_bytes(path / name, data)
    atomic_write_json(path / CONFIG, config)
    atomic_write_json(path / META, meta)
    modelcard.write(path, config, meta, sum(t.numel() for t in tensors.values()))
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


def checkpoint_kind(config: dict[str, Any]) -> str | None:
    """'puzzle' (train-puzzle writes a top-level 'task'), 'lm' (train-lm writes 'arch' and
    'halt'), or None: lets each command say which command a wrong-kind checkpoint is for."""
    if "task" in config:
        return "puzzle"
    if "arch" in config or "halt" in config:
        return "lm"
    return None


def refuse_wrong_kind(ckpt: Checkpoint, want: str) -> None:
    """A one-line error naming the commands for the checkpoint's actual kind."""
    kind = checkpoint_kind(ckpt.config)
    if kind is None or kind == want:
        return
    if kind == "lm":
        raise TRMError(f"{ckpt.path} is a language-model checkpoint (trm train-lm); "
                       "use trm generate or trm eval-lm")
    raise TRMError(f"{ckpt.path} is a puzzle checkpoint (trm train-puzzle, task "
                   f"{ckpt.config.get('task')!r}); use trm solve or trm eval-puzzle")


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


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Remove the `.NAME.*.tmp` files and directories a killed writer leaves (every write above
    goes through one), in a run directory and its train_state/; returns what was removed."""
    removed = []
    for directory in (Path(run_dir), Path(run_dir) / "train_state"):
        if not directory.is_dir():
            continue
        for stale in [*directory.glob(".*.tmp"), *directory.glob(".ds_step_*")]:
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


# -- nested state as data: safetensors + a JSON tree ----------------------------------------------

TREE_FORMAT = "trmlm-tree-1"
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip container; a pickle protocol >= 2


def save_tree(path: str | Path, tree: Any, classes: Mapping[str, type] = {}) -> None:
    """Write a nested state (dicts, lists, tuples, sets, numbers, strings, tensors, torch.Size,
    dtypes, devices, and instances of the named `classes` / enums) as ONE safetensors file: the
    tensors as tensors, the structure as JSON in the header. Any other type is an error here, at
    save time, so that loading never needs to construct anything not listed."""
    names = {cls: name for name, cls in classes.items()}
    tensors: dict[str, Tensor] = {}

    def enc(o: Any, where: str) -> Any:
        if o is None or type(o) in (bool, int, float, str):
            return o
        if isinstance(o, Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = o.detach().to("cpu").contiguous().clone()  # safetensors refuses shared storage
            return {"tensor": key}
        if isinstance(o, torch.Size):
            return {"size": list(o)}
        if isinstance(o, torch.dtype):
            return {"dtype": str(o).removeprefix("torch.")}
        if isinstance(o, torch.device):
            return {"device": str(o)}
        if isinstance(o, enum.Enum) and type(o) in names:
            return {"enum": names[type(o)], "value": enc(o.value, where)}
        if type(o) in (dict, collections.OrderedDict):
            kind = "odict" if isinstance(o, collections.OrderedDict) else "dict"
            return {kind: [[enc(k, where), enc(v, f"{where}.{k}")] for k, v in o.items()]}
        if type(o) is list:
            return [enc(v, where) for v in o]
        if type(o) in (tuple, set, frozenset):
            items = sorted(o, key=repr) if not isinstance(o, tuple) else o
            return {"tuple" if isinstance(o, tuple) else "set": [enc(v, where) for v in items]}
        if type(o) in names:
            return {"object": names[type(o)], "state": enc(dict(vars(o)), where)}
        raise TypeError(f"cannot save {type(o).__module__}.{type(o).__qualname__} at {where} "
                        f"as data (not an allowed type)")

    body = json.dumps(enc(tree, "state"), allow_nan=True)
    save_safetensors(tensors, path, metadata={"format": "pt", "trmlm": TREE_FORMAT, "tree": body})


def _open_tree_file(path: Path) -> tuple[Any, dict[str, str]]:
    """safe_open + header check; a one-line TRMError naming the file for anything else."""
    from safetensors import safe_open

    try:
        fh = safe_open(str(path), framework="pt", device="cpu")
        meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        try:
            with open(path, "rb") as raw:
                head = raw.read(4)
        except OSError:
            head = b""
        if head.startswith(_PICKLE_MAGIC):
            raise TRMError(f"{path} is a pickle (torch.save format); a run directory is data, "
                           "never code, so it is not loaded") from None
        raise TRMError(f"{path} is not a readable state file: {str(exc).splitlines()[0]}") from None
    if meta.get("trmlm") != TREE_FORMAT or "tree" not in meta:
        raise TRMError(f"{path} is a safetensors file but not a trmlm state tree")
    return fh, meta


def check_tree_file(path: str | Path) -> None:
    """Cheap up-front check: the file is a state tree (header only; nothing is loaded)."""
    _open_tree_file(Path(path))


def load_tree(path: str | Path, classes: Mapping[str, type] = {}) -> Any:
    """Read what save_tree wrote; only the named `classes` can appear (built without calling
    their constructors: `__new__` + the saved attribute values). Nothing is unpickled."""
    path = Path(path)
    fh, meta = _open_tree_file(path)
    keys = set(fh.keys())

    def dec(n: Any) -> Any:
        if n is None or isinstance(n, (bool, int, float, str)):
            return n
        if isinstance(n, list):
            return [dec(v) for v in n]
        if not isinstance(n, dict) or not n:
            raise ValueError(f"unexpected node {str(n)[:40]!r}")
        tag = next(iter(n))
        v = n[tag]
        if tag == "tensor":
            if v not in keys:
                raise ValueError(f"missing tensor {v!r}")
            return fh.get_tensor(v)
        if tag in ("dict", "odict"):
            items = [(dec(k), dec(x)) for k, x in v]
            return collections.OrderedDict(items) if tag == "odict" else dict(items)
        if tag == "tuple":
            return tuple(dec(x) for x in v)
        if tag == "set":
            return {dec(x) for x in v}
        if tag == "size":
            return torch.Size([int(x) for x in v])
        if tag == "dtype":
            dtype = getattr(torch, str(v), None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"unknown dtype {v!r}")
            return dtype
        if tag == "device":
            return torch.device(str(v))
        if tag in ("enum", "object"):
            cls = classes.get(v)
            if cls is None:
                raise ValueError(f"type {v!r} is not allowed")
            if tag == "enum":
                return cls(dec(n["value"]))
            obj = cls.__new__(cls)
            state = dec(n["state"])
            if not isinstance(state, dict):
                raise ValueError(f"bad state for {v!r}")
            obj.__dict__.update(state)
            return obj
        raise ValueError(f"unknown node type {tag!r}")

    try:
        return dec(json.loads(meta["tree"]))
    except (ValueError, TypeError, KeyError, RecursionError, StopIteration) as exc:
        raise TRMError(f"{path} holds a corrupt state tree: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
