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
        return self.embed_scale * e

    def attn_context(self, device: torch.device) -> AttnContext:
        rope = None
        if hasattr(self, "rotary"):
            rope = self.rotary.tables(torch.arange(self.cfg.total_len, device=device))
        return AttnContext(self_mask="full", rope=rope)

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
