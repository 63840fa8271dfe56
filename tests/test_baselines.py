"""HRM and direct baselines, TRM ablations by config: interface, parameters, and gradient paths."""

import pytest
import torch

from trmlm.puzzle.act import act_step, new_carry
from trmlm.config import TRMConfig
from trmlm.core import RecursionState
from trmlm.puzzle.direct import DirectPuzzleModel
from trmlm.errors import TRMError
from trmlm.puzzle.hrm import HRMPuzzleModel
from trmlm.puzzle.registry import ARCHS, build_puzzle_model
from trmlm.puzzle.model import TRMPuzzleModel
from model_checks import assert_every_parameter_learns


def cfg(**kw) -> TRMConfig:
    base = dict(vocab_size=7, seq_len=12, d_model=32, n_heads=4, n_layers=2, n_latent=3,
                n_cycles=2, max_sup_steps=3, puzzle_emb_len=2, num_puzzle_ids=3)
    base.update(kw)
    return TRMConfig(**base)


def batch(B=4, L=12, V=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"inputs": torch.randint(1, V, (B, L), generator=g),
            "labels": torch.randint(1, V, (B, L), generator=g),
            "puzzle_ids": torch.randint(0, 3, (B,), generator=g)}


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _double_state(model, B):
    s = model.initial_state(B)
    return RecursionState(s.y.double(), s.z.double())


def _hrm_reference(model, state, x, one_step: bool):
    """Obviously-correct HRM unroll: H cycles of (L low steps, one high step); with one_step,
    every call but the last f_L and the last f_H runs on detached inputs."""
    ctx = model.attn_context(x.device)
    zH, zL = state.y, state.z
    H, L = model.cfg.n_cycles, model.cfg.n_latent
    for h in range(H):
        for l in range(L):
            last_L = h == H - 1 and l == L - 1
            if one_step and not last_L:
                zL = model.f_L(zL.detach() + zH.detach() + x.detach(), ctx).detach()
            else:
                zL = model.f_L(zL + zH + x, ctx)
        if one_step and h < H - 1:
            zH = model.f_H(zH.detach() + zL.detach(), ctx).detach()
        else:
            zH = model.f_H(zH + zL, ctx)
    return zH


def test_registry_and_arch_selection():
    assert set(ARCHS) == {"trm", "hrm", "direct"}
    assert type(build_puzzle_model(cfg())) is TRMPuzzleModel
    assert type(build_puzzle_model(cfg(arch="hrm"))) is HRMPuzzleModel
    assert type(build_puzzle_model(cfg(arch="direct"))) is DirectPuzzleModel
    with pytest.raises(ValueError):
        TRMConfig(arch="hrm", single_z=True)
    assert TRMConfig().arch == "trm" and not TRMConfig().single_z and TRMConfig().grad == "last_cycle"


@pytest.mark.parametrize("kw", [dict(arch="hrm"), dict(arch="direct"), dict(single_z=True),
                                dict(grad="one_step"), dict(separate_nets=True)])
def test_every_variant_trains_one_step(kw):
    torch.manual_seed(0)
    model = build_puzzle_model(cfg(**kw))
    carry, stats = act_step(model, new_carry(model, batch()))
    stats.loss.backward()
    assert torch.isfinite(stats.loss)
    assert carry.state.y.shape == (4, 14, 32) and not carry.state.y.requires_grad
    assert_every_parameter_learns(model)  # f (HRM: f_L and f_H), embeddings, heads, Q head


def test_parameter_counts():
    trm = build_puzzle_model(cfg())
    assert build_puzzle_model(cfg(arch="direct")).num_parameters() == trm.num_parameters()
    blocks = sum(p.numel() for p in trm.core.f.parameters())
    hrm = build_puzzle_model(cfg(arch="hrm"))
    q_continue = trm.cfg.d_model + 1  # HRM's Q head has a second (continue) output
    assert hrm.num_parameters() == trm.num_parameters() + blocks + q_continue  # f_H is a second f
    assert build_puzzle_model(cfg(arch="direct")).cfg.max_sup_steps == 1


def test_hrm_gradient_reaches_only_last_f_L_and_f_H():
    torch.manual_seed(0)
    model = HRMPuzzleModel(cfg(n_layers=1)).double()
    b = batch()
    state = _double_state(model, 4)
    P = model.cfg.puzzle_emb_len
    g_ours = _grads(model, model(state, b["inputs"], b["puzzle_ids"]).logits.sum())

    def x():
        return model.embed_inputs(b["inputs"], b["puzzle_ids"])
    g_ref = _grads(model, model.head(_hrm_reference(model, state, x(), True)[:, P:]).sum())
    g_full = _grads(model, model.head(_hrm_reference(model, state, x(), False)[:, P:]).sum())
    assert g_ours.keys() == g_ref.keys()
    for n in g_ours:
        torch.testing.assert_close(g_ours[n], g_ref[n], rtol=1e-9, atol=1e-12)
    assert any(not torch.allclose(g_ours[n], g_full[n]) for n in g_ours)  # the test can tell


