"""ARC canvas encoding: every grid size round-trips; EOS edge; translation; augmentation inverses."""

import numpy as np
import pytest

from trmlm.puzzles.arc.augment import IDENTITY, ArcAug, random_aug, task_augs
from trmlm.puzzles.arc.encode import EOS, PAD, SEQ_LEN, decode, encode, random_offset
from trmlm.puzzles.arc.load import ArcTask


def test_every_size_round_trips():
    rng = np.random.default_rng(0)
    for h in range(1, 31):
        for w in range(1, 31):
            g = rng.integers(0, 10, (h, w)).astype(np.uint8)
            t = encode(g)
            assert t.shape == (SEQ_LEN,)
            assert np.array_equal(decode(t), g), (h, w)


def test_eos_edge_and_translation():
    g = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    c = encode(g).reshape(30, 30)
    assert (c[2, :3] == EOS).all() and (c[:2, 3] == EOS).all() and c[2, 3] == PAD
    assert (c[3:] == PAD).all()
    c = encode(g, (5, 7)).reshape(30, 30)
    assert np.array_equal(c[5:7, 7:10] - 2, g) and (c[7, 7:10] == EOS).all() and (c[5:7, 10] == EOS).all()
    assert decode(np.roll(c, (-5, -7), (0, 1)).reshape(-1)).tolist() == g.tolist()
    full = encode(np.zeros((30, 30), np.uint8))
    assert not (full == EOS).any()
    rng = np.random.default_rng(0)
    for _ in range(50):
        r, cc = random_offset([(4, 9), (12, 3)], rng)
        assert 0 <= r <= 18 and 0 <= cc <= 21


def test_decode_of_garbage_is_none_or_grid():
    assert decode(np.zeros(SEQ_LEN, np.int64)) is None
    t = encode(np.ones((3, 3), np.uint8))
    t[1] = EOS  # a wrong EOS inside the first row: the crop shrinks to the largest rectangle
    assert decode(t).shape == (3, 1)


@pytest.mark.parametrize("seed", range(12))
def test_dihedral_colour_inverse_is_identity(seed):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 10, (int(rng.integers(1, 31)), int(rng.integers(1, 31)))).astype(np.uint8)
    aug = ArcAug(seed % 8, random_aug(rng).colours)
    assert aug.colours[0] == 0 and sorted(aug.colours) == list(range(10))
    assert np.array_equal(aug.invert(aug.apply(g)), g)
    assert np.array_equal(IDENTITY.apply(g), g)
    assert ((aug.apply(g) == 0).sum()) == (g == 0).sum()  # background stays background


def test_augmentations_are_deduplicated():
    sym = np.zeros((3, 3), np.uint8)  # a colour-free, fully symmetric task: only identity is new
    task = ArcTask("sym", [(sym, sym)], [(sym, sym)])
    assert len(task_augs(task, 10, seed=0)) == 1
    g = np.arange(6, dtype=np.uint8).reshape(2, 3)
    task = ArcTask("t", [(g, g.T.copy())], [(g, None)])
    augs = task_augs(task, 20, seed=0)
    assert len(augs) == 20 and augs[0] == IDENTITY
    images = {aug.apply(g).tobytes() + bytes(aug.apply(g).shape) for aug in augs}
    assert len(images) == 20
