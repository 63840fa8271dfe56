"""Layers of the network f: RMSNorm, RoPE, attention (mask + external K/V prefix), SwiGLU, blocks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trmlm.config import TRMConfig, swiglu_width

SelfMask = Literal["full", "causal", "diagonal"]
KV = tuple[Tensor, Tensor]  # (B, H, P, Dh) keys and values, RoPE already applied to keys


def rms_norm(x: Tensor, eps: float) -> Tensor:
    """RMSNorm without weight, computed in fp32 (official TRM layers.py)."""
    # F.rms_norm = x * rsqrt(mean(x^2) + eps), fused (4-5x faster on CPU than the composite)
    return F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def trunc_normal_(t: Tensor, std: float) -> Tensor:
    """Truncated normal in [-2 std, 2 std] whose *actual* std is `std` (JAX/official TRM style)."""
    # The std of a unit normal truncated to [-2, 2] is ~0.8796; compensate so the result has `std`.
    with torch.no_grad():
        nn.init.trunc_normal_(t, mean=0.0, std=1.0, a=-2.0, b=2.0)
        t.mul_(std / 0.87962566103423978)
    return t


class Rotary(nn.Module):
    """Rotary position embedding tables; positions are passed explicitly (they advance outside)."""

    def __init__(self, head_dim: int, max_positions: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        pos = torch.arange(max_positions, dtype=torch.float32)
        freqs = torch.outer(pos, inv_freq)  # (P, Dh/2)
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)

    def tables(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        if int(positions.max()) >= self.cos.shape[0]:
            raise ValueError(f"position {int(positions.max())} beyond the RoPE table ({self.cos.shape[0]})")
        return self.cos[positions], self.sin[positions]  # (L, Dh/2) each


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (first half, second half) of the head dim. x: (B, H, L, Dh); cos, sin
    (L, Dh/2), or (B, L, Dh/2) where each row has its own positions."""
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = (cos[:, None], sin[:, None]) if cos.dim() == 3 else (cos[None, None], sin[None, None])
    out = torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)
    return out.to(x.dtype)


@dataclass
class AttnContext:
    """How the positions of one call of f see each other and the outside.

    self_mask: "full" (puzzles), "causal" (an ordinary causal pass, e.g. the LM commit pass), or
        "diagonal" (each position sees only its own current key/value: LM refinement, where the
        other positions are read from a committed prefix instead).
    rope: (cos, sin) tables for the L query positions, (L, Dh/2) or per row (B, L, Dh/2), or None.
    prefix: per layer, committed (K, V) of shape (B, H, P, Dh) that every query may read, or None.
    prefix_mask: (L, P) or per row (B, L, P) bool, True = query l may read prefix entry p; None =
        all visible.
    bias: (H, L, L) float added to the attention logits (puzzles' 2-D relative position bias), or
        None; only with self_mask "full" and no prefix.
    """

    self_mask: SelfMask = "full"
    rope: tuple[Tensor, Tensor] | None = None
    prefix: list[KV] | None = None
    prefix_mask: Tensor | None = None
    bias: Tensor | None = None


def _self_mask_matrix(kind: SelfMask, length: int, device: torch.device) -> Tensor | None:
    if kind == "full":
        return None
    if kind == "causal":
        return torch.ones(length, length, dtype=torch.bool, device=device).tril()
    return torch.eye(length, dtype=torch.bool, device=device)


try:  # the `gpu` extra; CUDA only (SDPA, which has its own flash kernel, is the fallback)
    from flash_attn import flash_attn_func as _flash_attn_func
except ImportError:  # pragma: no cover - depends on the machine
    _flash_attn_func = None


def _use_flash_attn(q: Tensor) -> bool:
    return _flash_attn_func is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def _flash_attn(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    """flash-attn takes (B, L, H, Dh); ours are (B, H, L, Dh)."""
    o = _flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal)
    return o.transpose(1, 2)  # (B, H, L, Dh)