def test_trm_one_step_gradient_matches_reference():
    torch.manual_seed(0)
    model = TRMPuzzleModel(cfg(grad="one_step")).double()
    b = batch()
    state = _double_state(model, 4)
    P = model.cfg.puzzle_emb_len
    g_ours = _grads(model, model(state, b["inputs"], b["puzzle_ids"]).logits.sum())
    ctx = model.attn_context(torch.device("cpu"))
    f = model.core.f
    x = model.embed_inputs(b["inputs"], b["puzzle_ids"])
    with torch.no_grad():
        y, z = state.y, state.z
        for _ in range(model.cfg.n_cycles - 1):
            for _ in range(model.cfg.n_latent):
                z = f(x + y + z, ctx)
            y = f(y + z, ctx)
        for _ in range(model.cfg.n_latent - 1):
            z = f(x + y + z, ctx)
    z = f(x + y + z, ctx)
    y = f(y + z, ctx)
    g_ref = _grads(model, model.head(y[:, P:]).sum())
    assert g_ours.keys() == g_ref.keys()
    assert {n for n in g_ref if n.startswith("core.f.")} == \
        {n for n, _ in model.named_parameters() if n.startswith("core.f.")}  # f gets its gradient
    for n in g_ours:
        torch.testing.assert_close(g_ours[n], g_ref[n], rtol=1e-9, atol=1e-12)
    # the test can tell: the default last-cycle gradient (same weights) differs in f
    full = TRMPuzzleModel(cfg()).double()
    full.load_state_dict(model.state_dict())
    g_full = _grads(full, full(state, b["inputs"], b["puzzle_ids"]).logits.sum())
    assert g_full.keys() == g_ours.keys()
    assert any(not torch.allclose(g_ours[n], g_full[n]) for n in g_ours if n.startswith("core.f."))


def test_single_z_keeps_one_state():
    torch.manual_seed(0)
    model = TRMPuzzleModel(cfg(single_z=True))
    b = batch()
    out = model(model.initial_state(4), b["inputs"], b["puzzle_ids"])
    assert torch.equal(out.state.y, out.state.z)


def test_direct_ignores_state_and_is_one_pass():
    torch.manual_seed(0)
    model = DirectPuzzleModel(cfg())
    b = batch()
    a = model(model.initial_state(4), b["inputs"], b["puzzle_ids"])
    c = model(a.state, b["inputs"], b["puzzle_ids"])
    torch.testing.assert_close(a.logits, c.logits)


def test_unknown_arch_is_config_error():
    from trmlm.configtools import from_dict
    with pytest.raises(TRMError, match="not one of"):
        from_dict(TRMConfig, {"arch": "gpt"}, "model")


def test_hrm_q_learning_act():
    """HRM halts on q_halt > q_continue; q_continue learns the bootstrapped target of a second pass."""
    from trmlm.puzzle.act import continue_target
    from trmlm.losses import halt_loss

    torch.manual_seed(0)
    model = build_puzzle_model(cfg(arch="hrm", halt_exploration=0.0))
    assert model.cfg.act_continue and model.q_head.out_features == 2
    b = batch()
    carry = new_carry(model, b)
    out = model(carry.state, b["inputs"], b["puzzle_ids"])
    assert torch.equal(out.halt_logit, out.q_halt - out.q_continue)
    steps = torch.ones(4, dtype=torch.long)
    target = continue_target(model, out, b, steps)
    with torch.no_grad():  # reference: the next step's q values, bootstrapped by hand
        nxt = model(out.state, b["inputs"], b["puzzle_ids"], grad="none")
        expected = torch.sigmoid(torch.maximum(nxt.q_halt, nxt.q_continue))
    torch.testing.assert_close(target, expected)
    last = continue_target(model, out, b, torch.full((4,), model.cfg.max_sup_steps))
    torch.testing.assert_close(last, torch.sigmoid(nxt.q_halt))
    # the training loss includes the continue term; eval mode drops it
    _, stats = act_step(model, new_carry(model, b))
    labels_ok = torch.zeros(4)
    no_continue = halt_loss(out.q_halt, labels_ok).mean()
    assert stats.q_loss > no_continue * 1.5
    # halting follows q_halt > q_continue
    with torch.no_grad():
        model.q_head.bias.copy_(torch.tensor([1.0, 3.0]))
    carry, _ = act_step(model, new_carry(model, b))
    assert not carry.halted.any()
    with torch.no_grad():
        model.q_head.bias.copy_(torch.tensor([3.0, 1.0]))
    carry, _ = act_step(model, new_carry(model, b))
    assert carry.halted.all()
