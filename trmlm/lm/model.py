"""The per-token recursive LM (one (y, z) state per token, TRMCore reused) and the transformer baselines."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from trmlm.core import GradMode, RecursionState, TRMCore
from trmlm.layers import KV, AttnContext, ReasoningNet, Rotary, init_linear_, trunc_normal_
from trmlm.lm.config import LMConfig


def strictly_lower(length: int, device: torch.device) -> Tensor:
    """(L, L) bool: query i may read committed entry j iff j < i (its own entry is its live K/V)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril(-1)


class _LMBase(nn.Module):
    """Token embedding (scaled by sqrt D), RoPE tables and the LM head shared by every arch."""

    kind: str = ""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        net = cfg.model
        self.embed_scale = math.sqrt(net.d_model)
        self.embed = nn.Embedding(net.vocab_size, net.d_model)
        self.rotary = Rotary(net.head_dim, net.seq_len, net.rope_theta)
        self.head = nn.Linear(net.d_model, net.vocab_size, bias=False)

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.embed_scale * self.embed(tokens)  # (B, L, D)

    def rope(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        return self.rotary.tables(positions)

    def init_weights(self) -> None:
        """All initialisation in one place: LeCun truncated normal for every linear (official TRM),
        embedding std 1/sqrt(D) (scaled by sqrt(D) at use); model-specific extras in subclasses."""
        trunc_normal_(self.embed.weight, std=1.0 / math.sqrt(self.cfg.model.d_model))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                init_linear_(module)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def cache_layers(self) -> int:
        """Layers whose (K, V) the decoder commits per token."""
        raise NotImplementedError


class TRMLanguageModel(_LMBase):
    """docs/language-model.md: x_i = Embed(t_i); (y_i, z_i) refined by TRMCore; head(y_i) predicts t_{i+1};
    q_head(y_i) is the per-token halt logit. Every call of f reads committed (K, V) of earlier
    tokens (`prefix`) plus the token's own live K/V (self_mask="diagonal")."""

    kind = "trm"

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__(cfg)
        D = cfg.model.d_model
        self.core = TRMCore(cfg.model)
        self.q_head = nn.Linear(D, 1, bias=True)
        self.register_buffer("init_y", torch.zeros(D))
        self.register_buffer("init_z", torch.zeros(D))
        self.init_weights()

    def init_weights(self) -> None:
        super().init_weights()
        # Halt head starts at "never halt" (official trm.py: q_head weight 0, bias -5).
        nn.init.zeros_(self.q_head.weight)
        nn.init.constant_(self.q_head.bias, -5.0)
        trunc_normal_(self.init_y, std=1.0)
        trunc_normal_(self.init_z, std=1.0)

    @property
    def cache_layers(self) -> int:
        return self.cfg.model.n_layers

    def initial_state(self, batch: int, length: int) -> RecursionState:
        shape = (batch, length, self.cfg.model.d_model)
        return RecursionState(self.init_y.expand(shape).clone(), self.init_z.expand(shape).clone())

    def commit_input(self, x: Tensor, state: RecursionState) -> Tensor:
        """What a finished token hands to its successors: f runs once over this (B, L, D).
        "x+y+z" (default): the token's embedding, its answer state and its latent reasoning state
        (intermediate results such as carries), so the committed K/V carry the token itself even
        where its states hold nothing else (e.g. a random operand digit);
        "x+y": embedding and answer state; "y": the answer state alone (ablations; "y" was the
        first design's choice); "x": the embedding alone, so the committed K/V are those of a causal
        call of f over the tokens, the same whatever the states, depth or exit of any token."""
        kind = self.cfg.commit_input
        if kind == "x":
            return x
        if kind == "y":
            return state.y
        return x + state.y + state.z if kind == "x+y+z" else x + state.y

    @property
    def cache_reads_state(self) -> bool:
        """False for commit_input "x": no token's states reach the cache (one Jacobi sweep is
        exact, training needs no final_sweep pass)."""
        return self.cfg.commit_input != "x"

    def commit_kv(self, x: Tensor, state: RecursionState, positions: Tensor,
                  prefix: list[KV] | None = None) -> list[KV]:
        """The commit pass: one ordinary causal call of f over commit_input(x, state) (B, L, D),
        reading `prefix` (committed entries of all earlier tokens); returns each layer's own
        (K, V) (B, H, L, Dh). The last layer stops at its K/V (nothing reads its output)."""
        ctx = AttnContext(self_mask="causal", rope=self.rope(positions), prefix=prefix)
        return self.core.f.commit_kv(self.commit_input(x, state), ctx)

    def refine(self, state: RecursionState, x: Tensor, positions: Tensor, prefix: list[KV],
               prefix_mask: Tensor | None, grad: GradMode = "last_cycle") -> RecursionState:
        """One supervision step (T cycles of n + 1 calls of f) of every position against `prefix`."""
        ctx = AttnContext(self_mask="diagonal", rope=self.rope(positions), prefix=prefix,
                          prefix_mask=prefix_mask)
        return self.core.supervision_step(state, x, ctx, grad=grad)

    def logits(self, y: Tensor) -> Tensor:
        return self.head(y)  # (B, L, V)

    def halt_logit(self, y: Tensor) -> Tensor:
        return self.q_head(y).squeeze(-1).float()  # (B, L)


class TransformerLM(_LMBase):
    """Baselines: a plain causal transformer of the same ReasoningNet blocks, applied once.

    arch "transformer": net.n_layers blocks (the TRM's parameters minus its halt head).
    arch "transformer-iso": cfg.depth_iso distinct blocks = the layers one TRM supervision step
    applies, T (n + 1) layers, so its forward FLOPs per token equal one TRM supervision step's.
    """

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__(cfg)
        self.kind = cfg.arch
        depth = cfg.depth_iso if cfg.arch == "transformer-iso" else cfg.model.n_layers
        self.net = ReasoningNet(dataclasses.replace(cfg.model, n_layers=depth))
        self.depth = depth
        self.init_weights()

    @property
    def cache_layers(self) -> int:
        return self.depth

    def forward(self, tokens: Tensor, positions: Tensor | None = None,
                prefix: list[KV] | None = None) -> tuple[Tensor, list[KV]]:
        """Causal pass over tokens (B, L) reading `prefix`; returns logits (B, L, V) and the
        per-layer (K, V) to commit."""
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device)
        ctx = AttnContext(self_mask="causal", rope=self.rope(positions), prefix=prefix)
        h, kvs = self.net(self.embed_tokens(tokens), ctx, return_kv=True)
        return self.head(h), kvs


LanguageModel = TRMLanguageModel | TransformerLM


def build_model(cfg: LMConfig) -> LanguageModel:
    return TRMLanguageModel(cfg) if cfg.arch == "trm" else TransformerLM(cfg)
