"""LM training: deep supervision as Jacobi sweeps (docs/language-model.md), validation, samples, checkpoints."""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from trmlm.errors import TRMError
from trmlm.lm.checkpoint import LoadedLM, save_lm
from trmlm.lm.config import LMConfig, lm_config_defaults
from trmlm.lm.data import TokenData, random_windows
from trmlm.lm.evaluate import evaluate_lm
from trmlm.lm.generate import GenerationConfig, SampleDone, generate
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.model import LanguageModel, TRMLanguageModel
from trmlm.lm.objective import masked_mean
from trmlm.lm.trm_batch import TRMBatches
from trmlm.lm.prepare import TaskSetup, prepare_data, prepare_task, uses_step_targets
from trmlm.lm.tasks import TextTask, get_task
from trmlm.lm.tasks.batches import TaskBatches
from trmlm.lm.tokenizer import Tokenizer, load_tokenizer
from trmlm.logging import Logger
from trmlm.modelcard import provenance
from trmlm.losses import token_cross_entropy
from trmlm.configtools import to_dict
from trmlm.distributed import DeepSpeedStepper, Stepper, init_distributed
from trmlm.optim import EMA, run_progress
from trmlm.train_state import check_same_run, latest_state_dir, load_state, save_state
from trmlm.runtime import resolve_runtime, seed_everything


