"""Training-step throughput and MFU (achieved GFLOP/s over a measured matmul peak) of the presets."""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from trmlm.puzzles.run import preset_path, resolve_config
from trmlm.puzzle.act import act_step, new_carry
from trmlm.bench.common import hardware, write_json
from trmlm.configtools import load_yaml
from trmlm.distributed import DistContext, Stepper
from trmlm.errors import TRMError
from trmlm.flops import measure_matmul_peak, train_step_flops
from trmlm.lm.config import load_lm_config
from trmlm.lm.data import TokenData
from trmlm.lm.model import build_model
from trmlm.lm.tokenizer import CharTokenizer
from trmlm.lm.train import Trainer
from trmlm.puzzle.registry import build_puzzle_model
from trmlm.optim import EMA

PUZZLE_PRESETS = ["sudoku-extreme-mlp", "sudoku-extreme-att", "sudoku-cpu"]
LM_PRESETS = ["lm-shakespeare-cpu", "lm-paper"]
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"

LM_BATCH = 16  # LM windows per step unless a preset's CPU default below says otherwise
# lm-paper (D 512, context 512, n 6, T 3, N_sup 16) costs ~0.35 TFLOP per supervision step and
# window, ~5.5 TFLOP per optimizer step at batch 16: minutes per step on one CPU core. By default
# it is measured at batch 1 with each batch cut after 1 of its 16 supervision steps (with the
# previous-step cache every supervision step costs the same, so the per-step figure is exact).
LM_CPU_DEFAULTS: dict[str, dict[str, int]] = {"lm-paper": {"batch": 1, "sup_steps": 1}}


# FlopCounterMode has formulas for the CUDA SDPA kernels only; on CPU SDPA dispatches to
# aten._scaled_dot_product_flash_attention_for_cpu(_backward), which it would count as 0 FLOPs
# (checked on torch 2.13). Map those to torch's own SDPA formulas: QK^T and AV over all L x S
# query-key pairs (masked pairs included, as trmlm.flops counts them), backward 2.5x forward.
def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


_aten = torch.ops.aten
CPU_SDPA_FLOPS = {_aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
                  _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops}


def counted_flops(step: Callable[[], int]) -> float:
    """FLOPs per optimizer step counted by FlopCounterMode over one call of `step` (which returns
    the optimizer steps it took): matmuls and attention, forward and backward; the optimizer's
    elementwise updates, norms and activations are not counted (as in the analytic count)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
        n = step()
    return counter.get_total_flops() / n


def median_step_seconds(step: Callable[[], int], warmup: int, steps: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds per optimizer step over `steps` timed calls, after
    `warmup` calls (CPU well below threads x wall: the cores were shared)."""
    for _ in range(max(warmup, 0)):
        step()
    wall, cpu = [], []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        n = step()
        wall.append((time.perf_counter() - t) / n)
        cpu.append((time.process_time() - c) / n)
    return statistics.median(wall), statistics.median(cpu)


# -- puzzles --------------------------------------------------------------------------------------
PEER_PRESET = "sudoku-cpu"  # the preset timed side by side with the peer, when it is installed


