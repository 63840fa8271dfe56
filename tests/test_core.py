"""The TRM core: shapes, the grad/no-grad split, the ACT carry, stablemax, EMA, sign-SGD."""

import math

import pytest
import torch

from trmlm.puzzle.act import act_step, new_carry, refill
from trmlm.config import TRMConfig, TrainConfig, swiglu_width
from trmlm.core import RecursionState
from trmlm.layers import AttnContext
from trmlm.losses import log_stablemax, sequence_loss, stablemax_s
from trmlm.optim import EMA, SignSGD, warmup_factor
from trmlm.puzzle.model import TRMPuzzleModel


def tiny_cfg(**kw) -> TRMConfig:
    base = dict(vocab_size=7, seq_len=12, d_model=32, n_heads=4, n_layers=2, n_latent=2,
                n_cycles=3, max_sup_steps=4, puzzle_emb_len=2, num_puzzle_ids=3)
    base.update(kw)
    return TRMConfig(**base)


def batch(B=5, L=12, V=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"inputs": torch.randint(1, V, (B, L), generator=g),
            "labels": torch.randint(1, V, (B, L), generator=g),
            "puzzle_ids": torch.randint(0, 3, (B,), generator=g)}


def test_paper_defaults():
    cfg = TRMConfig()
    assert (cfg.d_model, cfg.n_heads, cfg.n_layers) == (512, 8, 2)
    assert (cfg.n_latent, cfg.n_cycles, cfg.max_sup_steps) == (6, 3, 16)
    assert cfg.ffn_width == 1536 == swiglu_width(512, 4.0)
    assert cfg.effective_depth == 42
    tc = TrainConfig()
    assert (tc.lr, tc.beta1, tc.beta2, tc.warmup_steps, tc.batch_size) == (1e-4, 0.9, 0.95, 2000, 768)
    assert tc.ema_decay == 0.999 and tc.halt_loss_weight == 0.5


@pytest.mark.parametrize("mixer,pos", [("attention", "rope"), ("attention", "learned"), ("mlp", "none")])
def test_shapes(mixer, pos):
    cfg = tiny_cfg(mixer=mixer, pos_encoding=pos)
    model = TRMPuzzleModel(cfg)
    b = batch()
    out = model(model.initial_state(5), b["inputs"], b["puzzle_ids"])
    assert out.logits.shape == (5, 12, 7)
    assert out.q_halt.shape == (5,)
    assert out.state.y.shape == out.state.z.shape == (5, 14, 32)


def test_q_head_init_and_initial_state():
    model = TRMPuzzleModel(tiny_cfg())
    assert torch.all(model.q_head.weight == 0) and torch.all(model.q_head.bias == -5)
    out = model(model.initial_state(5), batch()["inputs"])
    assert torch.allclose(out.q_halt, torch.full((5,), -5.0))
    s = model.initial_state(3)
    assert torch.equal(s.y[0, 0], model.init_y) and torch.equal(s.y[2, 7], model.init_y)
    assert 0.5 < model.init_y.std().item() < 1.5  # trunc-normal std 1


def _reference_unroll(model, state, x, detach_before_last: bool):
    """Obviously-correct unroll: T full cycles with grad everywhere, optionally detached before last."""
    ctx = model.attn_context(x.device)
    y, z = state.y, state.z
    f = model.core.f
    for c in range(model.cfg.n_cycles):
        if c == model.cfg.n_cycles - 1 and detach_before_last:
            y, z = y.detach(), z.detach()
        for _ in range(model.cfg.n_latent):
            z = f(x + y + z, ctx)
        y = f(y + z, ctx)
    return y


def test_gradient_only_through_last_cycle():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = TRMPuzzleModel(cfg).double()
    b = batch()
    state = model.initial_state(5)
    state = RecursionState(state.y.double(), state.z.double())
    P = cfg.puzzle_emb_len

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    out = model(state, b["inputs"], b["puzzle_ids"])
    g_ours = grads(out.logits.sum())
    def x():
        return model.embed_inputs(b["inputs"], b["puzzle_ids"])
    g_ref = grads(model.head(_reference_unroll(model, state, x(), True)[:, P:]).sum())
    g_full = grads(model.head(_reference_unroll(model, state, x(), False)[:, P:]).sum())
    assert g_ours.keys() == g_ref.keys()
    for n in g_ours:
        torch.testing.assert_close(g_ours[n], g_ref[n], rtol=1e-9, atol=1e-12)
    # and the test can tell: backprop through all cycles gives different gradients
    assert any(not torch.allclose(g_ours[n], g_full[n]) for n in g_ours)


