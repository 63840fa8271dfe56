"""commit_input "x": the cache holds the tokens alone (docs/language-model.md, "The token cache")."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trmlm.cli.common import configs_dir
from trmlm.lm import trm_batch
from trmlm.lm.config import load_lm_config
from trmlm.lm.data import TokenData
from trmlm.lm.model import build_model
from trmlm.lm.parallel import supervision_sweep
from trmlm.lm.tokenizer import CharTokenizer
from trmlm.lm.train import Trainer


def _trainer(*extra: str) -> tuple[Trainer, torch.Tensor]:
    cfg = load_lm_config("lm-tiny", [], ["commit_input=x", "model.max_sup_steps=3", "train.halt_loss_weight=0",
                                         *extra], configs_dir())
    tok = CharTokenizer(list("abcdefgh"))
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tok.vocab_size))
    torch.manual_seed(0)
    model = build_model(cfg)
    data = TokenData(train=np.zeros(0, np.int64), val=np.zeros(64, np.int64), val_chars=64)
    batch = torch.randint(0, tok.vocab_size, (4, cfg.context + 1), generator=torch.Generator().manual_seed(1))
    return Trainer(cfg, model, tok, data), batch


def _grads_of_one_batch(trainer: Trainer, batch: torch.Tensor, monkeypatch) -> dict[str, torch.Tensor]:
    """The summed gradients of the batch's updates (the optimizer steps themselves left out)."""
    grads: dict[str, torch.Tensor] = {}

    def capture(loss: torch.Tensor) -> None:
        trainer.model.zero_grad(set_to_none=True)
        loss.backward()
        for k, p in trainer.model.named_parameters():
            if p.grad is not None:
                grads[k] = grads[k] + p.grad if k in grads else p.grad.clone()

    monkeypatch.setattr(trainer, "_update", capture)
    trainer.train_batch(batch)
    return grads


@pytest.mark.parametrize("train_cache", ["previous_step", "final_sweep"])
def test_one_shared_commit_pass_trains_what_the_per_step_passes_would(train_cache, monkeypatch):
    """step_weights=last with the token cache: the batch's one commit pass (with grad) read by
    every step gives the gradient of N_sup - 1 no-grad steps and a last step that recomputes
    the commit with grad; no final_sweep pass runs (it would commit the same tokens)."""
    trainer, batch = _trainer("step_weights=last", f"train_cache={train_cache}")
    model = trainer.model
    monkeypatch.setattr(trm_batch, "final_sweep_states", lambda *a, **k: pytest.fail("no final_sweep pass"))
    got = _grads_of_one_batch(trainer, batch, monkeypatch)
    inp, tgt = batch[:, :-1], batch[:, 1:]
    model.zero_grad(set_to_none=True)
    x = model.embed_tokens(inp)
    state = model.initial_state(*inp.shape)
    for _ in range(2):
        state = supervision_sweep(model, state, x, grad="none")
    new = supervision_sweep(model, state.detach(), x, commit_grad=True)
    (3.0 * F.cross_entropy(model.logits(new.y).flatten(0, 1), tgt.flatten())).backward()  # weights 0, 0, 3
    want = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert set(want) <= set(got) and all(float(got[k].abs().max()) == 0 for k in set(got) - set(want))
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=1e-5)
    # the later tokens' loss reaches the commit pass: every layer of f gets a gradient from it
    assert all(float(g.abs().sum()) > 0 for k, g in got.items() if k.startswith("core."))


@pytest.mark.parametrize("updates,scale", [("per_step", 3.0), ("per_batch", 1.0)])  # per_batch: the mean over N_sup
def test_train_depth_min_draws_the_depth_and_trains_its_last_step(monkeypatch, updates, scale):
    """train_depth_min: each batch runs a depth drawn from train_depth_min..N_sup (every one
    reached), all but its last step without grad, and trains that last step once at N_sup's weight
    (per_batch: divided by N_sup, not by the depth drawn): the gradient equals the hand-made one at
    that depth."""
    trainer, batch = _trainer("step_weights=last", "train_depth_min=1", f"updates={updates}")
    depths = []
    monkeypatch.setattr(trainer, "_update", lambda loss: None)
    for _ in range(30):
        depths.append(len(trainer._train_trm_batch(batch[:, :-1], batch[:, 1:], None)))
    assert set(depths) == {1, 2, 3}
    model = trainer.model
    monkeypatch.setattr(trainer, "_batch_depth", lambda: 2)
    got = _grads_of_one_batch(trainer, batch, monkeypatch)
    inp, tgt = batch[:, :-1], batch[:, 1:]
    model.zero_grad(set_to_none=True)
    x = model.embed_tokens(inp)
    state = supervision_sweep(model, model.initial_state(*inp.shape), x, grad="none")
    new = supervision_sweep(model, state.detach(), x, commit_grad=True)
    (scale * F.cross_entropy(model.logits(new.y).flatten(0, 1), tgt.flatten())).backward()  # depth 2, weight N_sup
    for k, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(got[k], p.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("extra", [["train_depth_min=4"], ["train_depth_min=2"],
                                   ["step_weights=last", "train_depth_min=4"]])
def test_train_depth_min_is_checked(extra):
    from trmlm.errors import TRMError
    with pytest.raises((ValueError, TRMError), match="train_depth_min"):
        _trainer(*extra)