def puzzle_step(name: str, batch: int, configs_dir: Path) -> tuple[Callable[[], int], dict[str, Any]]:
    """(step, row fields): `step()` is one optimizer step as trmlm.puzzle.train takes it
    (act_step, the Stepper's backward + AdamW, EMA) on a carry of `batch` random puzzles; the network
    f is compiled when the preset sets train.compile (the first call then pays the compile)."""
    task = load_yaml(preset_path(name, configs_dir)).get("task", "")
    run = resolve_config(task, configs_dir, name)
    m, t = run.model, run.train
    model = build_puzzle_model(m).train()
    stepper = Stepper(model, t, DistContext())
    ema = EMA(model, t.ema_decay) if t.ema_decay > 0 else None
    g = torch.Generator().manual_seed(0)
    data = {"inputs": torch.randint(1, m.vocab_size, (batch, m.seq_len), generator=g),  # (B, L)
            "labels": torch.randint(1, m.vocab_size, (batch, m.seq_len), generator=g),  # (B, L)
            "puzzle_ids": torch.randint(0, m.num_puzzle_ids, (batch,), generator=g)}   # (B,)
    carry = new_carry(model, data)

    def step() -> int:
        nonlocal carry
        carry, stats = act_step(model, carry, loss_kind=t.loss, halt_loss_weight=t.halt_loss_weight,
                                generator=g)
        stepper.step(stats.loss)
        if ema is not None:
            ema.update(model)
        return 1

    counted = counted_flops(step)  # eager, before any compile: FlopCounterMode sees every matmul
    compile_s = None
    if t.compile:
        model.core.f.compile()
        c0 = time.perf_counter()
        step()  # the cold compile (grad and no-grad graphs)
        step()
        compile_s = time.perf_counter() - c0
    arch = getattr(m, "arch", "trm")
    flops = train_step_flops(m, batch)["total"] if arch == "trm" else counted  # analytic: TRM only
    row = {"kind": "puzzle", "preset": name, "task": run.task, "arch": arch, "mixer": m.mixer,
           "d_model": m.d_model, "n": m.n_latent, "T": m.n_cycles, "N_sup": m.max_sup_steps,
           "params": model.num_parameters(), "batch": batch, "paper_batch": t.batch_size,
           "compiled": t.compile, "compile_seconds": compile_s,
           "throughput_unit": "examples x sup-steps/s",
           "gflop_per_step": flops / 1e9, "gflop_per_step_counted": counted / 1e9}
    return step, row


def blocked(step: Callable[[], int], min_seconds: float = 0.3) -> Callable[[], int]:
    """`step` repeated so one timed call lasts about `min_seconds` (a 0.05 s step timed alone is
    mostly timer and scheduler noise); returns the steps it took."""
    t = time.perf_counter()
    step()
    k = max(1, round(min_seconds / max(time.perf_counter() - t, 1e-6)))

    def block() -> int:
        return sum(step() for _ in range(k))

    return block


def interleaved_seconds(steps: list[Callable[[], int]], warmup: int, rounds: int
                        ) -> list[tuple[float, float]]:
    """Median (wall, process-CPU) seconds per optimizer step of each callable, timed in alternation
    (A B A B ...) so a change of load hits all of them alike."""
    for s in steps:
        for _ in range(max(warmup, 0)):
            s()
    wall: list[list[float]] = [[] for _ in steps]
    cpu: list[list[float]] = [[] for _ in steps]
    for _ in range(rounds):
        for i, s in enumerate(steps):
            t, c = time.perf_counter(), time.process_time()
            n = s()
            wall[i].append((time.perf_counter() - t) / n)
            cpu[i].append((time.process_time() - c) / n)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(wall, cpu)]


def bench_puzzle(name: str, batch: int, steps: int, warmup: int, configs_dir: Path,
                 peer: bool = False) -> list[dict[str, Any]]:
    """The preset's row (throughput = examples x supervision steps / s); with `peer`, also the
    lucidrains peer at the preset's shape (D, n, T, layers, L, batch), timed interleaved."""
    step, row = puzzle_step(name, batch, configs_dir)
    jobs = [blocked(step)]
    peer_row = None
    if peer:
        from trmlm.puzzles.peer import PEER_PACKAGE, peer_step, peer_version

        task = load_yaml(preset_path(name, configs_dir)).get("task", "")
        m = resolve_config(task, configs_dir, name).model
        pstep, pparams = peer_step(m, batch)
        pcounted = counted_flops(pstep)
        jobs.append(blocked(pstep))
        peer_row = {"kind": "peer", "preset": f"{PEER_PACKAGE} {peer_version()}", "task": row["task"],
                    "arch": "lucidrains TinyRecursiveModel + MLPMixer1D", "mixer": "mlp",
                    "d_model": m.d_model, "n": m.n_latent, "T": m.n_cycles, "N_sup": None,
                    "params": pparams, "batch": batch, "paper_batch": None, "compiled": False,
                    "compile_seconds": None, "throughput_unit": "examples x sup-steps/s",
                    "gflop_per_step": pcounted / 1e9, "gflop_per_step_counted": pcounted / 1e9,
                    "shape_of": name}
    timed = interleaved_seconds(jobs, warmup - 1, max(steps, 5 if peer else steps))
    rows = []
    for r, (sec, cpu_sec) in zip([row, peer_row] if peer else [row], timed):
        r.update(step_seconds=sec, step_cpu_seconds=cpu_sec, throughput=batch / sec)
        rows.append(r)
    if peer:
        row["peer_ratio"] = row["throughput"] / peer_row["throughput"]
        row["peer_flop_ratio"] = row["gflop_per_step"] / peer_row["gflop_per_step"]
    return rows


