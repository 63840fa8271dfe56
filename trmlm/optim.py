"""Optimisers: AdamW with linear warmup, sign-SGD for puzzle embeddings, and weight EMA."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from trmlm.config import TrainConfig


class SignSGD(torch.optim.Optimizer):
    """p <- p (1 - lr wd) - lr sign(g), only on rows that received a gradient (official TRM's
    sparse puzzle-embedding optimiser: untouched ids are neither moved nor decayed)."""

    def __init__(self, params, lr: float, weight_decay: float) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch API
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                touched = (g != 0).flatten(1).any(-1) if g.dim() > 1 else g != 0  # (rows,)
                if not bool(touched.any()):
                    continue
                rows = touched.nonzero().squeeze(-1)
                p[rows] = p[rows] * (1 - lr * wd) - lr * torch.sign(g[rows])
        return None


def run_progress(step: int, train_steps: int, spent_s: float, budget_s: float) -> float:
    """How far a run is through its budget, in [0, 1]: steps or time, whichever is nearer its end
    (`budget_s` 0 = no time budget)."""
    progress = step / train_steps
    if budget_s > 0:
        progress = max(progress, spent_s / budget_s)
    return min(1.0, max(0.0, progress))


def decay_factor(progress: float, frac: float, floor: float) -> float:
    """The tail of a warmup-stable-decay schedule: 1 until the last `frac` of the run, then
    linear down to `floor` at its end (progress 1). `frac` 0 = no decay."""
    if frac <= 0 or progress <= 1.0 - frac:
        return 1.0
    return floor + (1.0 - floor) * max(0.0, 1.0 - progress) / frac


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warmup to 1, then constant (paper; official cosine with min ratio 1.0)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def build_optimizers(model: nn.Module, cfg: TrainConfig, fused: bool = False
                     ) -> list[torch.optim.Optimizer]:
    """AdamW for the network; sign-SGD for the puzzle-embedding table if the model has one."""
    main = [p for n, p in model.named_parameters() if n != "puzzle_emb" and p.requires_grad]
    opts: list[torch.optim.Optimizer] = [torch.optim.AdamW(
        main, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
        fused=fused or None)]
    emb = getattr(model, "puzzle_emb", None)
    if isinstance(emb, nn.Parameter):
        opts.append(SignSGD([emb], lr=cfg.puzzle_emb_lr, weight_decay=cfg.puzzle_emb_weight_decay))
    return opts


class EMA:
    """Exponential moving average of a model's parameters and buffers (evaluation uses it)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
                       for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.is_floating_point():
                s.lerp_(v.detach().float(), 1.0 - self.decay)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)
