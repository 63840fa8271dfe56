"""Distributed training: plain PyTorch, data parallel over gloo/NCCL, and DeepSpeed (only here).

Every training loop talks to a `Stepper` (backward + optimizer step + LR schedule + state) and a
`DistContext` (rank, world size, collectives); which one runs is chosen at run time.

DeepSpeed's checkpoints go through `SafeCheckpointEngine`: DeepSpeed still decides what to save
and how to restore it (ZeRO partitions included), but every file is written and read as
safetensors + a JSON tree (`trmlm.checkpoint.save_tree`), never with torch.save/torch.load, so a
resumed run directory cannot run code.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from trmlm.checkpoint import load_tree, save_tree
from trmlm.config import TrainConfig
from trmlm.errors import TRMError
from trmlm.optim import build_optimizers, decay_factor, warmup_factor
from trmlm.train_state import DEEPSPEED_DIR, check_deepspeed_dir


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device_type: str = "cpu"  # where the backend's collectives run: NCCL (cuda) takes only CUDA tensors

    @property
    def comm_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.device_type == "cuda" else torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1 and torch.distributed.is_initialized()

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def all_gather(self, t: Tensor) -> Tensor:
        """Concatenate equal-shaped tensors from all ranks along dim 0 (rank order)."""
        if not self.active:
            return t
        local = t.contiguous().to(self.comm_device)
        parts = [torch.empty_like(local) for _ in range(self.world)]
        torch.distributed.all_gather(parts, local)
        return torch.cat(parts, 0).to(t.device)

    def all_reduce_mean_(self, tensors: list[Tensor]) -> None:
        """In-place mean over ranks, as one flat buffer (one collective per step)."""
        if not self.active or not tensors:
            return
        flat = torch.cat([t.reshape(-1).to(self.comm_device) for t in tensors])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n

    def agree(self, clock: float, flags: list[bool]) -> tuple[float, list[bool]]:
        """The ranks' mean `clock` and each flag OR-ed over ranks, in one collective: the clocks
        differ, but every rank must take the same learning rate, stop and evaluate at the same step."""
        if not self.active:
            return clock, list(flags)
        t = torch.tensor([clock, *(float(f) for f in flags)], dtype=torch.float64, device=self.comm_device)
        torch.distributed.all_reduce(t)  # a sum: the clock's mean, and a flag set on any rank is > 0
        return float(t[0]) / self.world, [bool(v > 0) for v in t[1:].tolist()]

    def slots(self, global_batch: int) -> slice:
        """The global carry slots this rank owns."""
        if global_batch % self.world:
            raise TRMError(f"batch_size {global_batch} is not divisible by {self.world} processes")
        per = global_batch // self.world
        return slice(self.rank * per, (self.rank + 1) * per)


def init_distributed(device_type: str) -> DistContext:
    """Join the process group described by RANK/WORLD_SIZE/... (torchrun, deepspeed, --nproc)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if not torch.distributed.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
    if device_type == "cuda":
        torch.cuda.set_device(local)
    return DistContext(rank=rank, world=world, local_rank=local, device_type=device_type)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_local(nproc: int, argv: list[str]) -> int:
    """Run `argv` (a python -m command) in `nproc` processes on this machine; returns the exit code."""
    port = free_port()
    procs = []
    for rank in range(nproc):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, *argv], env=env))
    code = 0
    try:
        for p in procs:
            code = p.wait() or code
            if code:
                break
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
    return code


# -- steppers -----------------------------------------------------------------------------------

