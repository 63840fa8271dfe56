"""Config dataclasses: the TRM network and recursion (paper defaults) and the training loop."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


def swiglu_width(d_model: int, expansion: float, multiple: int = 256) -> int:
    """round(expansion * D * 2/3) rounded up to a multiple (official TRM: 1536 for D=512, exp 4)."""
    width = round(expansion * d_model * 2 / 3)
    return -(-width // multiple) * multiple


@dataclass
class TRMConfig:
    """The network f and its recursion. Defaults are the paper's (arXiv 2510.04871, Sudoku-Att)."""

    vocab_size: int = 11
    seq_len: int = 81                      # L, without the puzzle-embedding prefix
    d_model: int = 512                     # D
    n_heads: int = 8                       # H (head dim 64)
    n_layers: int = 2                      # blocks in f
    expansion: float = 4.0                 # SwiGLU expansion
    mixer: Literal["attention", "mlp"] = "attention"  # token mixing: attention, or MLP over positions
    pos_encoding: Literal["rope", "learned", "none", "grid", "grid_rope", "grid_bias"] = "rope"
    # grid: learned row + column (+ box) embeddings added to the input; grid_rope: 2-D RoPE (half
    # the rotary pairs turn with the row, half with the column); grid_bias: a learned per-head
    # bias on the attention logits for each (row, column) offset (+ one for "same box"). All read
    # seq_len as a square grid, row-major (puzzles only; docs/sudoku.md). Not in the paper.
    grid_box: int = 0                      # box side for grid / grid_bias (Sudoku: 3); 0 = no boxes
    # grid_bias only: start the bias as a 2-D ALiBi-style locality prior instead of zero. Head h
    # starts at -slope * 2^-h * (|d_row| + |d_col|), so the first head looks at the neighbours and
    # the later ones ever wider (the last of 4 at slope/8). 0 = plain attention at init.
    grid_bias_slope: float = 0.0
    # The shape of that prior: "locality" as above (mazes: a path continues next door), or
    # "peers" (Sudoku: the cells a constraint ties together): head h starts at +slope on the
    # cells of its query's row (head 0), column (head 1) or box (head 2); heads from 3 on at zero.
    grid_bias_prior: Literal["locality", "peers"] = "locality"
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    n_latent: int = 6                      # n: latent steps z = f(x + y + z) per cycle
    n_cycles: int = 3                      # T: cycles per supervision step (T-1 without grad)
    max_sup_steps: int = 16                # N_sup: deep-supervision steps at most
    halt_exploration: float = 0.1          # prob. of a random minimum step count in [2, N_sup]
    puzzle_emb_len: int = 16               # prefix positions; the first holds the learned id vector
    num_puzzle_ids: int = 1                # rows of the puzzle-embedding table (ARC: one per aug.)
    swiglu_multiple: int = 256             # SwiGLU width rounded up to this (official: 256)
    # Architecture and ablations (see docs/baselines.md; defaults = paper TRM).
    arch: Literal["trm", "hrm", "direct"] = "trm"  # trmlm/models.py ARCHS; hrm: T = H_cycles, n = L_cycles
    single_z: bool = False                 # ablation "single z" (paper Table 1: 71.9): no separate y
    separate_nets: bool = False            # ablation "separate nets" f_L, f_H (82.4); forced by hrm
    grad: Literal["last_cycle", "one_step"] = "last_cycle"  # "1-step gradient" (56.5); forced by hrm
    act_continue: bool = False             # HRM's Q-learning ACT: a continue logit trained on a second
                                           # forward pass (paper ablation "ACT continue": 86.1); forced by hrm

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.pos_encoding == "rope" and self.head_dim % 2:
            raise ValueError("RoPE needs an even head dimension")
        for name in ("vocab_size", "seq_len", "d_model", "n_heads", "n_layers", "n_latent",
                     "n_cycles", "max_sup_steps", "num_puzzle_ids", "swiglu_multiple"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pos_encoding == "grid_rope" and self.head_dim % 4:
            raise ValueError("2-D RoPE (grid_rope) needs a head dimension divisible by 4")
        if self.pos_encoding.startswith("grid") and self.grid_side ** 2 != self.seq_len:
            raise ValueError(f"pos_encoding {self.pos_encoding} needs a square grid: seq_len "
                             f"{self.seq_len} is not a square")
        if self.grid_box < 0 or (self.grid_box and self.grid_side % self.grid_box):
            raise ValueError(f"grid_box {self.grid_box} must be 0 or divide the grid side {self.grid_side}")
        if self.grid_box and self.pos_encoding not in ("grid", "grid_bias"):
            raise ValueError("grid_box applies only to pos_encoding grid or grid_bias")
        if self.grid_bias_slope < 0 or (self.grid_bias_slope and self.pos_encoding != "grid_bias"):
            raise ValueError(f"grid_bias_slope {self.grid_bias_slope} must be >= 0 and applies only "
                             "to pos_encoding grid_bias")
        if self.grid_bias_prior == "peers" and self.grid_bias_slope and not self.grid_box:
            raise ValueError("grid_bias_prior peers needs grid_box (the box is one of its relations)")
        if self.puzzle_emb_len < 0:
            raise ValueError("puzzle_emb_len must be >= 0")
        if not 0.0 <= self.halt_exploration <= 1.0:
            raise ValueError("halt_exploration must lie in [0, 1]")
        if self.single_z and self.separate_nets:
            raise ValueError("single_z and separate_nets cannot be combined")
        if self.arch == "hrm" and self.single_z:
            raise ValueError("arch 'hrm' keeps two states z_L, z_H: single_z must be false")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def grid_side(self) -> int:
        """Side of the square grid read from seq_len (pos_encoding grid / grid_rope)."""
        return math.isqrt(self.seq_len)

    @property
    def total_len(self) -> int:
        """Positions seen by f: puzzle-embedding prefix + sequence."""
        return self.puzzle_emb_len + self.seq_len

    @property
    def ffn_width(self) -> int:
        return swiglu_width(self.d_model, self.expansion, self.swiglu_multiple)

    @property
    def effective_depth(self) -> int:
        """Layers applied per supervision step: T (n + 1) layers (paper: 3 * 7 * 2 = 42)."""
        return self.n_cycles * (self.n_latent + 1) * self.n_layers


@dataclass
class TrainConfig:
    """The optimisation loop (paper values: AdamW 0.9/0.95, lr 1e-4, warmup 2000, batch 768)."""

    batch_size: int = 768                  # global batch (examples in the persistent carry)
    lr: float = 1e-4
    warmup_steps: int = 2000               # linear warmup, then constant (paper)
    lr_decay_frac: float = 0.0             # then linear decay over the last fraction of the run
                                           # (train_steps or max_minutes, whichever ends first);
                                           # 0 = constant to the end (paper)
    lr_decay_min: float = 0.0              # the decay's end, as a fraction of lr
    weight_decay: float = 1.0              # Sudoku/Maze 1.0, ARC 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    puzzle_emb_lr: float = 1e-2            # sign-SGD on the puzzle-embedding table
    puzzle_emb_weight_decay: float = 1.0
    ema_decay: float = 0.999               # 0 disables EMA (ablation "no EMA")
    loss: Literal["stablemax", "softmax"] = "stablemax"
    halt_loss_weight: float = 0.5          # 0.5 * BCE(q_halt, sequence exactly correct)
    grad_clip: float = 0.0                 # 0 = off (the paper does not clip)
    train_steps: int = 100_000             # optimizer steps (= supervision steps of the carry)
    max_minutes: float = 0.0               # training wall-clock budget (eval excluded), 0 = none
    eval_every: int = 2000                 # optimizer steps between evaluations
    eval_every_minutes: float = 0.0        # also evaluate at each multiple of this many training
                                           # minutes (the max_minutes clock, eval excluded); 0 = off.
                                           # benchmarks/puzzle_compare.py curves; LM: the budget_clock
    eval_size: int = 1000                  # held-out puzzles per periodic evaluation
    eval_batch_size: int = 256
    log_every: int = 50
    checkpoint_every: int = 0              # steps between resumable states; 0 = at each eval
    keep_checkpoints: int = 2              # resumable states kept (the last K)
    seed: int = 0
    threads: int = 0                       # torch CPU threads, 0 = torch's default
    device: str = "auto"                   # auto | cpu | cuda
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False                  # torch.compile the network f (GPU; no gain seen on CPU)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("ema_decay must lie in [0, 1)")
        if self.train_steps < 1:
            raise ValueError("train_steps must be >= 1")
        if self.threads < 0:
            raise ValueError("threads must be >= 0 (0 = torch's default)")
        if not 0.0 <= self.lr_decay_frac <= 1.0:
            raise ValueError(f"lr_decay_frac must lie in [0, 1] (0 = no decay), got {self.lr_decay_frac}")
        if not 0.0 <= self.lr_decay_min <= 1.0:
            raise ValueError(f"lr_decay_min must lie in [0, 1] (a fraction of lr), got {self.lr_decay_min}")
        if not (math.isfinite(self.eval_every_minutes) and self.eval_every_minutes >= 0):
            raise ValueError(f"eval_every_minutes must be a finite number >= 0 (0 = off), "
                             f"got {self.eval_every_minutes}")
