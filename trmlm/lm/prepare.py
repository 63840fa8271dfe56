"""What an LM run trains on: text files split and tokenized, or a reasoning-text task's held-out problems."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trmlm.errors import TRMError
from trmlm.lm.config import LMConfig
from trmlm.lm.data import TokenData, load_text, split_text
from trmlm.lm.tasks import TextTask
from trmlm.lm.tasks.base import Example
from trmlm.lm.tasks.batches import heldout_rows
from trmlm.lm.tokenizer import CharTokenizer, Tokenizer, load_tokenizer, train_tokenizer


@dataclass
class TaskSetup:
    """A reasoning-text task being trained: its generator and the held-out problems."""

    task: TextTask
    heldout: list[Example]       # validation problems (scored during training)
    test: list[Example]          # test problems (reported figures); both kept out of training


def prepare_task(cfg: LMConfig, task: TextTask, tokenizer: Tokenizer | None = None
                 ) -> tuple[Tokenizer, TokenData, TaskSetup]:
    """A task's char tokenizer (its alphabet) and its held-out problems (task_eval_seed) as the
    held-out split; training windows are generated as needed (TaskBatches)."""
    if cfg.data.files or cfg.data.hub_dataset:
        raise TRMError("give either a task or data files / a hub dataset, not both")
    if uses_step_targets(cfg) and not task.example(np.random.default_rng(0)).step_targets:
        raise TRMError(f"step_targets: task {cfg.data.task} writes no intermediate answers (hops, arith and sudoku-text do)")
    heldout = task.examples(cfg.data.task_eval_problems, cfg.data.task_eval_seed)
    test = task.examples(cfg.data.task_test_problems, cfg.data.task_test_seed)
    task.check_fits(heldout + test, cfg.context)
    tok = tokenizer or CharTokenizer(sorted(set(task.alphabet)))
    rows = heldout_rows(heldout, cfg.context + 1)
    if not rows:
        raise TRMError(f"{len(heldout)} held-out problems do not fill one window of {cfg.context + 1} "
                       "characters; raise data.task_eval_problems")
    val = np.asarray(tok.encode("".join(rows)), dtype=np.int64)
    data = TokenData(train=np.zeros(0, np.int64), val=val, val_chars=len(val), val_row_length=cfg.context + 1)
    return tok, data, TaskSetup(task, heldout, test)


def uses_step_targets(cfg: LMConfig) -> bool:
    """Whether the run trains supervision steps toward intermediate answers (a TRM option; other
    models ignore it, as every TRM-only key)."""
    return cfg.step_targets and cfg.arch == "trm"


def prepare_data(cfg: LMConfig, tokenizer: Tokenizer | None = None) -> tuple[Tokenizer, TokenData]:
    """Load text, split off the last val_fraction, get a tokenizer (given, from
    data.tokenizer_path, or trained), encode both splits.

    A char tokenizer takes its alphabet from the whole text (a held-out character absent from
    the train split would otherwise be unencodable); BPE/sentencepiece train on the train split.
    """
    if uses_step_targets(cfg):
        raise TRMError("step_targets needs a --task whose problems have intermediate answers (hops, arith, sudoku-text)")
    text = load_text(cfg.data)
    train_text, val_text = split_text(text, cfg.data.val_fraction)
    if tokenizer is not None:
        tok = tokenizer
    elif cfg.data.tokenizer_path:
        tok = load_tokenizer(cfg.data.tokenizer_path)
    else:
        tok = train_tokenizer(cfg.data.tokenizer, text if cfg.data.tokenizer == "char" else train_text,
                              cfg.data.vocab_size)
    enc = lambda s: np.asarray(tok.encode(s), dtype=np.int64)  # noqa: E731
    return tok, TokenData(train=enc(train_text), val=enc(val_text), val_chars=len(val_text))