class Stepper:
    """Plain PyTorch (single process, or data parallel by averaging gradients over ranks)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, dist: DistContext, fused: bool = False) -> None:
        self.model, self.cfg, self.dist = model, cfg, dist
        self.optimizers = build_optimizers(model, cfg, fused=fused)
        self.lr_scale = 1.0
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, self._lr_factor) for o in self.optimizers]

    def _lr_factor(self, step: int) -> float:
        """The schedule: warmup (by optimizer step) times the decay scale the loop last set."""
        return warmup_factor(step, self.cfg.warmup_steps) * self.lr_scale

    def decay_lr(self, progress: float) -> None:
        """The decay tail (`train.lr_decay_frac`), at once: scale the schedule by how far the run is
        (`optim.run_progress`: through its steps or its time budget, whichever is nearer its end)."""
        self.lr_scale = decay_factor(progress, self.cfg.lr_decay_frac, self.cfg.lr_decay_min)
        for opt, sched in zip(self.optimizers, self.schedulers):
            for group, base in zip(opt.param_groups, sched.base_lrs):
                group["lr"] = base * self._lr_factor(sched.last_epoch)

    @property
    def module(self) -> nn.Module:
        return self.model

    def step(self, loss: Tensor) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.dist.active:
            self.dist.all_reduce_mean_([p.grad for p in self.model.parameters() if p.grad is not None])
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        for opt, sched in zip(self.optimizers, self.schedulers):
            opt.step()
            sched.step()

    def lr(self) -> float:
        return self.optimizers[0].param_groups[0]["lr"]

    def state_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Optimizer + scheduler state as flat tensors and JSON (no pickles)."""
        tensors: dict[str, Tensor] = {}
        meta: dict[str, Any] = {"optimizers": [], "schedulers": [s.state_dict() for s in self.schedulers]}
        for i, opt in enumerate(self.optimizers):
            sd = opt.state_dict()
            for pid, st in sd["state"].items():
                for k, v in st.items():
                    tensors[f"opt{i}.{pid}.{k}"] = v if isinstance(v, Tensor) else torch.tensor(v)
            meta["optimizers"].append(sd["param_groups"])
        return tensors, meta  # LambdaLR stores plain functions as None: JSON-safe

    def load_state_tensors(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        if meta.get("deepspeed"):
            raise TRMError("cannot resume: the checkpoint was written with DeepSpeed; pass the same --deepspeed")
        for i, opt in enumerate(self.optimizers):
            state: dict[int, dict[str, Tensor]] = {}
            prefix = f"opt{i}."
            for key, v in tensors.items():
                if key.startswith(prefix):
                    pid, name = key[len(prefix):].split(".", 1)
                    state.setdefault(int(pid), {})[name] = v
            opt.load_state_dict({"state": state, "param_groups": meta["optimizers"][i]})
        for sched, sd in zip(self.schedulers, meta["schedulers"]):
            sched.load_state_dict(sd)

    def gathered(self, params: list[nn.Parameter]) -> contextlib.AbstractContextManager:
        """Context in which every parameter is whole (only ZeRO-3 shards them)."""
        return contextlib.nullcontext()

    def save_extra(self, directory: Path) -> None:
        """Nothing beyond state_tensors for plain PyTorch."""

    def load_extra(self, directory: Path) -> None:
        """Nothing beyond state_tensors for plain PyTorch."""


def _avoid_cpu_jit_ops() -> None:
    """DeepSpeed on CPU JIT-builds a shared-memory comm op at every init (~2 min, docs/training.md);
    gloo does the collectives fine without it, so make the builder report 'unavailable'."""
    comm_torch = importlib.import_module("deepspeed.comm.torch")
    comm_torch.build_shm_op = lambda: None


def load_deepspeed_config(path: str | Path, cfg: TrainConfig, world: int) -> dict[str, Any]:
    """Read a DeepSpeed JSON; batch sizes and clipping come from our TrainConfig."""
    path = Path(path)
    if not path.is_file():
        raise TRMError(f"DeepSpeed config not found: {path}")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TRMError(f"invalid DeepSpeed JSON {path}: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(ds, dict):
        raise TRMError(f"invalid DeepSpeed JSON {path}: expected an object")
    if "optimizer" in ds:
        raise TRMError(f"{path}: leave 'optimizer' out; trmlm passes its own AdamW (avoids FusedAdam JIT)")
    # DeepSpeed's universal-checkpoint loader and its other checkpoint writers read pickles with
    # torch.load behind our checkpoint engine's back: refuse the settings that select them.
    ckpt = ds.get("checkpoint") or {}
    if not isinstance(ckpt, dict) or ckpt.get("load_universal") or ckpt.get("writer") \
            or (ds.get("datastates_ckpt") or {}).get("enabled"):
        raise TRMError(f"{path}: leave out 'checkpoint' load_universal/writer and datastates_ckpt; "
                       "trmlm saves DeepSpeed state itself, as safetensors + JSON")
    ds["train_batch_size"] = cfg.batch_size
    ds["train_micro_batch_size_per_gpu"] = cfg.batch_size // world
    ds["gradient_accumulation_steps"] = 1
    ds["gradient_clipping"] = cfg.grad_clip
    return ds


def _deepspeed_classes() -> dict[str, type]:
    """The few non-builtin types DeepSpeed puts in its checkpoints (ZeRO 0-3, fp32/bf16/fp16):
    the allow-list of save_tree/load_tree. Anything else fails at save time, loudly."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return {"LossScaler": LossScaler, "DynamicLossScaler": DynamicLossScaler,
            "ZeroStageEnum": ZeroStageEnum, "fragment_address": fragment_address}


def _safe_checkpoint_engine():
    """A DeepSpeed CheckpointEngine whose files are safetensors + JSON trees. DeepSpeed keeps its
    own file names (`*_model_states.pt`, `*_optim_states.pt`): their contents are not pickles."""
    from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointEngine

    classes = _deepspeed_classes()

    class SafeCheckpointEngine(CheckpointEngine):
        def __init__(self) -> None:
            super().__init__(None)
            self.name = "trmlm-safetensors"

        def create(self, info) -> None:
            pass

        def save(self, state_dict, path: str) -> None:
            save_tree(path, state_dict, classes)

        def load(self, path: str, map_location=None):
            return load_tree(path, classes)  # CPU tensors; DeepSpeed copies them where they belong

        def commit(self, info) -> bool:
            return True

        def preserves_storage_sharing(self) -> bool:
            return False  # save_tree copies every tensor anyway

    return SafeCheckpointEngine()


class DeepSpeedStepper(Stepper):
    """engine.backward + engine.step per supervision step; ZeRO 0-3, bf16 on GPU, fp32 on CPU."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, dist: DistContext, ds_config: dict[str, Any],
                 device_type: str) -> None:
        if device_type == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed  # noqa: WPS433 - optional heavy import, only on this path

        if device_type == "cpu":
            _avoid_cpu_jit_ops()
            # The shipped configs enable bf16 for GPUs; on an AVX2 CPU bf16 is 20-100x slower
            # than fp32 (measured: docs/training.md), so the CPU path trains in fp32.
            ds_config = {**ds_config, "bf16": {"enabled": False}}
        self.model, self.cfg, self.dist = model, cfg, dist
        if dist.world == 1:  # without a launcher (RANK, WORLD_SIZE, ...) DeepSpeed would look for MPI
            for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                               ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(free_port()))):
                os.environ.setdefault(key, value)
        params = [p for p in model.parameters() if p.requires_grad]
        # One client AdamW (torch, not FusedAdam); the puzzle-embedding table joins it under
        # DeepSpeed (sign-SGD needs its raw gradient, which ZeRO partitions): a documented deviation.
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
        self.lr_scale = 1.0
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self._lr_factor)
        deepspeed.init_distributed(dist_backend="nccl" if device_type == "cuda" else "gloo",
                                   auto_mpi_discovery=False)
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched,
                                                    config=ds_config)
        self.engine.checkpoint_engine = _safe_checkpoint_engine()
        self.optimizers, self.schedulers = [opt], [sched]
        self.zero_stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))

    @property
    def module(self) -> nn.Module:
        return self.engine.module

    def step(self, loss: Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()

    def lr(self) -> float:
        return self.engine.get_lr()[0]

    def state_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return {}, {"deepspeed": True}  # DeepSpeed keeps optimizer state in its own checkpoint

    def load_state_tensors(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        if not meta.get("deepspeed"):
            raise TRMError("cannot resume: the checkpoint was written without DeepSpeed")

    def save_extra(self, directory: Path) -> None:
        root = directory / DEEPSPEED_DIR
        self.engine.save_checkpoint(str(root), tag="state")
        for script in ("zero_to_fp32.py", "zero_to_torch.py"):  # DeepSpeed's converters read
            (root / script).unlink(missing_ok=True)                # pickles; no code in a run dir

    def load_extra(self, directory: Path) -> None:
        check_deepspeed_dir(directory)  # every file a state tree: refused before DeepSpeed looks
        try:
            path, _ = self.engine.load_checkpoint(str(directory / DEEPSPEED_DIR), tag="state")
        except TRMError as exc:
            raise TRMError(f"cannot resume: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any failure of a third-party loader on our files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TRMError(f"cannot resume: DeepSpeed could not restore {directory / DEEPSPEED_DIR}: {first}") from None
        if path is None:
            raise TRMError(f"cannot resume: no DeepSpeed state in {directory}")

    def gathered(self, params: list[nn.Parameter]) -> contextlib.AbstractContextManager:
        """Context in which ZeRO-3 parameters are whole (for EMA and saving)."""
        import deepspeed

        if self.zero_stage == 3:
            return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        return contextlib.nullcontext()
