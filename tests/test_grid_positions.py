"""2-D positions for grid puzzles: pos_encoding grid (row/column/box vectors) and grid_rope (2-D RoPE)."""

import pytest
import torch

from trmlm.config import TRMConfig
from trmlm.layers import AttnContext, Attention, apply_rope
from trmlm.puzzle.model import TRMPuzzleModel, grid_indices, grid_relations, grid_rope_tables, locality_prior


def cfg(**kw) -> TRMConfig:
    base = dict(vocab_size=11, seq_len=81, d_model=32, n_heads=4, n_layers=1, n_latent=1,
                n_cycles=1, max_sup_steps=2, puzzle_emb_len=0, swiglu_multiple=8)
    base.update(kw)
    return TRMConfig(**base)


def test_default_is_off():
    c = TRMConfig()
    assert c.pos_encoding == "rope" and c.grid_box == 0


@pytest.mark.parametrize("kw,message", [
    (dict(pos_encoding="grid", seq_len=80), "not a square"),
    (dict(pos_encoding="grid_rope", seq_len=12), "not a square"),
    (dict(pos_encoding="grid", grid_box=4), "divide the grid side"),
    (dict(pos_encoding="grid_rope", grid_box=3), "only to pos_encoding grid or grid_bias"),
    (dict(pos_encoding="rope", grid_box=3), "only to pos_encoding grid or grid_bias"),
    (dict(pos_encoding="grid_bias", seq_len=50), "not a square"),
    (dict(pos_encoding="grid_rope", d_model=24, n_heads=4), "divisible by 4"),
    (dict(pos_encoding="rope", grid_bias_slope=1.0), "only to pos_encoding grid_bias"),
    (dict(pos_encoding="grid_bias", grid_bias_slope=-1.0), "must be >= 0"),
])
def test_bad_grid_configs_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        cfg(**kw)


def test_grid_indices_sudoku_boxes():
    rows, cols, boxes = grid_indices(9, 3)
    assert rows[10] == 1 and cols[10] == 1 and boxes[10] == 0
    assert boxes[80] == 8 and boxes[30] == 4  # (3, 3) is the centre box
    assert torch.bincount(boxes).tolist() == [9] * 9


def test_grid_positions_are_shared_by_rows_columns_and_boxes():
    model = TRMPuzzleModel(cfg(pos_encoding="grid", grid_box=3))
    pos = model.grid_positions()  # (81, D)
    # cells (0,0) and (0,1): same row and box, so they differ by the column vectors only
    assert torch.allclose(pos[1] - pos[0], model.col_emb[1] - model.col_emb[0], atol=1e-6)
    # cells (0,0) and (3,0): same column, other row and box
    expect = model.row_emb[3] - model.row_emb[0] + model.box_emb[3] - model.box_emb[0]
    assert torch.allclose(pos[27] - pos[0], expect, atol=1e-6)
    # cells (0,0) and (0,3): same row, other column and box
    expect = model.col_emb[3] - model.col_emb[0] + model.box_emb[1] - model.box_emb[0]
    assert torch.allclose(pos[3] - pos[0], expect, atol=1e-6)
    names = {n for n, _ in model.named_parameters()}
    assert {"row_emb", "col_emb", "box_emb"} <= names and "pos_emb" not in names


def test_grid_positions_learn_and_prefix_has_its_own():
    model = TRMPuzzleModel(cfg(pos_encoding="grid", grid_box=3, puzzle_emb_len=2))
    assert model.grid_positions().shape == (83, 32)
    tokens = torch.randint(1, 11, (3, 81))
    out = model(model.initial_state(3), tokens)
    out.logits.square().sum().backward()
    for name in ("row_emb", "col_emb", "box_emb", "prefix_pos_emb"):
        assert getattr(model, name).grad.abs().sum() > 0, name


def _scores(cos, sin, q, k, i, j):
    qi = apply_rope(q[None, None, None], cos[i:i + 1], sin[i:i + 1])
    kj = apply_rope(k[None, None, None], cos[j:j + 1], sin[j:j + 1])
    return float((qi * kj).sum())


