"""Halt-head calibration: the halting head refitted on the states sequential decoding reaches.

Training fits q against the states of the training pass; decoding visits other states (its cache
holds the halted states of earlier tokens, and with step_weights=last the early steps are never
trained to be right), so a trained head can halt where a later step still helps and continue
where nothing will change. Calibration keeps every weight of f and of the output head, and
refits only q_head (a linear probe on y) on labels computed from the states decoding reaches:

  1. cache: the states that decoding under the current exit commits, from `sweeps` Jacobi
     sweeps (parallel.jacobi_states; exact for the first `sweeps` positions, close after);
  2. every position refined from its initial state against that cache for max_steps steps,
     recording y_s and the next-token loss CE_s;
  3. label (`label="loss"`): halt after step s unless a later step lowers the loss by more than
     `margin` nats, halt_s = 1 - sigmoid(scale (max(0, CE_s - min_{s' > s} CE_{s'}) - margin))
     (the `final` target's form, against the best *later* step instead of the last one: the
     oracle's choice under the constraint of stopping once). `label="argmax"` judges what greedy
     decoding keeps, the step's top token: halt after step s if it is the true next token or if
     no later step's is (the paper's halting target, "is the current answer right", plus "more
     steps will not make it right");
  4. q_head fitted by BCE on the steps before the last (the last step always stops).

Round r + 1 reads the cache committed under the head fitted in round r, so the labels come from
the states that the refitted exit itself makes decoding reach. docs/lm-experiments.md has the
measured effect ("Halting calibrated on decoding's states")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from trmlm.errors import TRMError
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.model import TRMLanguageModel, strictly_lower
from trmlm.lm.objective import halt_label
from trmlm.lm.parallel import jacobi_states, level_states
from trmlm.lm.tasks.base import Example, TextTask
from trmlm.lm.tasks.score import score_task
from trmlm.lm.tokenizer import Tokenizer
from trmlm.losses import token_cross_entropy


@dataclass
class CalibrationConfig:
    # nats: a later step that lowers the token's loss by less is not worth waiting for (chosen on
    # the arithmetic validation problems: 0.02 for all positions, 0.005 with --scored targets)
    margin: float = 0.02
    scale: float = 50.0      # label sharpness, as the `final` halt target's improvement_scale
    max_steps: int = 0       # depth labelled (the deepest the exit may go); 0 = N_sup
    threshold: float = 0.5   # the exit the head is fitted for: the next round's cache halts at it
    rounds: int = 2
    sweeps: int = 4          # Jacobi sweeps behind each round's cache
    iters: int = 400         # full-batch Adam steps of the fit
    lr: float = 1e-2
    chunk: int = 32          # windows per no-grad pass
    label: str = "loss"      # loss: a later step lowers the loss by > margin | argmax: top token right

    def __post_init__(self) -> None:
        if self.label not in ("loss", "argmax"):
            raise ValueError(f"label must be loss or argmax, got {self.label!r}")
        if self.margin < 0 or self.scale <= 0:
            raise ValueError("margin must be >= 0 and scale > 0")
        if self.max_steps < 0 or self.rounds < 1 or self.sweeps < 1 or self.iters < 1 or self.chunk < 1:
            raise ValueError("max_steps must be >= 0; rounds, sweeps, iters and chunk >= 1")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.lr <= 0:
            raise ValueError("lr must be > 0")


@torch.no_grad()
def step_states(model: TRMLanguageModel, tokens: Tensor, targets: Tensor, max_steps: int,
                policy: HaltPolicy, sweeps: int, loss: str = "softmax", refine: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
    """y_s (S, B, L, D), CE_s (S, B, L) and whether the top token is the target, right_s (S, B, L),
    after every step s = 1..max_steps of every position, each refined from its initial state
    against the cache that decoding under `policy` commits (cache_levels: the level decoder's
    states at full depth; `refine` (B, L): the positions it refines, refine_on "loss")."""
    B, L = tokens.shape
    x = model.embed_tokens(tokens)  # (B, L, D)
    if model.cfg.cache_levels:
        ys = [st.y for st in level_states(model, x, max_steps, refine)]
    else:
        committed, _ = jacobi_states(model, tokens, sweeps, policy)
        positions = torch.arange(L, device=tokens.device)
        kvs = model.commit_kv(x, committed, positions)
        mask = strictly_lower(L, tokens.device)
        state = model.initial_state(B, L)
        ys = []
        for _ in range(max_steps):
            state = model.refine(state, x, positions, kvs, mask, grad="none")
            ys.append(state.y)
    logits = [model.logits(y) for y in ys]
    return (torch.stack(ys), torch.stack([token_cross_entropy(lg, targets, loss) for lg in logits]),
            torch.stack([lg.argmax(-1) == targets for lg in logits]))


def max_over_later_steps(x: Tensor, empty: float) -> Tensor:
    """(S, ...): at step s the maximum of x over the steps after s; `empty` at the last step."""
    later = torch.full_like(x, empty)
    for s in range(x.shape[0] - 2, -1, -1):
        later[s] = torch.maximum(later[s + 1], x[s + 1])
    return later


def halt_labels(ce: Tensor, margin: float, scale: float) -> Tensor:
    """Soft halt labels (S, B, L) from per-step losses (S, B, L): after step s, halt unless some
    later step lowers the loss by more than `margin`. The last step is labelled 1."""
    later_best = -max_over_later_steps(-ce, float("-inf"))  # the lowest later loss (+inf at the last step)
    labels = halt_label(ce - later_best, scale, margin)  # (-inf at the last step, clamped to 0)
    labels[-1] = 1.0
    return labels


def argmax_labels(right: Tensor) -> Tensor:
    """Hard halt labels (S, B, L) from whether each step's top token is the target (S, B, L):
    after step s, halt if it is, or if no later step's is. The last step is labelled 1."""
    right = right.float()
    later = max_over_later_steps(right, 0.0)  # 1: some step after s has the target on top
    return torch.maximum(right, 1.0 - later)


