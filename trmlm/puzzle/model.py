"""TRM for fixed-size puzzles: embeddings + puzzle-id prefix, the recursion core, answer and Q heads."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trmlm.config import TRMConfig
from trmlm.core import GradMode, RecursionState, TRMCore
from trmlm.layers import AttnContext, Rotary, init_linear_, trunc_normal_


@dataclass
class StepOutput:
    """Result of one supervision step: the new (detached) carry, answer logits and halt logit."""

    state: RecursionState      # detached (y, z), (B, P + L, D)
    logits: Tensor             # (B, L, V)
    q_halt: Tensor             # (B,)
    q_continue: Tensor | None = None  # (B,), only with cfg.act_continue (HRM's Q-learning ACT)

    @property
    def halt_logit(self) -> Tensor:
        """> 0 means halt: q_halt (TRM), or q_halt - q_continue (Q-learning ACT, official HRM)."""
        return self.q_halt if self.q_continue is None else self.q_halt - self.q_continue


def grid_indices(side: int, box: int) -> tuple[Tensor, Tensor, Tensor]:
    """Row, column and box index of each cell of a side x side grid, row-major: (L,) each."""
    cell = torch.arange(side * side)
    rows, cols = cell // side, cell % side
    boxes = (rows // box) * (side // box) + cols // box if box else torch.zeros_like(cell)
    return rows, cols, boxes


def grid_relations(side: int, box: int) -> tuple[Tensor, Tensor]:
    """For every pair of cells: the index of its (row, column) offset in a (2N-1)^2 table, and
    whether the two share a box (all False when box is 0). (L, L) each."""
    rows, cols, boxes = grid_indices(side, box)
    dr = rows[:, None] - rows[None] + side - 1  # (L, L) in 0..2N-2
    dc = cols[:, None] - cols[None] + side - 1
    same_box = (boxes[:, None] == boxes[None]) if box else torch.zeros(dr.shape, dtype=torch.bool)
    return dr * (2 * side - 1) + dc, same_box.float()


def locality_prior(side: int, heads: int, slope: float) -> Tensor:
    """(H, (2N-1)^2) starting grid bias: -slope * 2^-h * Manhattan length of each (row, column)
    offset for head h (2-D ALiBi); all zero when slope is 0."""
    d = torch.arange(-(side - 1), side).abs().float()
    manhattan = (d[:, None] + d[None]).reshape(-1)  # offset index dr * (2N-1) + dc, as grid_relations
    slopes = slope * 0.5 ** torch.arange(heads, dtype=torch.float32)
    return -slopes[:, None] * manhattan[None]


def peers_prior(side: int, heads: int, slope: float) -> tuple[Tensor, Tensor]:
    """Starting (rel_bias (H, (2N-1)^2), box_bias (H,)) of the Sudoku "peers" prior: head h at
    +slope on every offset within the row (head 0: d_row = 0), the column (head 1: d_col = 0) or
    the box (head 2: the box bias); heads from 3 on at zero. All zero when slope is 0."""
    d = torch.arange(-(side - 1), side)
    dr, dc = (d[:, None] == 0).expand(-1, d.numel()), (d[None] == 0).expand(d.numel(), -1)
    rel, box = torch.zeros(heads, d.numel() ** 2), torch.zeros(heads)
    for h in range(min(heads, 3)):
        if h == 2:
            box[h] = slope
        else:
            rel[h] = slope * (dr if h == 0 else dc).reshape(-1).float()
    return rel, box


def grid_rope_tables(side: int, prefix: int, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """2-D RoPE tables (P + L, Dh/2) for apply_rope: the first half of the rotary pairs turns with
    the cell's row, the second half with its column, so q.k depends on (row, column) offsets.
    Prefix positions sit off the grid at row = column = -P..-1."""
    quarter = head_dim // 4
    inv_freq = 1.0 / (theta ** (torch.arange(quarter, dtype=torch.float32) / quarter))  # (Dh/4,)
    rows, cols, _ = grid_indices(side, 0)
    off = torch.arange(-prefix, 0)
    rows, cols = torch.cat([off, rows]).float(), torch.cat([off, cols]).float()  # (P + L,)
    freqs = torch.cat([torch.outer(rows, inv_freq), torch.outer(cols, inv_freq)], dim=1)  # (P + L, Dh/2)
    return freqs.cos(), freqs.sin()


class TRMPuzzleModel(nn.Module):
    """Tiny Recursive Model over a fixed grid of `seq_len` tokens (Sudoku, Maze, ARC)."""

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.d_model
        self.embed_scale = math.sqrt(D)
        self.embed = nn.Embedding(cfg.vocab_size, D)
        if cfg.puzzle_emb_len > 0:
            # One learned D-vector per puzzle id, zero init; trained with sign-SGD (see optim.py).
            self.puzzle_emb = nn.Parameter(torch.zeros(cfg.num_puzzle_ids, D))
        if cfg.pos_encoding == "learned":
            self.pos_emb = nn.Parameter(torch.zeros(cfg.total_len, D))
        if cfg.pos_encoding == "rope" and cfg.mixer == "attention":
            self.rotary = Rotary(cfg.head_dim, cfg.total_len, cfg.rope_theta)
        if cfg.pos_encoding == "grid":
            # Learned row, column (and box) vectors shared by the cells of a row/column/box: the
            # Sudoku constraint groups are one dot product away for attention (docs/sudoku.md).
            side = cfg.grid_side
            self.row_emb = nn.Parameter(torch.zeros(side, D))
            self.col_emb = nn.Parameter(torch.zeros(side, D))
            if cfg.grid_box:
                self.box_emb = nn.Parameter(torch.zeros((side // cfg.grid_box) ** 2, D))
            if cfg.puzzle_emb_len > 0:
                self.prefix_pos_emb = nn.Parameter(torch.zeros(cfg.puzzle_emb_len, D))
            for name, index in zip(("grid_rows", "grid_cols", "grid_boxes"),
                                   grid_indices(side, cfg.grid_box)):
                self.register_buffer(name, index, persistent=False)
        if cfg.pos_encoding == "grid_bias" and cfg.mixer == "attention":
            # Swin-style relative position bias in 2-D: one learned logit per head for every
            # (row, column) offset, plus one for "same box"; zero at init (plain attention) unless
            # grid_bias_slope asks for a locality prior (init_weights). Each entry is shared by all
            # cell pairs at that offset, so its gradient is the sum over them (measured against
            # 1-D RoPE on Sudoku in docs/baselines.md).
            side = cfg.grid_side
            self.rel_bias = nn.Parameter(torch.zeros(cfg.n_heads, (2 * side - 1) ** 2))
            offset, same_box = grid_relations(side, cfg.grid_box)
            self.register_buffer("grid_offset", offset, persistent=False)
            if cfg.grid_box:
                self.box_bias = nn.Parameter(torch.zeros(cfg.n_heads))
                self.register_buffer("grid_same_box", same_box, persistent=False)
        if cfg.pos_encoding == "grid_rope" and cfg.mixer == "attention":
            cos, sin = grid_rope_tables(cfg.grid_side, cfg.puzzle_emb_len, cfg.head_dim, cfg.rope_theta)
            self.register_buffer("grid_cos", cos, persistent=False)
            self.register_buffer("grid_sin", sin, persistent=False)
        self.core = TRMCore(cfg)
        self.head = nn.Linear(D, cfg.vocab_size, bias=False)
        # Halt logit; with act_continue also the continue logit (official q_head is D->2; TRM's
        # default loss never trains the continue half, so it is left out unless asked for).
        self.q_head = nn.Linear(D, 2 if cfg.act_continue else 1, bias=True)
        self.register_buffer("init_y", torch.zeros(D))
        self.register_buffer("init_z", torch.zeros(D))
        self.init_weights()

    def init_weights(self) -> None:
        """All initialisation in one place, as the official TRM: see docs/architecture.md."""
        D = self.cfg.d_model
        trunc_normal_(self.embed.weight, std=1.0 / math.sqrt(D))  # scaled by sqrt(D) at use
        for module in self.modules():
            if isinstance(module, nn.Linear):
                init_linear_(module)
        if hasattr(self, "pos_emb"):
            trunc_normal_(self.pos_emb, std=1.0 / math.sqrt(D))
        grid = [p for p in (getattr(self, n, None) for n in ("row_emb", "col_emb", "box_emb"))
                if p is not None]
        for table in grid:  # their sum has the std of one learned position vector
            trunc_normal_(table, std=1.0 / math.sqrt(D * len(grid)))
        if hasattr(self, "prefix_pos_emb"):
            trunc_normal_(self.prefix_pos_emb, std=1.0 / math.sqrt(D))
        if hasattr(self, "rel_bias"):
            c = self.cfg
            with torch.no_grad():
                if c.grid_bias_prior == "peers":
                    rel, box = peers_prior(c.grid_side, c.n_heads, c.grid_bias_slope)
                    self.rel_bias.copy_(rel)
                    if hasattr(self, "box_bias"):  # (a slope > 0 with peers needs grid_box)
                        self.box_bias.copy_(box)
                else:
                    self.rel_bias.copy_(locality_prior(c.grid_side, c.n_heads, c.grid_bias_slope))
        # Q head starts at "never halt": weight 0, bias -5 (official trm.py).
        nn.init.zeros_(self.q_head.weight)
        nn.init.constant_(self.q_head.bias, -5.0)
        trunc_normal_(self.init_y, std=1.0)
        trunc_normal_(self.init_z, std=1.0)

    # -- inputs ------------------------------------------------------------------------------
    def embed_inputs(self, tokens: Tensor, puzzle_ids: Tensor | None = None) -> Tensor:
        """tokens (B, L) -> x (B, P + L, D) with the puzzle-id prefix in front."""
        e = self.embed(tokens)  # (B, L, D)
        P = self.cfg.puzzle_emb_len
        if P > 0:
            B = tokens.shape[0]
            prefix = e.new_zeros(B, P, e.shape[-1])  # (B, P, D): only position 0 is learned,
            if puzzle_ids is None:                     # the rest act as registers
                puzzle_ids = torch.zeros(B, dtype=torch.long, device=tokens.device)
            prefix[:, 0] = self.puzzle_emb[puzzle_ids].to(e.dtype)
            e = torch.cat([prefix, e], dim=1)
        if hasattr(self, "pos_emb"):
            e = (e + self.pos_emb) * (1.0 / math.sqrt(2.0))  # official: 0.707 * (emb + pos)
        elif hasattr(self, "row_emb"):
            e = (e + self.grid_positions()) * (1.0 / math.sqrt(2.0))  # as the learned positions
        return self.embed_scale * e

    def grid_positions(self) -> Tensor:
        """(P + L, D): row + column (+ box) vector of every cell, after the prefix's own vectors."""
        pos = self.row_emb[self.grid_rows] + self.col_emb[self.grid_cols]  # (L, D)
        if hasattr(self, "box_emb"):
            pos = pos + self.box_emb[self.grid_boxes]
        if hasattr(self, "prefix_pos_emb"):
            pos = torch.cat([self.prefix_pos_emb, pos], dim=0)
        return pos

    def attn_context(self, device: torch.device) -> AttnContext:
        rope = None
        if hasattr(self, "rotary"):
            rope = self.rotary.tables(torch.arange(self.cfg.total_len, device=device))
        elif hasattr(self, "grid_cos"):
            rope = (self.grid_cos, self.grid_sin)
        return AttnContext(self_mask="full", rope=rope,
                           bias=self.grid_bias() if hasattr(self, "rel_bias") else None)

    def grid_bias(self) -> Tensor:
        """(H, P + L, P + L) attention-logit bias: per (row, column) offset, + box; 0 at the prefix."""
        bias = self.rel_bias[:, self.grid_offset]  # (H, L, L)
        if hasattr(self, "box_bias"):
            bias = bias + self.box_bias[:, None, None] * self.grid_same_box
        P = self.cfg.puzzle_emb_len
        return torch.nn.functional.pad(bias, (P, 0, P, 0)) if P else bias

    def initial_state(self, batch: int, device: torch.device | None = None) -> RecursionState:
        """The fixed initial (y, z) vectors broadcast to (B, P + L, D)."""
        shape = (batch, self.cfg.total_len, self.cfg.d_model)
        y = self.init_y.to(device) if device is not None else self.init_y
        z = self.init_z.to(device) if device is not None else self.init_z
        return RecursionState(y.expand(shape).clone(), z.expand(shape).clone())

    # -- one supervision step ------------------------------------------------------------------
    def forward(self, state: RecursionState, tokens: Tensor, puzzle_ids: Tensor | None = None,
                grad: GradMode = "last_cycle") -> StepOutput:
        x = self.embed_inputs(tokens, puzzle_ids)
        new = self.core.supervision_step(state, x, self.attn_context(tokens.device), grad=grad)
        P = self.cfg.puzzle_emb_len
        logits = self.head(new.y[:, P:])  # (B, L, V)
        q = self.q_head(new.y[:, 0]).float()  # (B, 1 or 2)
        return StepOutput(state=new.detach(), logits=logits, q_halt=q[:, 0],
                          q_continue=q[:, 1] if self.cfg.act_continue else None)

    def num_parameters(self, exclude_puzzle_emb: bool = True) -> int:
        return sum(p.numel() for n, p in self.named_parameters()
                   if not (exclude_puzzle_emb and n == "puzzle_emb"))