# -- language model -------------------------------------------------------------------------------
def bench_lm(name: str, batch: int | None, steps: int, warmup: int, threads: int, configs_dir: Path
             ) -> dict[str, Any]:
    """Optimizer steps of the LM's own training code (Trainer.train_batch: the final-sweep cache
    pass if configured, then one optimizer step per supervision step, EMA) on random token windows
    (B, L + 1); a timed call is one batch, its time shared by the optimizer steps it took."""
    cfg = load_lm_config(name, [], [], configs_dir)
    defaults = LM_CPU_DEFAULTS.get(name, {})
    batch = batch or defaults.get("batch", LM_BATCH)
    n_sup = cfg.model.max_sup_steps if cfg.arch == "trm" else 1
    # Cutting a batch short is exact only with the previous-step cache: the final-sweep cache
    # pass is a per-batch cost shared by all N_sup steps.
    sup = min(n_sup, defaults.get("sup_steps", n_sup)) if cfg.train_cache == "previous_step" else n_sup
    paper_batch = cfg.train.batch_size
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, batch_size=batch, threads=threads, device="cpu", dtype="float32",
        train_steps=sup, max_minutes=0.0))
    V, L = cfg.model.vocab_size, cfg.context  # V: the preset's vocab (the tokenizer's size in training)
    rng = np.random.default_rng(0)
    val = rng.integers(0, V, 2 * L + 2)
    # The tokenizer and held-out data are only read by evaluation and sampling, never by train_batch.
    trainer = Trainer(cfg, build_model(cfg), CharTokenizer([chr(32 + i) for i in range(95)]),
                      TokenData(train=val, val=val, val_chars=len(val)))

    def step() -> int:
        trainer.step = 0  # the trainer's own budget (train_steps = sup) ends the batch after `sup` steps
        tokens = torch.from_numpy(rng.integers(0, V, (batch, L + 1)))  # (B, L + 1)
        return len(trainer.train_batch(tokens))

    counted = counted_flops(step)  # this call is also the first warmup call
    sec, cpu_sec = median_step_seconds(step, warmup - 1, steps)
    net = cfg.model
    return {"kind": "lm", "preset": name, "arch": cfg.arch, "train_cache": cfg.train_cache,
            "d_model": net.d_model, "n": net.n_latent, "T": net.n_cycles, "N_sup": n_sup,
            "sup_steps_per_batch": sup, "context": L, "vocab": V,
            "params": trainer.model.num_parameters(), "batch": batch, "paper_batch": paper_batch,
            "step_seconds": sec, "step_cpu_seconds": cpu_sec,
            "throughput": batch * L / (n_sup * sec), "throughput_unit": "tokens/s",
            "tokens_x_steps_per_s": batch * L / sec,
            "gflop_per_step": counted / 1e9, "gflop_per_step_counted": counted / 1e9}