def test_carry_is_detached_and_refill_touches_only_halted():
    torch.manual_seed(0)
    model = TRMPuzzleModel(tiny_cfg())
    carry = new_carry(model, batch(seed=1))
    carry, stats = act_step(model, carry)
    assert stats.loss.requires_grad
    assert not carry.state.y.requires_grad and not carry.state.z.requires_grad
    assert carry.state.y.grad_fn is None
    halted = torch.tensor([True, False, True, False, False])
    carry.halted = halted
    before = carry
    fresh = batch(B=2, seed=7)
    after = refill(model, carry, lambda k: {key: v[:k] for key, v in fresh.items()})
    init = model.initial_state(5)
    for i in range(5):
        if halted[i]:
            assert torch.equal(after.state.y[i], init.y[i]) and torch.equal(after.state.z[i], init.z[i])
            assert after.steps[i] == 0
        else:
            assert torch.equal(after.state.y[i], before.state.y[i])
            assert torch.equal(after.batch["inputs"][i], before.batch["inputs"][i])
            assert after.steps[i] == before.steps[i] == 1
    assert torch.equal(after.batch["inputs"][0], fresh["inputs"][0])
    assert torch.equal(after.batch["inputs"][2], fresh["inputs"][1])
    assert not after.halted.any()


def test_halting_at_max_steps_and_by_q():
    torch.manual_seed(0)
    model = TRMPuzzleModel(tiny_cfg(halt_exploration=0.0))
    carry = new_carry(model, batch())
    for s in range(1, 5):
        carry, _ = act_step(model, carry)
        assert carry.halted.all() == (s == 4)
    with torch.no_grad():
        model.q_head.bias.fill_(5.0)  # q > 0: halts after the first step in training mode
    carry, _ = act_step(model, new_carry(model, batch()))
    assert carry.halted.all()
    model.eval()  # evaluation always runs N_sup steps
    carry, _ = act_step(model, new_carry(model, batch()))
    assert not carry.halted.any()


def test_stablemax_formula():
    x = torch.tensor([-3.0, -0.5, 0.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(stablemax_s(x), torch.tensor([1 / 4, 1 / 1.5, 1.0, 3.0], dtype=torch.float64))
    logits = torch.tensor([[[2.0, -1.0, 0.0]]])
    s = torch.tensor([3.0, 0.5, 1.0])
    expected = -math.log(3.0 / s.sum().item())
    loss = sequence_loss(logits, torch.tensor([[0]]), "stablemax")
    assert abs(loss.item() - expected) < 1e-6
    assert torch.allclose(log_stablemax(logits.double()).exp().sum(-1), torch.ones(1, 1, dtype=torch.float64))
    soft = sequence_loss(logits, torch.tensor([[0]]), "softmax")
    assert abs(soft.item() - (-torch.log_softmax(logits[0, 0], -1)[0]).item()) < 1e-6


def test_attention_prefix_equals_concatenated_sequence():
    """Reading a K/V prefix == attending over the concatenated sequence (the LM's seam)."""
    torch.manual_seed(0)
    cfg = tiny_cfg(puzzle_emb_len=0, n_layers=1)
    net = TRMPuzzleModel(cfg).core.f
    attn = net.blocks[0].attn
    h = torch.randn(2, 6, 32)
    full, _ = attn(h, AttnContext(self_mask="causal"), None)
    _, (k, v) = attn(h[:, :4], AttnContext(self_mask="causal"), None)
    last, _ = attn(h[:, 4:], AttnContext(self_mask="causal"), (k, v))
    torch.testing.assert_close(last, full[:, 4:], rtol=1e-5, atol=1e-6)


def test_ema_and_sign_sgd_and_warmup():
    lin = torch.nn.Linear(3, 2)
    ema = EMA(lin, 0.9)
    w0 = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    ema.update(lin)
    torch.testing.assert_close(ema.shadow["weight"], w0 + 0.1)
    emb = torch.nn.Parameter(torch.ones(4, 2))
    opt = SignSGD([emb], lr=0.1, weight_decay=1.0)
    emb.grad = torch.tensor([[0.0, 0.0], [2.0, -3.0], [0.0, 0.0], [0.0, 1e-9]])
    opt.step()
    assert torch.equal(emb[0], torch.ones(2)) and torch.equal(emb[2], torch.ones(2))  # untouched
    torch.testing.assert_close(emb[1], torch.tensor([0.9 - 0.1, 0.9 + 0.1]))
    assert warmup_factor(0, 10) == 0.1 and warmup_factor(9, 10) == 1.0 and warmup_factor(50, 10) == 1.0
