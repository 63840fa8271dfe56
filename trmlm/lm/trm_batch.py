"""The TRM LM's training batch (docs/language-model.md, "Training"): N_sup supervision steps as
Jacobi sweeps over the window, the training caches, and the positions that are refined."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from trmlm.distributed import DeepSpeedStepper
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.objective import halt_loss, masked_mean, step_log, step_weights
from trmlm.lm.parallel import (commit_pass, final_sweep_states, loss_positions, put_positions, refine_at,
                               step_commit, supervision_sweep, take_positions, take_state)
from trmlm.losses import token_cross_entropy

if TYPE_CHECKING:
    from trmlm.distributed import Stepper
    from trmlm.lm.config import LMConfig
    from trmlm.lm.model import TRMLanguageModel
    from trmlm.runtime import Runtime


class TRMBatches:
    """Mixed into the Trainer: what one TRM batch does. Uses the trainer's cfg, model, runtime,
    stepper, rng, `_update` (one optimizer step), `_budget_left` and `_progress`."""

    cfg: LMConfig
    model: TRMLanguageModel
    runtime: Runtime
    stepper: Stepper
    rng: np.random.Generator

    def _train_trm_batch(self, inp: Tensor, tgt: Tensor, mask: Tensor | None,
                         step_tgt: Tensor | None = None) -> list[dict[str, float]]:
        """The TRM's batch: N_sup supervision steps of every position (or, refine_on "loss", of
        the positions with loss only), each its own optimizer step (updates=per_step) or all
        summed into one (per_batch); updates=sampled trains one step at a random depth.
        `step_tgt` (N_sup, B, L), step_targets: step s's targets in place of `tgt`."""
        cfg, model = self.cfg, self.model
        if cfg.updates == "sampled":
            return [self._train_sampled(inp, tgt, mask)]
        per_batch = cfg.updates == "per_batch"
        state = full_state = model.initial_state(*inp.shape)
        # refine_on "loss" / "cached": from step `narrow_at` on (0 / cache_levels - 1) only the
        # positions with loss are refined, gathered per row; the others keep their state
        index, halt_mask, narrow_at = None, None, cfg.unscored_steps
        if narrow_at is not None:
            halt_mask = mask  # the halting head learns on the positions with loss alone
        history: list[tuple[Tensor, Tensor]] = []  # detached (y_s, CE_s) for the halting labels
        committed = None  # "previous_step": each step commits y^(s-1) (docs/language-model.md)
        if self._final_cache():
            policy = self._cache_policy()
            committed = final_sweep_states(model, model.embed_tokens(inp),
                                           cfg.cache_sweeps or cfg.model.max_sup_steps, policy)
        logs, total = [], None
        S, top = self._batch_depth(), cfg.model.max_sup_steps
        final_tgt = tgt
        # the last S of N_sup's weights: a drawn depth (train_depth_min, step_weights=last) trains
        # its last step at N_sup's weight, so the loss scale does not depend on the draw
        weights = step_weights(cfg.step_weights, top)[-S:]
        # commit_input "x": one commit pass (with grad) serves every step when the batch's only
        # update of f is its one weighted step. The halting loss's updates of the other steps reach
        # q_head alone, which the plain stepper's AdamW leaves f untouched by; DeepSpeed's optimizer
        # writes every parameter back at each step, so there each step commits afresh.
        kvs = None
        one_update_of_f = per_batch or (sum(w > 0 for w in weights) == 1
                                        and not isinstance(self.stepper, DeepSpeedStepper))
        if not model.cache_reads_state and one_update_of_f:
            with self.runtime.autocast():
                kvs = commit_pass(model, model.embed_tokens(inp), full_state, grad=cfg.commit_grad)
        def advance(state, weighted: bool):  # one supervision step from `state` (in autocast)
            x = model.embed_tokens(inp)
            grad = "last_cycle" if weighted else "none"
            if index is not None:  # (committed: the level's full states, with cache_levels)
                step_kvs = kvs if kvs is not None else commit_pass(
                    model, x, full_state if committed is None else committed, grad=cfg.commit_grad and weighted)
                return refine_at(model, state, take_positions(x, index), index, step_kvs, grad=grad)
            return supervision_sweep(model, state, x, commit_grad=cfg.commit_grad, committed=committed,
                                     cross_grad=cfg.cross_grad, kvs=kvs, grad=grad)

        for s in range(S):
            if not per_batch and s > 0 and not self._budget_left():
                break
            last = s == S - 1
            with self.runtime.autocast():
                if cfg.cache_levels and s == cfg.cache_levels - 1:
                    # cache_levels k: from step k on (hold steps too) every step reads the commit
                    # of these states, computed once with one update per batch (per_step updates
                    # change f in between, so there each step commits them afresh). refine_on
                    # "loss": the refined positions' states among the others' initial ones.
                    level = state if index is None else put_positions(full_state, index, halt_mask, state)
                    committed = level.detach()
                    if per_batch:
                        kvs = step_commit(model, model.embed_tokens(inp), level, grad=cfg.commit_grad,
                                          cross_grad=cfg.cross_grad)
            if s == narrow_at:  # (the targets, the mask, the state and the halting history, gathered)
                index, halt_mask = loss_positions(mask)
                final_tgt, mask = final_tgt.gather(1, index), halt_mask
                if step_tgt is not None:
                    step_tgt = step_tgt.gather(2, index.expand(step_tgt.shape[0], *index.shape))
                state = take_state(state, index)
                history = [(take_positions(y, index), ce.gather(1, index)) for y, ce in history]
            tgt = final_tgt if step_tgt is None else step_tgt[s]  # (step_targets: the config needs depth N_sup)
            with self.runtime.autocast():
                new = advance(state, weights[s] > 0)
                logits = model.logits(new.y)
                ce = token_cross_entropy(logits, tgt, cfg.train.loss)  # (B, L) or (B, S)
                # the halting head judges every step against the final targets (with step_targets
                # an early step's own target is an intermediate answer, not what decoding emits)
                ce_final = ce if step_tgt is None else token_cross_entropy(logits.detach(), final_tgt,
                                                                           cfg.train.loss)
                q_loss = halt_loss(cfg, model, new.y, logits, final_tgt, ce_final, history, last=last,
                                   mask=halt_mask)
                loss = cfg.train.halt_loss_weight * q_loss
                if weights[s] > 0:
                    loss = loss + weights[s] * masked_mean(ce, mask)
            if loss.requires_grad:  # (not a warm-up step of step_weights=last with nothing to train)
                if per_batch:
                    total = loss / top if total is None else total + loss / top
                else:
                    self._update(loss)
            logs.append(step_log(model, new.y, ce, mask, q_loss, s + 1))
            history.append((new.y.detach(), ce_final.detach()))
            # The carry is detached for the recursion (the core detaches it before the last
            # cycle); with cross_grad the commit of step s+1 still reaches this step's graph.
            state = new if cfg.cross_grad else new.detach()
        if per_batch:
            if cfg.hold_steps and self._progress() >= cfg.hold_from:
                total = total + self._hold_loss(advance, state, final_tgt, mask, weights[-1]) / top
            self._update(total)
        return logs

    def _hold_loss(self, advance, state, final_tgt: Tensor, mask: Tensor | None, weight: float) -> Tensor:
        """hold_steps: from the state after N_sup steps (detached unless cross_grad), k ~
        U{0..hold_steps-1} steps without grad, then one trained toward the final answer: depth
        N_sup + 1 + k keeps it."""
        with self.runtime.autocast():
            with torch.no_grad():
                for _ in range(int(self.rng.integers(0, self.cfg.hold_steps))):
                    state = advance(state, False)
            ce = token_cross_entropy(self.model.logits(advance(state, True).y), final_tgt, self.cfg.train.loss)
            return weight * masked_mean(ce, mask)

    def _train_sampled(self, inp: Tensor, tgt: Tensor, mask: Tensor | None) -> dict[str, float]:
        """updates=sampled: one optimizer step at supervision step s ~ U{1..N_sup}. Steps 1..s-1
        run without grad from the initial state; the cache (the final_sweep states' commit, or
        previous_step's) is what the per-step scheme reads, computed once for the no-grad steps.
        The halt head learns on the (detached) states of all s steps."""
        cfg, model = self.cfg, self.model
        s_grad = int(self.rng.integers(1, cfg.model.max_sup_steps + 1))
        loss_fn = cfg.train.loss
        state = model.initial_state(*inp.shape)
        history: list[tuple[Tensor, Tensor]] = []
        committed = reference = None
        with torch.no_grad(), self.runtime.autocast():
            x = model.embed_tokens(inp)
            if self._final_cache():
                committed = final_sweep_states(model, x, cfg.cache_sweeps or cfg.model.max_sup_steps,
                                               self._cache_policy())
                reference = token_cross_entropy(model.logits(committed.y), tgt, loss_fn)
            kvs = commit_pass(model, x, committed, grad=False) if committed is not None else None
            for _ in range(s_grad - 1):
                state = supervision_sweep(model, state, x, committed=committed, kvs=kvs, grad="none")
                history.append((state.y, token_cross_entropy(model.logits(state.y), tgt, loss_fn)))
        with self.runtime.autocast():
            new = supervision_sweep(model, state, model.embed_tokens(inp), commit_grad=cfg.commit_grad,
                                    committed=committed)
            logits = model.logits(new.y)
            ce = token_cross_entropy(logits, tgt, loss_fn)
            q_loss = halt_loss(cfg, model, new.y, logits, tgt, ce, history,
                               last=s_grad == cfg.model.max_sup_steps, reference=reference)
            loss = masked_mean(ce, mask) + cfg.train.halt_loss_weight * q_loss
        self._update(loss)
        return step_log(model, new.y, ce, mask, q_loss, s_grad)

    def _batch_depth(self) -> int:
        """This batch's supervision steps: N_sup, or with train_depth_min a depth drawn uniformly
        from train_depth_min..N_sup (only its last step is trained)."""
        top = self.cfg.model.max_sup_steps
        if not self.cfg.train_depth_min:
            return top
        return int(self.rng.integers(self.cfg.train_depth_min, top + 1))

    def _final_cache(self) -> bool:
        """Whether this batch's steps read the commit of a final_sweep pass (train_cache
        final_sweep, or mixed with p = 1/2). Never with the token cache: its commit reads no
        states, so every step's cache is already the final one."""
        cfg = self.cfg
        if not self.model.cache_reads_state:
            return False
        return cfg.train_cache == "final_sweep" or (cfg.train_cache == "mixed" and self.rng.random() < 0.5)

    def _cache_policy(self) -> HaltPolicy | None:
        """With cache_halting, the final_sweep pass stops each token where decoding would (the
        config's learned-halting threshold), so training reads the states decoding commits."""
        h = self.cfg.halt
        if not self.cfg.cache_halting:
            return None
        return HaltPolicy(max_steps=self.cfg.max_steps, min_steps=h.min_steps, threshold=h.threshold)