# -- the report -----------------------------------------------------------------------------------
def run_train_step_bench(out: Path | None, threads: int, batch: int = 16, lm_batch: int | None = None,
                         steps: int = 3, warmup: int = 1, presets: list[str] | None = None,
                         lm_presets: list[str] | None = None, console: Console | None = None,
                         progress: bool = True, configs_dir: Path | None = None,
                         peer: bool | None = None) -> dict[str, Any]:
    """Median seconds of one training optimizer step (after max(warmup, 1) untimed calls, the
    first of them counting FLOPs) of each puzzle preset (carry of `batch`) and LM preset (`lm_batch`
    windows; None = LM_BATCH or the preset's LM_CPU_DEFAULTS), CPU fp32 at `threads` threads;
    FLOPs per step, GFLOP/s and the fraction of the matmul peak measured at the same thread count.
    `peer` (None = when installed): time the lucidrains `tiny-recursive-model` at the sudoku-cpu
    shape interleaved with it and add `peer_ratio` (this project's throughput / the peer's) to
    that row. Prints a table, writes out/train_step.json when `out` is given, returns the report."""
    if steps < 1 or warmup < 0 or batch < 1 or (lm_batch is not None and lm_batch < 1) or threads < 1:
        raise TRMError("steps, batch, lm_batch and threads must be >= 1 and warmup >= 0")
    presets = PUZZLE_PRESETS if presets is None else presets
    lm_presets = LM_PRESETS if lm_presets is None else lm_presets
    configs_dir = configs_dir or CONFIGS_DIR
    console = console or Console()
    if peer is None:
        from trmlm.puzzles.peer import peer_version

        peer = peer_version() is not None
    for name in presets:  # unknown names fail here, before minutes of measuring
        preset_path(name, configs_dir)
    for name in lm_presets:
        load_lm_config(name, [], [], configs_dir)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        jobs = [("puzzle", p) for p in presets] + [("lm", p) for p in lm_presets]
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn()]
        with Progress(*columns, console=console, disable=not progress, transient=True) as bar:
            task = bar.add_task("matmul peak", total=len(jobs) + 2)
            peak = measure_matmul_peak()
            bar.advance(task)
            rows = []
            for kind, name in jobs:
                bar.update(task, description=name)
                if kind == "puzzle":
                    rows.extend(bench_puzzle(name, batch, steps, warmup, configs_dir,
                                             peer=peer and name == PEER_PRESET))
                else:
                    rows.append(bench_lm(name, lm_batch, steps, warmup, threads, configs_dir))
                bar.advance(task)
            bar.update(task, description="matmul peak")
            # Best of a window before and one after: a core shared with another process for a
            # moment would otherwise understate the peak (and overstate every MFU).
            peak = max(peak, measure_matmul_peak())
            bar.advance(task)
        report = {"benchmark": "train_step", **hardware(), "dtype": "float32",
                  "matmul_peak_gflops": peak, "steps": steps, "warmup": warmup,
                  "flops": "gflop_per_step: puzzles analytic (trmlm.flops.train_step_flops), LM "
                           "counted; gflop_per_step_counted: FlopCounterMode (matmuls + SDPA)",
                  "rows": rows}
    finally:
        torch.set_num_threads(previous_threads)
    for r in rows:
        r["achieved_gflops"] = r["gflop_per_step"] / r["step_seconds"]
        r["mfu"] = r["achieved_gflops"] / peak
    console.print(train_step_table(report))
    if out is not None:
        path = write_json(Path(out) / "train_step.json", report)
        console.print(f"wrote {path}")
    return report


def train_step_table(report: dict[str, Any]) -> Table:
    """The report as a rich table, one row per preset."""
    with_peer = any("peer_ratio" in r for r in report["rows"])
    table = Table(title=f"Training step, CPU fp32, {report['threads']} threads "
                        f"(matmul peak {report['matmul_peak_gflops']:.0f} GFLOP/s)",
                  caption="throughput: puzzles examples x supervision steps/s (ex*st/s); LM tokens/s "
                          "at N_sup steps per batch" + ("; peer: lucidrains tiny-recursive-model at the "
                          "shape of the row above it, timed interleaved with it" if with_peer else ""))
    for col in ("config", "params", "batch", "s/step", "throughput", "GFLOP/step", "GFLOP/s", "of peak",
                *(("vs peer",) if with_peer else ())):
        table.add_column(col, justify="left" if col == "config" else "right")
    for r in report["rows"]:
        unit = "tok/s" if r["throughput_unit"] == "tokens/s" else "ex*st/s"
        name = r["preset"]  # a preset file by its stem (the JSON keeps the path): rich cuts long cells
        name = Path(name).stem if name.endswith((".yaml", ".yml")) else name
        table.add_row(name, f"{r['params'] / 1e6:.2f}M", str(r["batch"]), f"{r['step_seconds']:.3f}",
                      f"{r['throughput']:.1f} {unit}", f"{r['gflop_per_step']:.2f}",
                      f"{r['achieved_gflops']:.1f}", f"{100 * r['mfu']:.1f}%",
                      *((f"{r['peer_ratio']:.2f}x" if "peer_ratio" in r else "",) if with_peer else ()))
    return table
