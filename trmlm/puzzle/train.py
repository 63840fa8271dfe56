"""The puzzle training loop: persistent ACT carry, one supervision step per optimizer step, EMA, eval.

Runs single-process, data parallel (gloo on CPU, NCCL on GPU) or under DeepSpeed, and resumes
from its last saved state (model, optimizer, EMA, LR schedule, carry, data order, RNG).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from trmlm.puzzle.act import ACTCarry, act_step, new_carry, refill
from trmlm.checkpoint import save_checkpoint
from trmlm.config import TRMConfig, TrainConfig
from trmlm.configtools import to_dict
from trmlm.core import RecursionState
from trmlm.puzzle.data import IndexStream, PuzzleData, to_tensors
from trmlm.distributed import DeepSpeedStepper, DistContext, Stepper, init_distributed
from trmlm.errors import TRMError
from trmlm.logging import Logger
from trmlm.modelcard import provenance
from trmlm.puzzle.registry import build_puzzle_model
from trmlm.optim import EMA, run_progress
from trmlm.progress import TimeLeftColumn
from trmlm.puzzle.eval import evaluate
from trmlm.puzzle.model import TRMPuzzleModel
from trmlm.runtime import resolve_runtime, seed_everything
from trmlm.train_state import check_same_run, latest_state_dir, load_state, save_state


@dataclass
class TrainResult:
    model: TRMPuzzleModel              # the evaluation model (EMA weights when EMA is on)
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per evaluation
    final: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    checkpoint: Path | None = None


class GlobalRefill:
    """Refill halted slots from one data stream shared (identically seeded) by all processes.

    The halted flags of the whole global carry are gathered, the stream hands out one example per
    globally halted slot in slot order, and each process keeps those of its own slots — so the data
    each slot sees does not depend on the number of processes.
    """

    def __init__(self, data: PuzzleData, stream: IndexStream, dist: DistContext, slots: slice,
                 device: torch.device) -> None:
        self.data, self.stream, self.dist, self.slots, self.device = data, stream, dist, slots, device

    def __call__(self, model: torch.nn.Module, carry: ACTCarry) -> ACTCarry:
        halted_all = self.dist.all_gather(carry.halted)
        k = int(halted_all.sum())
        if k == 0:
            return carry
        new = self.data.get_train(self.stream.take(k))
        order = np.cumsum(halted_all.cpu().numpy()) - 1  # global slot -> index into `new`
        mine = order[self.slots][carry.halted.cpu().numpy()]
        picked = to_tensors({key: v[mine] for key, v in new.items()}, self.device)
        return refill(model, carry, lambda n: picked)


def _carry_tensors(carry: ACTCarry, dist: DistContext) -> dict[str, torch.Tensor]:
    parts = {"carry.y": carry.state.y, "carry.z": carry.state.z, "carry.steps": carry.steps,
             "carry.halted": carry.halted, **{f"carry.batch.{k}": v for k, v in carry.batch.items()}}
    return {k: dist.all_gather(v) for k, v in parts.items()}


def _carry_from(tensors: dict[str, torch.Tensor], slots: slice, device: torch.device) -> ACTCarry:
    t = {k: v[slots].to(device) for k, v in tensors.items() if k.startswith("carry.")}
    batch = {k[len("carry.batch."):]: v for k, v in t.items() if k.startswith("carry.batch.")}
    return ACTCarry(state=RecursionState(t["carry.y"], t["carry.z"]), steps=t["carry.steps"],
                    halted=t["carry.halted"].bool(), batch=batch)


def train_puzzle(model_cfg: TRMConfig, train_cfg: TrainConfig, data: PuzzleData, *,
                 out_dir: str | Path | None, run_config: dict[str, Any],
                 logger: Logger | None = None, progress: bool = True,
                 console: Console | None = None,
                 on_eval: Callable[[dict[str, Any]], None] | None = None,
                 resume: bool = False, deepspeed_config: dict[str, Any] | None = None) -> TrainResult:
    """Train a puzzle model; evaluate every `eval_every` steps, at each multiple of
    `eval_every_minutes` training minutes, and at the end; save to out_dir."""
    logger = logger or Logger()
    console = console or Console(stderr=True)
    rt = resolve_runtime(train_cfg.device, train_cfg.dtype, train_cfg.threads)
    dist = init_distributed(rt.device.type)
    if dist.world > 1 and rt.device.type == "cuda":
        rt.device = torch.device("cuda", dist.local_rank)
    main = dist.is_main
    seed_everything(train_cfg.seed)
    model = build_puzzle_model(model_cfg).to(rt.device)
    model.train()
    if train_cfg.compile:
        model.core.f.compile()  # in place: weights and state-dict names are unchanged
    slots = dist.slots(train_cfg.batch_size)
    if deepspeed_config is not None:
        stepper: Stepper = DeepSpeedStepper(model, train_cfg, dist, deepspeed_config, rt.device.type)
    else:
        stepper = Stepper(model, train_cfg, dist, fused=rt.fused_adam)
    params = list(model.parameters())
    with stepper.gathered(params):  # ZeRO-3 shards parameters: gather to read them whole
        ema = EMA(model, train_cfg.ema_decay) if train_cfg.ema_decay > 0 else None
    stream = IndexStream(data.train_size, train_cfg.seed)
    gen = torch.Generator().manual_seed(train_cfg.seed + 1)
    refiller = GlobalRefill(data, stream, dist, slots, rt.device)
    out = Path(out_dir) if out_dir is not None else None
    result = TrainResult(model=model)
    start_step, elapsed_before, meta_eval_s = 0, 0.0, 0.0

    if resume:
        state_dir = latest_state_dir(out) if out is not None else None
        if state_dir is None:
            raise TRMError(f"cannot resume: no saved training state under {out}")
        tensors, meta = load_state(state_dir)
        check_same_run(meta["config"], run_config, state_dir, run_config_defaults())
        with stepper.gathered(params):
            model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        if ema is not None:
            ema.load_state_dict({k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")})
        stepper.load_state_tensors({k: v for k, v in tensors.items() if k.startswith("opt")}, meta["stepper"])
        stepper.load_extra(state_dir)
        stream.load_state_dict(meta["stream"])
        gen.set_state(tensors["rng.explore"])
        carry = _carry_from(tensors, slots, rt.device)
        start_step, elapsed_before = meta["step"], meta["seconds"]
        meta_eval_s = meta.get("eval_seconds", 0.0)
        result.history = meta["history"]
        if main:
            console.print(f"resumed from {state_dir} at step {start_step}")
    else:
        first = data.get_train(stream.take(train_cfg.batch_size))
        carry = new_carry(model, to_tensors({k: v[slots] for k, v in first.items()}, rt.device))

    t0 = time.time() - elapsed_before
    budget = train_cfg.max_minutes * 60.0

    def full_weights() -> dict[str, torch.Tensor]:
        with stepper.gathered(params):
            return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def eval_model() -> TRMPuzzleModel:
        """A plain copy holding the EMA weights (or the current ones without EMA)."""
        weights = ema.state_dict() if ema is not None else full_weights()
        copy = build_puzzle_model(model_cfg).to(rt.device)
        copy.load_state_dict(weights)
        return copy

    def save_resumable(step: int) -> None:
        tensors = {f"model.{k}": v for k, v in full_weights().items()}
        if ema is not None:
            tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
        opt_tensors, stepper_meta = stepper.state_tensors()
        tensors.update(opt_tensors)
        tensors.update(_carry_tensors(carry, dist))
        tensors["rng.explore"] = gen.get_state()
        meta = {"step": step, "seconds": round(time.time() - t0, 3), "eval_seconds": eval_seconds[0],
                "stream": stream.state_dict(),
                "stepper": stepper_meta, "config": run_config, "history": result.history}
        write_extra = None
        if deepspeed_config is not None:
            # DeepSpeed's save is a collective (every rank writes its shard): stage it, then
            # move it into the step directory before that directory is renamed into place.
            staging = out / "train_state" / f".ds_step_{step:08d}"
            stepper.save_extra(staging)
            dist.barrier()
            write_extra = lambda tmp: os.replace(staging / "deepspeed", tmp / "deepspeed")  # noqa: E731
        if main:
            save_state(out, step, tensors, meta, train_cfg.keep_checkpoints, write_extra=write_extra)
            if deepspeed_config is not None:
                shutil.rmtree(staging, ignore_errors=True)
        dist.barrier()

    eval_seconds = [meta_eval_s]

    def train_seconds() -> float:
        """Wall time spent training (evaluation excluded): the clock of curves and budgets."""
        return time.time() - t0 - eval_seconds[0]

    def run_eval(step: int) -> dict[str, Any]:
        t_eval = time.time()
        trained_for = train_seconds()
        evaluated = eval_model()
        metrics = evaluate(evaluated, data.eval, rt, train_cfg.eval_batch_size,
                           limit=train_cfg.eval_size, is_correct=data.score)
        row = {"step": step, "train_s": round(trained_for, 1), "time_s": round(time.time() - t0, 1),
               **metrics}
        eval_seconds[0] += time.time() - t_eval
        result.history.append(row)
        logger.log(step, {f"eval/{k}": v for k, v in metrics.items() if not isinstance(v, list)})
        if on_eval is not None:
            on_eval(row)
        if out is not None:
            meta = {"step": step, "seconds": round(time.time() - t0, 1), "metrics": row,
                    "ema": ema is not None, "params": model.num_parameters(), "provenance": provenance(rt.device)}
            result.checkpoint = save_checkpoint(out, evaluated.state_dict(), run_config, meta)
        return row

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeLeftColumn(), TextColumn("{task.fields[info]}")]
    step = start_step
    ckpt_every = train_cfg.checkpoint_every or train_cfg.eval_every
    # Timed evaluations: the first step at or after each multiple k * every_s of training time.
    # k counts in integers (no drift from adding floats); a resumed run continues at the next k.
    every_s = train_cfg.eval_every_minutes * 60.0
    next_k = math.floor(train_seconds() / every_s) + 1 if every_s > 0 else 0
    # The lr decay's clock: the ranks' mean training seconds, agreed with the stop flags after each step
    agreed_s = dist.agree(train_seconds(), [])[0] if budget > 0 and train_cfg.lr_decay_frac > 0 else 0.0
    with Progress(*columns, console=console, disable=not (progress and main), transient=False) as bar:
        task = bar.add_task("train", total=train_cfg.train_steps, completed=start_step, info="",
                            budget_left=budget - train_seconds() if budget > 0 else None)
        last_eval = ""
        for step in range(start_step + 1, train_cfg.train_steps + 1):
            carry = refiller(model, carry)
            with rt.autocast():
                carry, stats = act_step(stepper.module, carry, loss_kind=train_cfg.loss,
                                        halt_loss_weight=train_cfg.halt_loss_weight, generator=gen,
                                        slots=slots, global_batch=train_cfg.batch_size)
            loss_value = stats.loss.item()
            if not math.isfinite(loss_value):
                where = f"; last good checkpoint kept in {out}" if out is not None else ""
                raise TRMError(f"training stopped: loss became {loss_value} at step {step}{where}")
            if train_cfg.lr_decay_frac > 0:  # the clock every rank agreed on after the last step
                stepper.decay_lr(run_progress(step - 1, train_cfg.train_steps, agreed_s, budget))
            stepper.step(stats.loss)
            if ema is not None:
                with stepper.gathered(params):
                    ema.update(model)
            if step % train_cfg.log_every == 0 or step == 1:
                row = torch.tensor([loss_value, stats.lm_loss.item(), stats.q_loss.item(),
                                    stats.cell_acc.item(), stats.exact_acc.item(), stats.halted_frac.item()])
                dist.all_reduce_mean_([row])  # log the global-batch figures
                names = ("loss", "lm_loss", "q_loss", "cell_acc", "exact_acc", "halted")
                logger.log(step, {f"train/{k}": float(v) for k, v in zip(names, row)} | {"lr": stepper.lr()})
                bar.update(task, info=f"loss {row[0]:.3f} cell {row[3]:.3f}{last_eval}")
            bar.update(task, completed=step, budget_left=budget - train_seconds() if budget > 0 else None)
            spent = train_seconds() if budget > 0 else 0.0
            out_of_time = budget > 0 and spent >= budget
            timed = every_s > 0 and train_seconds() >= next_k * every_s
            if budget > 0 or every_s > 0:  # every rank must agree to stop / evaluate, and on the lr clock
                agreed_s, (out_of_time, timed) = dist.agree(spent, [out_of_time, timed])
            if timed:  # a step that passed several multiples evaluates once
                next_k = max(next_k + 1, math.floor(train_seconds() / every_s) + 1)
            is_eval = (step % train_cfg.eval_every == 0 or step == train_cfg.train_steps or out_of_time
                       or timed)
            if is_eval and main:
                row = run_eval(step)
                last_eval = f" | eval exact {row['exact_acc']:.3f}"
                bar.update(task, info=f"loss {loss_value:.3f}{last_eval}")
            if out is not None and (step % ckpt_every == 0 or is_eval):
                save_resumable(step)
            if out_of_time:
                if main:
                    console.print(f"time budget of {train_cfg.max_minutes:g} min reached at step {step}")
                break
    result.steps = step
    result.seconds = time.time() - t0
    result.final = result.history[-1] if result.history else {}
    result.model = eval_model()
    result.model.eval()
    return result


def run_config_defaults() -> dict[str, Any]:
    """The defaults of the run config's model and train parts (resuming a run saved before a
    field existed: check_same_run)."""
    return {"model": to_dict(TRMConfig()), "train": to_dict(TrainConfig())}


def run_config_dict(task: str, model_cfg: TRMConfig, train_cfg: TrainConfig,
                    data_cfg: Any) -> dict[str, Any]:
    return {"task": task, "model": to_dict(model_cfg), "train": to_dict(train_cfg),
            "data": to_dict(data_cfg)}