def test_grid_rope_depends_on_row_and_column_offsets_only():
    side, P, dh = 9, 2, 16
    cos, sin = grid_rope_tables(side, P, dh, 10000.0)
    assert cos.shape == sin.shape == (P + side * side, dh // 2)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(dh, generator=g), torch.randn(dh, generator=g)
    at = lambda r, c: P + r * side + c  # noqa: E731
    # the same (row, column) offset anywhere on the grid gives the same score
    base = _scores(cos, sin, q, k, at(1, 2), at(3, 7))
    assert base == pytest.approx(_scores(cos, sin, q, k, at(4, 0), at(6, 5)), abs=1e-4)
    # a flattened 1-D RoPE sees (0, 8) -> (1, 0) as offset 1, like (0, 0) -> (0, 1); 2-D does not
    assert abs(_scores(cos, sin, q, k, at(0, 8), at(1, 0))
               - _scores(cos, sin, q, k, at(0, 0), at(0, 1))) > 1e-3


def test_grid_rope_model_runs_and_uses_the_tables():
    model = TRMPuzzleModel(cfg(pos_encoding="grid_rope"))
    ctx = model.attn_context(torch.device("cpu"))
    assert ctx.rope is not None and ctx.rope[0].shape == (81, 4)
    tokens = torch.randint(1, 11, (2, 81))
    out = model(model.initial_state(2), tokens)
    assert out.logits.shape == (2, 81, 11)
    # no learned position parameters: the grid enters through the rotation only
    assert not any("emb" in n and n != "embed.weight" for n, _ in model.named_parameters())


def test_grid_relations_offsets_and_boxes():
    offset, same_box = grid_relations(9, 3)
    at = lambda r, c: r * 9 + c  # noqa: E731
    # the same (row, column) offset anywhere shares one table entry; other offsets do not
    assert offset[at(1, 2), at(3, 7)] == offset[at(4, 0), at(6, 5)]
    assert offset[at(0, 8), at(1, 0)] != offset[at(0, 0), at(0, 1)]
    assert offset[at(4, 4), at(4, 4)] == 8 * 17 + 8 and int(offset.max()) == 17 * 17 - 1
    assert same_box[at(0, 0), at(2, 2)] == 1 and same_box[at(0, 2), at(0, 3)] == 0
    assert same_box.sum(-1).tolist() == [9.0] * 81


def test_grid_bias_reaches_the_attention_logits():
    model = TRMPuzzleModel(cfg(pos_encoding="grid_bias", grid_box=3, puzzle_emb_len=2))
    with torch.no_grad():
        model.box_bias.fill_(3.0)
        model.rel_bias[1, 8 * 17 + 9] = -2.0  # head 1: offset (0, -1): key one column left
    bias = model.grid_bias()
    assert bias.shape == (4, 83, 83)
    assert torch.all(bias[:, :2] == 0) and torch.all(bias[:, :, :2] == 0)  # prefix: no bias
    q, k = 2 + 0 * 9 + 1, 2 + 0 * 9 + 0  # query (0, 1), key (0, 0): same box, offset (0, -1)
    assert bias[0, q, k] == 3.0 and bias[1, q, k] == 1.0
    # the bias is what SDPA adds: a hand-written softmax with it gives the same output
    attn = Attention(model.cfg)
    h = torch.randn(2, 83, 32)
    out, _ = attn(h, AttnContext(bias=bias), None)
    qkv = attn.qkv(h).view(2, 83, 3, 4, 8).permute(2, 0, 3, 1, 4)
    w = torch.softmax(qkv[0] @ qkv[1].transpose(-1, -2) / 8 ** 0.5 + bias, -1)
    ref = attn.out((w @ qkv[2]).transpose(1, 2).reshape(2, 83, 32))
    assert torch.allclose(out, ref, atol=1e-5)
    with pytest.raises(ValueError, match="full self-mask"):
        attn(h, AttnContext(self_mask="causal", bias=bias), None)


def test_grid_bias_learns_from_zero():
    model = TRMPuzzleModel(cfg(pos_encoding="grid_bias", grid_box=3))
    assert torch.all(model.rel_bias == 0) and torch.all(model.box_bias == 0)
    out = model(model.initial_state(3), torch.randint(1, 11, (3, 81)))
    out.logits.square().sum().backward()
    assert model.rel_bias.grad.abs().sum() > 0 and model.box_bias.grad.abs().sum() > 0


def test_grid_bias_slope_starts_as_a_2d_locality_prior():
    model = TRMPuzzleModel(cfg(pos_encoding="grid_bias", seq_len=64, grid_bias_slope=2.0))
    bias = model.grid_bias()  # (H, 64, 64)

    def at(r, c):
        return r * 8 + c

    q = at(3, 4)
    assert bias[0, q, q] == 0.0
    assert bias[0, q, at(3, 5)] == -2.0 and bias[0, q, at(2, 4)] == -2.0  # the 4 neighbours
    assert bias[0, q, at(5, 1)] == -2.0 * 5  # Manhattan 2 + 3
    assert bias[1, q, at(5, 1)] == -1.0 * 5 and bias[3, q, at(5, 1)] == -0.25 * 5  # halving slopes
    assert torch.equal(locality_prior(8, 4, 0.0), torch.zeros(4, 225))
    # the prior is only a start: it is a parameter, trained like the zero start
    out = model(model.initial_state(2), torch.randint(1, 6, (2, 64)))
    out.logits.square().sum().backward()
    assert model.rel_bias.requires_grad and model.rel_bias.grad.abs().sum() > 0


def test_peers_prior_starts_heads_on_the_row_the_column_and_the_box():
    model = TRMPuzzleModel(cfg(pos_encoding="grid_bias", grid_box=3, grid_bias_slope=2.0,
                               grid_bias_prior="peers"))
    bias = model.grid_bias()  # (H, 81, 81)

    def at(r, c):
        return r * 9 + c

    q = at(4, 4)  # centre cell: its box is rows 3-5, columns 3-5
    row, col, box, other = at(4, 8), at(0, 4), at(3, 3), at(0, 0)
    assert [float(bias[0, q, k]) for k in (row, col, box, other)] == [2.0, 0.0, 0.0, 0.0]
    assert [float(bias[1, q, k]) for k in (row, col, box, other)] == [0.0, 2.0, 0.0, 0.0]
    assert [float(bias[2, q, k]) for k in (row, col, box, other)] == [0.0, 0.0, 2.0, 0.0]
    assert bias[3].abs().sum() == 0  # heads from 3 on start as plain attention
    assert bias[2, q, at(4, 3)] == 2.0 and bias[2, q, at(4, 2)] == 0.0  # same row, other box
    with pytest.raises(ValueError, match="peers needs grid_box"):
        cfg(pos_encoding="grid_bias", seq_len=64, grid_bias_slope=2.0, grid_bias_prior="peers")
