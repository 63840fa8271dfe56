"""LM text data: local files or a hub id through `datasets`, the embedded corpus, splits and batches."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from trmlm.errors import TRMError
from trmlm.lm.config import DataConfig

DEFAULT_CORPUS = "tinyshakespeare.txt.gz"  # public domain (Karpathy's char-rnn tiny Shakespeare)


def default_corpus() -> str:
    """The embedded tiny-Shakespeare text (1.1 MB), so `trm train-lm` works offline."""
    with resources.files("trmlm").joinpath("assets", DEFAULT_CORPUS).open("rb") as fh:
        return gzip.decompress(fh.read()).decode("utf-8")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or \
        os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", "")


def load_text(cfg: DataConfig) -> str:
    """All text as one string: local files (text: whole file; json/jsonl: `text_field` of each
    record, joined by newlines), else a hub dataset, else the embedded corpus."""
    if cfg.files and cfg.hub_dataset:
        raise TRMError("give either data files or a hub dataset, not both")
    if not cfg.files and not cfg.hub_dataset:
        return default_corpus()
    import datasets

    datasets.disable_progress_bars()
    if cfg.files:
        parts = []
        for name in cfg.files:
            path = Path(name)
            if not path.is_file():
                raise TRMError(f"data file not found: {path}")
            is_json = path.suffix in (".json", ".jsonl")
            try:
                if is_json:
                    ds = datasets.load_dataset("json", data_files=str(path), split="train")
                else:
                    ds = datasets.load_dataset("text", data_files=str(path), split="train",
                                               sample_by="document")
            except Exception as exc:  # datasets raises many types for malformed files
                raise TRMError(f"cannot read {path}: {str(exc).splitlines()[0][:160]}") from None
            parts.append(_column(ds, cfg.text_field if is_json else "text", str(path)))
        text = "\n".join(parts)
    else:
        if _offline():
            raise TRMError(f"hub dataset {cfg.hub_dataset!r} needs the internet but HF offline mode "
                           "is set; pass local files with --data")
        try:
            ds = datasets.load_dataset(cfg.hub_dataset, split="train")
        except Exception as exc:
            raise TRMError(f"cannot load hub dataset {cfg.hub_dataset!r} (offline?): "
                           f"{str(exc).splitlines()[0][:160]}") from None
        text = _column(ds, cfg.text_field, cfg.hub_dataset)
    if not text.strip():
        raise TRMError("the training text is empty")
    return text


def _column(ds, field: str, where: str) -> str:
    if field not in ds.column_names:
        raise TRMError(f"{where} has no '{field}' column (columns: {', '.join(ds.column_names)})")
    return "\n".join(str(t) for t in ds[field])


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """Held-out split = the last `val_fraction` of the text (no shuffling: no leakage by overlap)."""
    cut = int(len(text) * (1.0 - val_fraction))
    return text[:cut], text[cut:]


@dataclass
class TokenData:
    train: np.ndarray   # (N,) int64 token ids
    val: np.ndarray
    val_chars: int      # characters of the held-out text (for bits per character)
    # > 0: `val` is independent rows of this many tokens back to back (a task's held-out
    # problems packed from line starts, as in training), and the windows are those rows.
    val_row_length: int = 0

    def __post_init__(self) -> None:
        if len(self.val) < 2:
            raise TRMError("held-out split too small (fewer than 2 tokens)")

    @property
    def val_chars_per_token(self) -> float:
        return self.val_chars / len(self.val)


def random_windows(ids: np.ndarray, batch: int, length: int, rng: np.random.Generator) -> Tensor:
    """`batch` random windows of `length` + 1 tokens (inputs and next-token targets) (B, L + 1)."""
    if len(ids) < length + 1:
        raise TRMError(f"text of {len(ids)} tokens is shorter than the context + 1 ({length + 1})")
    starts = rng.integers(0, len(ids) - length, size=batch)
    return torch.from_numpy(np.stack([ids[s:s + length + 1] for s in starts]).astype(np.int64))


def eval_windows(ids: np.ndarray, length: int, max_tokens: int, row_length: int = 0) -> Tensor:
    """Consecutive non-overlapping windows (W, length + 1) from the start of the held-out ids,
    covering at most `max_tokens` predicted tokens; the same windows for every estimate. With
    `row_length` (= length + 1) the ids are independent rows and each row is a window."""
    if row_length:
        rows = ids.reshape(-1, row_length)[:max(1, max_tokens // (row_length - 1))]
        return torch.from_numpy(rows.astype(np.int64))
    length = min(length, len(ids) - 1)
    count = max(1, min(max_tokens // length, (len(ids) - 1) // length))
    rows = [ids[i * length:i * length + length + 1] for i in range(count)]
    return torch.from_numpy(np.stack(rows).astype(np.int64))
