"""LM training: deep supervision as Jacobi sweeps (AR-TRM.md §2.2), validation, samples, checkpoints."""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from trmlm.errors import TRMError
from trmlm.lm.checkpoint import save_lm
from trmlm.lm.config import LMConfig
from trmlm.lm.data import TokenData, load_text, random_windows, split_text
from trmlm.lm.evaluate import evaluate_lm
from trmlm.lm.generate import GenerationConfig, SampleDone, generate
from trmlm.lm.model import LanguageModel, TRMLanguageModel
from trmlm.lm.parallel import final_sweep_states, supervision_sweep
from trmlm.lm.tokenizer import Tokenizer, load_tokenizer, train_tokenizer
from trmlm.logging import Logger
from trmlm.losses import token_cross_entropy
from trmlm.configtools import to_dict
from trmlm.distributed import DeepSpeedStepper, Stepper, init_distributed
from trmlm.optim import EMA
from trmlm.train_state import check_same_run, latest_state_dir, load_state, save_state
from trmlm.runtime import resolve_runtime, seed_everything


class Reporter:
    """Progress interface; the default does nothing (the CLI passes a rich implementation)."""

    def start(self, total: int) -> None: ...
    def step(self, step: int, metrics: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...
    def stop(self) -> None: ...


def prepare_data(cfg: LMConfig, tokenizer: Tokenizer | None = None) -> tuple[Tokenizer, TokenData]:
    """Load text, split off the last val_fraction, get a tokenizer (given, from
    data.tokenizer_path, or trained), encode both splits.

    A char tokenizer takes its alphabet from the whole text (a held-out character absent from
    the train split would otherwise be unencodable); BPE/sentencepiece train on the train split.
    """
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


@dataclass
class StepResult:
    loss: Tensor          # with grad
    ce: Tensor            # (B, L) detached per-token CE
    metrics: dict[str, float]


def halt_loss(cfg: LMConfig, model: TRMLanguageModel, y: Tensor, logits: Tensor, targets: Tensor,
              ce: Tensor, prev: tuple[Tensor, Tensor] | None) -> Tensor:
    """AR-TRM.md §2.3. `correct`: BCE(q(y_s), 1[argmax head(y_s) == t_{i+1}]). `improvement`
    (Ouro): q(y_{s-1}) learns whether step s lowered the token's CE: halt label =
    1 - sigmoid(scale (max(0, CE_{s-1} - CE_s) - margin)) on detached losses; no label at s = 1."""
    if cfg.halt.target == "correct":
        label = (logits.detach().argmax(-1) == targets).float()
        return F.binary_cross_entropy_with_logits(model.halt_logit(y), label)
    if prev is None:
        return y.new_zeros(())
    prev_y, prev_ce = prev
    gain = (prev_ce - ce.detach()).clamp(min=0)
    cont = torch.sigmoid(cfg.halt.improvement_scale * (gain - cfg.halt.improvement_margin))
    return F.binary_cross_entropy_with_logits(model.halt_logit(prev_y), 1.0 - cont)


class Trainer:
    """Holds the optimisation state; `run` is the loop over (config, model, data, logger)."""

    def __init__(self, cfg: LMConfig, model: LanguageModel, tokenizer: Tokenizer, data: TokenData,
                 logger: Logger | None = None, reporter: Reporter | None = None,
                 out_dir: str | Path | None = None,
                 deepspeed_config: dict[str, Any] | None = None) -> None:
        t = cfg.train
        self.cfg, self.tokenizer, self.data = cfg, tokenizer, data
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
        self.train_seconds = 0.0       # wall time in training steps (validation excluded)
        self.train_cpu_seconds = 0.0   # process CPU time in training steps
        self.history: list[dict[str, Any]] = []

    # -- one optimizer step ----------------------------------------------------------------
    def _update(self, loss: Tensor) -> None:
        self.stepper.step(loss)  # backward, gradient averaging, clipping, AdamW, LR warmup
        if self.ema is not None:
            with self.stepper.gathered(self.params):
                self.ema.update(self.model)
        self.step += 1

    def _budget_left(self) -> bool:
        t = self.cfg.train
        if self.step >= t.train_steps:
            return False
        spent = self.train_cpu_seconds if self.cfg.budget_clock == "cpu" else self.train_seconds
        return t.max_minutes <= 0 or spent < 60 * t.max_minutes

    def train_batch(self, batch: Tensor) -> list[dict[str, float]]:
        """One batch of windows (B, L + 1). TRM: up to N_sup supervision steps, each its own
        optimizer step with the carry detached; transformers: one step."""
        inp, tgt = batch[:, :-1], batch[:, 1:]
        cfg, model, logs = self.cfg, self.model, []
        if not isinstance(model, TRMLanguageModel):
            with self.runtime.autocast():
                ce = token_cross_entropy(model(inp)[0], tgt, cfg.train.loss)
            self._update(ce.mean())
            return [{"loss": float(ce.detach().mean())}]
        state = model.initial_state(*inp.shape)
        prev: tuple[Tensor, Tensor] | None = None
        committed = None  # "previous_step": each step commits y^(s-1) (AR-TRM.md §2.2)
        final = cfg.train_cache == "final_sweep" or (cfg.train_cache == "mixed" and self.rng.random() < 0.5)
        if final:
            committed = final_sweep_states(model, model.embed_tokens(inp), cfg.model.max_sup_steps)
        for s in range(cfg.model.max_sup_steps):
            if s > 0 and not self._budget_left():
                break
            with self.runtime.autocast():
                x = model.embed_tokens(inp)
                new = supervision_sweep(model, state, x, commit_grad=cfg.commit_grad,
                                        committed_y=committed)
                logits = model.logits(new.y)
                ce = token_cross_entropy(logits, tgt, cfg.train.loss)  # (B, L)
                q_loss = halt_loss(cfg, model, new.y, logits, tgt, ce, prev)
                loss = ce.mean() + cfg.train.halt_loss_weight * q_loss
            self._update(loss)
            with torch.no_grad():
                halt_p = torch.sigmoid(model.halt_logit(new.y)).mean()
            logs.append({"loss": float(ce.detach().mean()), "q_loss": float(q_loss.detach()), "sup_step": s + 1,
                         "halt_prob": float(halt_p)})
            state = new.detach()
            prev = (state.y, ce.detach())
        return logs

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

    def save(self, metrics: dict[str, Any]) -> Path | None:
        if self.out_dir is None:
            return None
        weights = self.eval_model().state_dict()
        self.model.train()
        meta = {"step": self.step, "train_seconds": round(self.train_seconds, 1),
                "train_cpu_seconds": round(self.train_cpu_seconds, 1),
                "arch": self.cfg.arch, "parameters": self.model.num_parameters(),
                "metrics": metrics, "history": self.history}
        return save_lm(self.out_dir, weights, self.cfg, self.tokenizer, meta)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t = self.cfg.train
        seed_everything(t.seed)
        self.model.train()
        self.reporter.start(t.train_steps)
        next_eval, last_log = (self.step // t.eval_every + 1) * t.eval_every, self.step
        metrics: dict[str, Any] = {}
        while self._budget_left():
            batch = random_windows(self.data.train, t.batch_size, self.cfg.context, self.rng)[self.slots]
            t0, c0 = time.perf_counter(), time.process_time()
            logs = self.train_batch(batch.to(self.runtime.device))
            self.train_seconds += time.perf_counter() - t0
            self.train_cpu_seconds += time.process_time() - c0
            row = dict(logs[-1], bpc_train=logs[-1]["loss"] / math.log(2) / self.data.val_chars_per_token,
                       train_seconds=self.train_seconds, train_cpu_seconds=self.train_cpu_seconds)
            self.reporter.step(self.step, row)
            if self.step - last_log >= t.log_every:
                if self.dist.active:  # log the global-batch loss
                    loss = torch.tensor([row["loss"]])
                    self.dist.all_reduce_mean_([loss])
                    row["loss"] = float(loss)
                self.logger.log(self.step, row)
                last_log = self.step
            if self.step >= next_eval and self._budget_left():
                next_eval += t.eval_every
                metrics = self._validate(final=False)
        metrics = self._validate(final=True)
        self.reporter.stop()
        return metrics

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
        meta = {"step": self.step, "train_seconds": self.train_seconds,
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
        check_same_run(meta["config"], self._run_config(), state_dir)
        with self.stepper.gathered(self.params):
            self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if self.ema is not None:
            self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        self.stepper.load_state_tensors({k: v for k, v in tensors.items() if k.startswith("opt")}, meta["stepper"])
        self.stepper.load_extra(state_dir)
        self.rng.bit_generator.state = meta["rng"]
        self.step, self.history = meta["step"], meta["history"]
        self.train_seconds, self.train_cpu_seconds = meta["train_seconds"], meta["train_cpu_seconds"]
        self.reporter.message(f"resumed from {state_dir} at step {self.step}")

    def _validate_main(self, final: bool) -> dict[str, Any]:
        metrics = self.evaluate(sequential=True)
        metrics.update(step=self.step, train_seconds=round(self.train_seconds, 1),
                       train_cpu_seconds=round(self.train_cpu_seconds, 1))
        self.history.append({k: v for k, v in metrics.items() if not isinstance(v, list)})
        self.logger.log(self.step, {k: v for k, v in metrics.items() if not isinstance(v, list)})
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()
                          if k.startswith(("bpc", "steps_mean")) and isinstance(v, float))
        self.reporter.message(f"step {self.step} ({self.train_seconds:.0f}s): {shown}")
        sample = self.sample_text()
        if sample:
            self.reporter.message(("final sample:\n" if final else "sample:\n") + sample)
            metrics["sample"] = sample
        self.save(metrics)
        return metrics


def train_from_config(cfg: LMConfig, out_dir: str | Path | None = None, logger: Logger | None = None,
                      reporter: Reporter | None = None, resume: bool = False,
                      deepspeed_config: dict[str, Any] | None = None) -> tuple[Trainer, dict[str, Any]]:
    """Data -> tokenizer -> model (vocab from the tokenizer) -> Trainer.run(); with `resume`, the
    run's own tokenizer and its latest saved training state."""
    import dataclasses

    from trmlm.lm.model import build_model

    seed_everything(cfg.train.seed)
    tokenizer, data = prepare_data(cfg, load_tokenizer(out_dir) if resume and out_dir else None)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size))
    if len(data.val) < cfg.context + 1:
        raise TRMError(f"held-out split has {len(data.val)} tokens, fewer than the context + 1 "
                       f"({cfg.context + 1}); give more text or a smaller model.seq_len")
    trainer = Trainer(cfg, build_model(cfg), tokenizer, data, logger, reporter, out_dir, deepspeed_config)
    if resume:
        trainer.resume()
    return trainer, trainer.run()