class Attention(nn.Module):
    """Multi-head attention via SDPA; may read an external K/V prefix (the LM's committed cache)."""

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, h: Tensor, ctx: AttnContext, prefix: KV | None) -> tuple[Tensor, KV]:
        B, L, D = h.shape
        qkv = self.qkv(h).view(B, L, 3, self.n_heads, self.head_dim)  # (B, L, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, Dh)
        if ctx.rope is not None:
            cos, sin = ctx.rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        own = (k, v)
        mask = _self_mask_matrix(ctx.self_mask, L, h.device)
        if ctx.bias is not None:
            if prefix is not None or ctx.self_mask != "full":
                raise ValueError("an attention bias needs a full self-mask and no K/V prefix")
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.bias.to(q.dtype))
        elif prefix is not None:
            pk, pv = prefix
            P = pk.shape[2]
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)  # (B, H, P + L, Dh)
            if ctx.prefix_mask is None and (mask is None or L == 1):
                # Every query reads every key (cached decoding: one token, its prefix and itself):
                # no mask, so SDPA may take its fused kernel.
                o = F.scaled_dot_product_attention(q, k, v)
            else:
                pmask = ctx.prefix_mask
                if pmask is None:
                    pmask = torch.ones(L, P, dtype=torch.bool, device=h.device)
                if mask is None:
                    mask = torch.ones(L, L, dtype=torch.bool, device=h.device)
                if pmask.dim() == 3:  # per row (gathered query positions): (B, 1, L, P + L)
                    mask = torch.cat([pmask, mask.expand(B, L, L)], dim=2)[:, None]
                else:
                    mask = torch.cat([pmask, mask], dim=1)  # (L, P + L)
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif ctx.self_mask in ("full", "causal") and _use_flash_attn(q):
            o = _flash_attn(q, k, v, causal=ctx.self_mask == "causal")
        elif ctx.self_mask == "causal":
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        o = o.transpose(1, 2).reshape(B, L, D)  # (B, L, H * Dh)
        return self.out(o), own

    def own_kv(self, h: Tensor, ctx: AttnContext) -> KV:
        """This layer's (K, V) of h (B, H, L, Dh) alone, as forward returns them."""
        B, L, _ = h.shape
        kv = F.linear(h, self.qkv.weight[h.shape[-1]:])  # the K and V rows of the projection
        k, v = kv.view(B, L, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if ctx.rope is not None:
            k = apply_rope(k, *ctx.rope)
        return k, v


class SwiGLU(nn.Module):
    """SwiGLU feed-forward: down(silu(gate) * up)."""

    def __init__(self, d_in: int, expansion: float, multiple: int) -> None:
        super().__init__()
        width = swiglu_width(d_in, expansion, multiple)
        self.gate_up = nn.Linear(d_in, 2 * width, bias=False)
        self.down = nn.Linear(width, d_in, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """Post-norm block: h = norm(h + mix(h)); h = norm(h + swiglu(h)) (official TRM)."""

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.eps = cfg.norm_eps
        self.mixer = cfg.mixer
        if cfg.mixer == "attention":
            self.attn = Attention(cfg)
        else:
            # MLP-mixer variant (TRM Sudoku-MLP): a SwiGLU over the sequence axis, no positions.
            self.token_mlp = SwiGLU(cfg.total_len, cfg.expansion, cfg.swiglu_multiple)
        self.mlp = SwiGLU(cfg.d_model, cfg.expansion, cfg.swiglu_multiple)

    def forward(self, h: Tensor, ctx: AttnContext, prefix: KV | None) -> tuple[Tensor, KV | None]:
        kv = None
        if self.mixer == "attention":
            a, kv = self.attn(h, ctx, prefix)
            h = rms_norm(h + a, self.eps)
        else:
            if ctx.self_mask != "full" or prefix is not None:
                raise ValueError("the MLP mixer cannot be causal or read a K/V prefix")
            ht = h.transpose(1, 2)  # (B, D, L)
            # The official code normalises over positions here (a quirk we keep: it is what
            # produced the paper's 87.4% Sudoku-MLP result).
            h = rms_norm(ht + self.token_mlp(ht), self.eps).transpose(1, 2)  # (B, L, D)
        h = rms_norm(h + self.mlp(h), self.eps)
        return h, kv


class ReasoningNet(nn.Module):
    """The tiny network f: a stack of blocks. Optionally returns each layer's own (K, V)."""

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))

    def forward(self, h: Tensor, ctx: AttnContext, return_kv: bool = False
                ) -> Tensor | tuple[Tensor, list[KV]]:
        kvs: list[KV] = []
        for i, block in enumerate(self.blocks):
            prefix = ctx.prefix[i] if ctx.prefix is not None else None
            h, kv = block(h, ctx, prefix)
            if return_kv:
                kvs.append(kv)
        return (h, kvs) if return_kv else h

    def commit_kv(self, h: Tensor, ctx: AttnContext) -> list[KV]:
        """Every layer's own (K, V), as forward(return_kv=True) gives them, without the last
        layer's attention output and MLP, which no K/V depends on (the LM's commit pass)."""
        kvs: list[KV] = []
        for i, block in enumerate(self.blocks[:-1]):
            h, kv = block(h, ctx, ctx.prefix[i] if ctx.prefix is not None else None)
            kvs.append(kv)
        kvs.append(self.blocks[-1].attn.own_kv(h, ctx))
        return kvs


def init_linear_(layer: nn.Linear) -> None:
    """LeCun truncated normal (std 1/sqrt(fan_in)), as the official CastedLinear."""
    trunc_normal_(layer.weight, std=1.0 / math.sqrt(layer.in_features))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