def fit_halt_head(model: TRMLanguageModel, ys: Tensor, labels: Tensor, iters: int, lr: float) -> float:
    """Refit q_head alone on (y_s, label_s) of the steps before the last (full batch, Adam)."""
    D = ys.shape[-1]
    head = model.q_head
    feats = ys[:-1].reshape(-1, D).to(head.weight.dtype)
    target = labels[:-1].reshape(-1).float()
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    loss = torch.zeros(())
    with torch.enable_grad():
        for _ in range(iters):
            opt.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(head(feats).squeeze(-1).float(), target)
            loss.backward()
            opt.step()
    return float(loss.detach())


def exit_steps(model: TRMLanguageModel, ys: Tensor, threshold: float) -> Tensor:
    """(B, L) the step at which the head stops each position on these states (the last if never)."""
    with torch.no_grad():
        fire = torch.sigmoid(model.halt_logit(ys)) >= threshold  # (S, B, L)
    fire[-1] = True
    return fire.float().argmax(0) + 1


def calibrate_halting(model: TRMLanguageModel, windows: Tensor, cfg: CalibrationConfig,
                      scored: Tensor | None = None,
                      on_round: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Refit model.q_head in place on windows (W, L + 1) of training-distribution text (module
    docstring). `scored` (W, L) bool: the positions whose prediction counts (None = all); the
    others are labelled "halt now" at every step (a task scored on its answers never reads the
    prediction made at a prompt token; that token's state still reaches the cache, and the
    next round's labels see the cache it makes). Returns a report: per round the mean label
    per step, the fit's BCE, the mean exit step and the oracle's mean step on the same states."""
    model.eval()
    M = cfg.max_steps or model.cfg.model.max_sup_steps
    loss_kind = model.cfg.train.loss
    policy = HaltPolicy.fixed(M)  # round 1: the full-depth cache
    rounds = []
    refine = None
    if model.cfg.cache_levels and model.cfg.unscored_steps is not None:  # it refines the scored positions alone in full
        if scored is None:
            raise TRMError(f"a model trained with refine_on={model.cfg.refine_on} is calibrated on its scored "
                           "positions (--scored targets)")
        refine = scored.to(windows.device).split(cfg.chunk)
    for r in range(cfg.rounds):
        ys, ces, rights = [], [], []
        for i, w in enumerate(windows.split(cfg.chunk)):
            y, ce, right = step_states(model, w[:, :-1], w[:, 1:], M, policy, cfg.sweeps, loss_kind,
                                       None if refine is None else refine[i])
            ys.append(y)
            ces.append(ce)
            rights.append(right)
        y, ce = torch.cat(ys, dim=1), torch.cat(ces, dim=1)  # (S, W, L, D), (S, W, L)
        if cfg.label == "argmax":
            labels = argmax_labels(torch.cat(rights, dim=1))
        else:
            labels = halt_labels(ce, cfg.margin, cfg.scale)
        if scored is not None:
            labels = torch.where(scored.to(labels.device)[None], labels, torch.ones_like(labels))
        bce = fit_halt_head(model, y, labels, cfg.iters, cfg.lr)
        steps = exit_steps(model, y, cfg.threshold)
        row = {"round": r + 1, "cache": "full depth" if r == 0 else f"learned exit at {cfg.threshold:g}",
               "mean_label_per_step": [round(float(v), 4) for v in labels.mean(dim=(1, 2))],
               "bce": round(bce, 4), "mean_exit_step": round(float(steps.float().mean()), 3),
               "oracle_mean_step": round(float(ce.argmin(0).float().mean()) + 1, 3),
               "tokens": int(ce[0].numel())}
        rounds.append(row)
        if on_round is not None:
            on_round(row)
        policy = HaltPolicy(max_steps=M, threshold=cfg.threshold)
    return {"label": cfg.label, "margin": cfg.margin, "scale": cfg.scale, "max_steps": M, "threshold": cfg.threshold,
            "sweeps": cfg.sweeps, "windows": int(windows.shape[0]),
            "scored_share": 1.0 if scored is None else round(float(scored.float().mean()), 4), "rounds": rounds}


def pick_threshold(rows: list[dict[str, Any]], full_exact: float, tolerance: float) -> dict[str, Any]:
    """The exit threshold to store, from validation rows {"threshold", "exact_acc", "steps_mean"}:
    among the thresholds within `tolerance` of full depth's exact accuracy, the one spending the
    fewest mean steps per token (the higher threshold on a tie); when none is within it, the most
    accurate (the fewer steps on a tie). Returns that row."""
    if not rows:
        raise ValueError("no candidate thresholds to pick from")
    ok = [r for r in rows if r["exact_acc"] >= full_exact - tolerance]
    if ok:
        return min(ok, key=lambda r: (r["steps_mean"], -r["threshold"]))
    return max(rows, key=lambda r: (r["exact_acc"], -r["steps_mean"]))


def threshold_sweep(model: TRMLanguageModel, tokenizer: Tokenizer, task: TextTask, examples: list[Example],
                    candidates: list[float], max_steps: int, tolerance: float,
                    on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Greedy real-cache decoding of `examples` (the validation problems, never the test ones) at
    fixed depth max_steps and under the learned exit at every candidate threshold; the pick is
    pick_threshold's. The head is the calibrated one: this chooses where it is read, not what."""
    def decode(policy: HaltPolicy) -> dict[str, Any]:
        rep = score_task(model, tokenizer, task, examples, policy, teacher_forced=False)
        return {"exact_acc": rep["exact_acc"], "steps_mean": round(rep["steps_mean"], 4)}

    full = decode(HaltPolicy.fixed(max_steps))
    if on_row is not None:
        on_row({"threshold": None, **full})
    rows = []
    for t in sorted(set(candidates)):
        rows.append({"threshold": t, **decode(HaltPolicy(max_steps=max_steps, threshold=t))})
        if on_row is not None:
            on_row(rows[-1])
    best = pick_threshold(rows, full["exact_acc"], tolerance)
    return {"problems": len(examples), "tolerance": tolerance, "full_depth": full, "rows": rows,
            "picked": best["threshold"], "within_tolerance": best["exact_acc"] >= full["exact_acc"] - tolerance}