class Reporter:
    """Progress interface; the default does nothing (the CLI passes a rich implementation)."""

    def start(self, total: int) -> None: ...
    def step(self, step: int, metrics: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...
    def stop(self) -> None: ...


class Trainer(TRMBatches):
    """Holds the optimisation state; `run` is the loop over (config, model, data, logger); the
    TRM's batch is TRMBatches' (trmlm/lm/trm_batch.py)."""

    def __init__(self, cfg: LMConfig, model: LanguageModel, tokenizer: Tokenizer, data: TokenData,
                 logger: Logger | None = None, reporter: Reporter | None = None,
                 out_dir: str | Path | None = None,
                 deepspeed_config: dict[str, Any] | None = None, task: TaskSetup | None = None) -> None:
        t = cfg.train
        self.cfg, self.tokenizer, self.data, self.task = cfg, tokenizer, data, task
        self.batches = (TaskBatches(task.task, tokenizer, cfg.context, task.heldout + task.test,
                                    cfg.data.loss_on)
                        if task is not None else None)
        self.logger, self.reporter = logger or Logger(), reporter or Reporter()
        self.out_dir = Path(out_dir) if out_dir else None
        self.runtime = resolve_runtime(t.device, t.dtype, t.threads)
        # Data parallel / DeepSpeed (trmlm/distributed.py): every process draws the same global
        # batch of windows and trains on its slice; gradients are averaged.
        self.dist = init_distributed(self.runtime.device.type)
        if self.dist.world > 1 and self.runtime.device.type == "cuda":
            self.runtime.device = torch.device("cuda", self.dist.local_rank)
        self.slots = self.dist.slots(t.batch_size)
        self.model = model.to(self.runtime.device)
        self.deepspeed = deepspeed_config is not None
        self.stepper = (DeepSpeedStepper(self.model, t, self.dist, deepspeed_config, self.runtime.device.type)
                        if self.deepspeed else Stepper(self.model, t, self.dist, fused=self.runtime.fused_adam))
        self.params = list(self.model.parameters())
        with self.stepper.gathered(self.params):
            self.ema = EMA(self.model, t.ema_decay) if t.ema_decay > 0 else None
        self.rng = np.random.default_rng(t.seed)
        self.step = 0
        self.tokens_seen = 0           # training tokens drawn (global batch x context per batch)
        self.train_seconds = 0.0       # wall time in training steps (validation excluded)
        self.train_cpu_seconds = 0.0   # process CPU time in training steps
        self.out_of_time = False       # the minutes budget is spent on some rank (_clock_flags)
        self.agreed_spent = 0.0        # the budget clock, mean over ranks (_clock_flags; lr decay)
        self.history: list[dict[str, Any]] = []
        self.init_from: str | None = None  # the checkpoint the weights started from (--init-from)

    # -- one optimizer step ----------------------------------------------------------------
    def _update(self, loss: Tensor) -> None:
        t = self.cfg.train
        if t.lr_decay_frac > 0:  # the budget clock as every rank agreed on it at the last batch
            self.stepper.decay_lr(self._progress())
        self.stepper.step(loss)  # backward, gradient averaging, clipping, AdamW, LR schedule
        if self.ema is not None:
            with self.stepper.gathered(self.params):
                self.ema.update(self.model)
        self.step += 1

    def _spent(self) -> float:
        """Training seconds on the budget clock (`budget_clock`), validation excluded."""
        return self.train_cpu_seconds if self.cfg.budget_clock == "cpu" else self.train_seconds

    def _progress(self) -> float:
        """How far the run is through its steps or time budget, in [0, 1], on the clock every rank
        agreed on at the last batch: what the lr decay and `hold_from` read."""
        t = self.cfg.train
        return run_progress(self.step, t.train_steps, self.agreed_spent, 60 * t.max_minutes)

    def _budget_left(self) -> bool:
        """Steps left and time left. No collective: `out_of_time` is the flag every rank agreed on
        at the last batch boundary (the clocks advance only between batches, so it also holds
        between a batch's N_sup steps)."""
        return self.step < self.cfg.train.train_steps and not self.out_of_time

    def _clock_flags(self, next_timed_s: float) -> bool:
        """One collective per batch: sets `out_of_time` and returns whether a timed validation is
        due, each OR-ed over ranks so that all ranks stop and validate at the same step."""
        t, spent = self.cfg.train, self._spent()
        if t.max_minutes <= 0 and next_timed_s <= 0:
            return False  # nothing timed: no collective (out_of_time stays False)
        flags = [t.max_minutes > 0 and spent >= 60 * t.max_minutes, next_timed_s > 0 and spent >= next_timed_s]
        # agreed_spent, the ranks' mean clock, is what the lr decay reads: one lr on every rank
        self.agreed_spent, (self.out_of_time, timed) = self.dist.agree(spent, flags)
        return timed

    def train_batch(self, batch: Tensor, mask: Tensor | None = None,
                    step_batch: Tensor | None = None) -> list[dict[str, float]]:
        """One batch of windows (B, L + 1), `mask` (B, L) the positions that carry loss (None =
        all). TRM: N_sup supervision steps, each its own optimizer step (updates=per_step) or
        all summed into one (per_batch); transformers: one step. `step_batch` (N_sup, B, L + 1),
        step_targets: the windows step s is trained toward (the same inputs)."""
        inp, tgt = batch[:, :-1], batch[:, 1:]
        cfg, model = self.cfg, self.model
        if not isinstance(model, TRMLanguageModel):
            with self.runtime.autocast():
                ce = token_cross_entropy(model(inp)[0], tgt, cfg.train.loss)
            self._update(masked_mean(ce, mask))
            return [{"loss": float(masked_mean(ce.detach(), mask))}]
        return self._train_trm_batch(inp, tgt, mask, None if step_batch is None else step_batch[:, :, 1:])

    # -- evaluation ----------------------------------------------------------------------------
    def full_weights(self) -> dict[str, Tensor]:
        with self.stepper.gathered(self.params):  # ZeRO-3 shards parameters
            return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def eval_model(self) -> LanguageModel:
        if self.ema is None and not self.deepspeed:
            return self.model.eval()
        from trmlm.lm.model import build_model

        copy = build_model(self.cfg).to(self.runtime.device)
        copy.load_state_dict(self.ema.state_dict() if self.ema is not None else self.full_weights())
        return copy.eval()

    def evaluate(self, sequential: bool = True) -> dict[str, Any]:
        cfg = self.cfg
        out = evaluate_lm(self.eval_model(), cfg, self.data, cfg.parallel_eval_tokens,
                          cfg.train.eval_size if sequential else 0, cfg.train.eval_batch_size)
        self.model.train()
        return out

    def sample_text(self) -> str:
        cfg = self.cfg
        if cfg.sample_tokens <= 0:
            return ""
        if self.task is not None:  # greedy answers to the first held-out problems of each rung
            from trmlm.lm.tasks.score import greedy_batch

            model, lines, seen = self.eval_model(), [], set()
            for ex in self.task.heldout:
                if ex.task in seen:
                    continue
                seen.add(ex.task)
                g = greedy_batch(model, self.tokenizer, [ex.prompt], len(ex.target) + 8, self._policy())
                lines.append(f"{ex.prompt}{g.texts[0].rstrip()}  (want {ex.target.rstrip()})")
            self.model.train()
            return "\n".join(lines)
        gen = GenerationConfig(max_new_tokens=min(cfg.sample_tokens, cfg.context - 8),
                               temperature=0.8, seed=0, halt_threshold=cfg.halt.threshold,
                               min_steps=cfg.halt.min_steps, max_steps=cfg.halt.max_steps)
        prompt = cfg.sample_prompt
        try:
            self.tokenizer.encode(prompt)
        except TRMError:
            prompt = self.tokenizer.decode(self.data.val[:8].tolist())
        done = [e for e in generate(self.eval_model(), self.tokenizer, prompt, gen)
                if isinstance(e, SampleDone)]
        self.model.train()
        return prompt + done[0].text

    def save(self, metrics: dict[str, Any], finished: bool = False) -> Path | None:
        """The EMA/eval weights + meta; `finished` marks the save at the end of training (a run
        whose meta says finished: false was stopped mid-way, e.g. killed after a validation)."""
        if self.out_dir is None:
            return None
        weights = self.eval_model().state_dict()
        self.model.train()
        meta = {"step": self.step, "train_tokens": self.tokens_seen, "train_seconds": round(self.train_seconds, 1),
                "train_cpu_seconds": round(self.train_cpu_seconds, 1),
                "arch": self.cfg.arch, "parameters": self.model.num_parameters(),
                "metrics": metrics, "history": self.history, "provenance": provenance(self.runtime.device),
                "finished": finished}
        if self.init_from:
            meta["init_from"] = self.init_from
        return save_lm(self.out_dir, weights, self.cfg, self.tokenizer, meta)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t = self.cfg.train
        seed_everything(t.seed)
        self.model.train()
        self.reporter.start(t.train_steps)
        next_eval, last_log = (self.step // t.eval_every + 1) * t.eval_every, self.step
        # Timed validations (train.eval_every_minutes): the first step at or after each multiple
        # k * every_s of the budget clock; k counts in integers, a resumed run continues at the next k.
        every_s = t.eval_every_minutes * 60.0
        next_k = math.floor(self._spent() / every_s) + 1 if every_s > 0 else 0
        metrics: dict[str, Any] = {}
        self._clock_flags(0.0)  # a resumed run whose budget is already spent trains no further
        while self._budget_left():
            batch, mask, step_batch = self._draw(t.batch_size)
            t0, c0 = time.perf_counter(), time.process_time()
            logs = self.train_batch(batch, mask, step_batch)
            self.train_seconds += time.perf_counter() - t0
            self.train_cpu_seconds += time.process_time() - c0
            self.tokens_seen += t.batch_size * self.cfg.context
            row = dict(logs[-1], lr=self.stepper.lr(),
                       bpc_train=logs[-1]["loss"] / math.log(2) / self.data.val_chars_per_token,
                       train_seconds=self.train_seconds, train_cpu_seconds=self.train_cpu_seconds)
            self.reporter.step(self.step, row)
            if self.step - last_log >= t.log_every:
                if self.dist.active:  # log the global-batch loss
                    loss = torch.tensor([row["loss"]])
                    self.dist.all_reduce_mean_([loss])
                    row["loss"] = float(loss)
                self.logger.log(self.step, row)
                last_log = self.step
            timed = self._clock_flags(next_k * every_s)
            if timed:  # a step that passed several multiples validates once
                next_k = max(next_k + 1, math.floor(self._spent() / every_s) + 1)
            if (self.step >= next_eval or timed) and self._budget_left():
                if self.step >= next_eval:
                    next_eval = (self.step // t.eval_every + 1) * t.eval_every
                metrics = self._validate(final=False)
        metrics = self._validate(final=True)
        self.reporter.stop()
        return metrics

    def _draw(self, rows: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The global batch (every process draws the same) and this process's slice of it: the
        windows, the loss mask, and with step_targets each supervision step's windows."""
        step_batch = None
        if self.batches is None:
            batch, mask = random_windows(self.data.train, rows, self.cfg.context, self.rng), None
        elif uses_step_targets(self.cfg):
            batch, mask, step_batch = self.batches.draw_steps(self.rng, rows, self.cfg.model.max_sup_steps)
        else:
            batch, mask = self.batches.draw(self.rng, rows)
        device = self.runtime.device
        return (batch[self.slots].to(device), None if mask is None else mask[self.slots].to(device),
                None if step_batch is None else step_batch[:, self.slots].to(device))

    def _validate(self, final: bool) -> dict[str, Any]:
        metrics = self._validate_main(final) if self.dist.is_main else {}
        self.save_resumable()
        return metrics

    # -- resumable state (trmlm/train_state.py) -------------------------------------------------
    def _run_config(self) -> dict[str, Any]:
        return to_dict(self.cfg)

    def save_resumable(self) -> None:
        """Model, EMA, optimizer, LR schedule, data RNG, clocks and history; atomic, last K kept."""
        if self.out_dir is None:
            return
        tensors = {f"model.{k}": v for k, v in self.full_weights().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        opt_tensors, stepper_meta = self.stepper.state_tensors()
        tensors.update(opt_tensors)
        meta = {"step": self.step, "train_tokens": self.tokens_seen, "train_seconds": self.train_seconds,
                "train_cpu_seconds": self.train_cpu_seconds, "history": self.history,
                "rng": self.rng.bit_generator.state, "stepper": stepper_meta, "config": self._run_config()}
        write_extra = None
        if self.deepspeed:  # a collective: every rank writes its shard, then it joins the step dir
            staging = self.out_dir / "train_state" / f".ds_step_{self.step:08d}"
            self.stepper.save_extra(staging)
            self.dist.barrier()
            write_extra = lambda tmp: os.replace(staging / "deepspeed", tmp / "deepspeed")  # noqa: E731
        if self.dist.is_main:
            save_state(self.out_dir, self.step, tensors, meta, self.cfg.train.keep_checkpoints, write_extra)
            if self.deepspeed:
                shutil.rmtree(staging, ignore_errors=True)
        self.dist.barrier()

    def resume(self) -> None:
        """Continue from the latest saved state in out_dir (same config, else a one-line error)."""
        state_dir = latest_state_dir(self.out_dir) if self.out_dir is not None else None
        if state_dir is None:
            raise TRMError(f"cannot resume: no saved training state in {self.out_dir}")
        tensors, meta = load_state(state_dir)
        check_same_run(meta["config"], self._run_config(), state_dir, defaults=lm_config_defaults())
        with self.stepper.gathered(self.params):
            self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if self.ema is not None:
            self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        self.stepper.load_state_tensors({k: v for k, v in tensors.items() if k.startswith("opt")}, meta["stepper"])
        self.stepper.load_extra(state_dir)
        self.rng.bit_generator.state = meta["rng"]
        self.step, self.history = meta["step"], meta["history"]
        self.tokens_seen = meta.get("train_tokens", 0)
        self.train_seconds, self.train_cpu_seconds = meta["train_seconds"], meta["train_cpu_seconds"]
        self.reporter.message(f"resumed from {state_dir} at step {self.step}")

    def _policy(self) -> HaltPolicy:
        h = self.cfg.halt
        return HaltPolicy(max_steps=self.cfg.max_steps, min_steps=h.min_steps, threshold=h.threshold)

    def evaluate_task(self, final: bool) -> dict[str, Any]:
        """Exact answers on the held-out problems: greedy, real cache, the config's halting (and
        per-category token accuracy and steps at the final validation)."""
        from trmlm.lm.tasks.score import score_task

        model = self.eval_model()
        out = score_task(model, self.tokenizer, self.task.task, self.task.heldout, self._policy(),
                         batch=self.cfg.train.eval_batch_size * 4, teacher_forced=final)
        self.model.train()
        flat = {"exact_acc": out["exact_acc"], "answer_steps_mean": out["steps_mean"]}
        flat.update({f"exact_acc/{k}": v["exact_acc"] for k, v in out["per_rung"].items()})
        if final:
            flat["task_report"] = out
        return flat

    def _validate_main(self, final: bool) -> dict[str, Any]:
        metrics = self.evaluate(sequential=self.task is None or final)
        if self.task is not None:
            metrics.update(self.evaluate_task(final))
        metrics.update(step=self.step, train_seconds=round(self.train_seconds, 1),
                       train_cpu_seconds=round(self.train_cpu_seconds, 1), train_tokens=self.tokens_seen)
        scalars = {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}
        self.history.append(scalars)
        self.logger.log(self.step, scalars)
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()
                          if k.startswith(("bpc", "steps_mean", "exact_acc")) and isinstance(v, float))
        self.reporter.message(f"step {self.step} ({self.train_seconds:.0f}s): {shown}")
        sample = self.sample_text()
        if sample:
            self.reporter.message(("final sample:\n" if final else "sample:\n") + sample)
            metrics["sample"] = sample
        self.save(metrics, finished=final)
        return metrics


def build_trainer(cfg: LMConfig, out_dir: str | Path | None = None, logger: Logger | None = None,
                  reporter: Reporter | None = None, resume: bool = False,
                  deepspeed_config: dict[str, Any] | None = None, task: TextTask | None = None,
                  init: LoadedLM | None = None) -> Trainer:
    """Data -> tokenizer -> model (vocab from the tokenizer) -> Trainer, ready to run; with
    `resume`, the run's own tokenizer and its latest saved training state. A reasoning-text task
    (cfg.data.task) is resolved by name here unless given (tasks from the puzzle layer are passed
    in). `init` (checkpoint.load_init): start from its weights and tokenizer, with a fresh optimizer."""
    import dataclasses

    from trmlm.lm.model import build_model

    seed_everything(cfg.train.seed)
    own_tokenizer = load_tokenizer(out_dir) if resume and out_dir else None
    own_tokenizer = own_tokenizer or (init.tokenizer if init is not None else None)
    setup = None
    if cfg.data.task:
        task = task or get_task(cfg.data.task)
        tokenizer, data, setup = prepare_task(cfg, task, own_tokenizer)
    else:
        tokenizer, data = prepare_data(cfg, own_tokenizer)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size))
    if len(data.val) < cfg.context + 1:
        raise TRMError(f"held-out split has {len(data.val)} tokens, fewer than the context + 1 "
                       f"({cfg.context + 1}); give more text or a smaller model.seq_len")
    model = build_model(cfg)
    if init is not None:
        model.load_state_dict(init.model.state_dict())
    trainer = Trainer(cfg, model, tokenizer, data, logger, reporter, out_dir, deepspeed_config,
                      task=setup)
    trainer.init_from = str(init.path) if init is not None else None
    if resume:
        trainer.resume()
    return trainer


def train_from_config(cfg: LMConfig, out_dir: str | Path | None = None, logger: Logger | None = None,
                      reporter: Reporter | None = None, resume: bool = False,
                      deepspeed_config: dict[str, Any] | None = None, task: TextTask | None = None,
                      init: LoadedLM | None = None) -> tuple[Trainer, dict[str, Any]]:
    """build_trainer, then Trainer.run()."""
    trainer = build_trainer(cfg, out_dir, logger, reporter, resume, deepspeed_config, task, init)
    return trainer, trainer.run()
