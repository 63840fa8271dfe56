"""Maze CSV loading (HF sapientinc/maze-30x30-hard-1k format) and the task's data bundle."""

import numpy as np
import pytest

from trmlm.puzzles.maze.data import load_maze_csv
from trmlm.puzzles.maze.grid import PATH, shortest_path
from trmlm.puzzles.maze.task import MazeDataConfig, build_data, score
from trmlm.errors import TRMError


def test_shared_maze_csv(shared_data_dir):
    path = shared_data_dir / "maze"
    if not (path / "test.csv").is_file():
        pytest.skip("no shared maze CSV")
    q, a, r = load_maze_csv(path, split="test", limit=50)
    assert q.shape == (50, 900) and ((a == PATH).sum(1) + 1 == r).all() and (r > 110).all()
    # our BFS tie-break (down, left, right, up) reproduces the shared answers
    assert all(np.array_equal(shortest_path(x), y) for x, y in zip(q[:10], a[:10]))
    assert score(q, a, a).all()


def test_csv_errors(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("source,question,answer,rating\nx,S  G,S  G,3\n")
    with pytest.raises(TRMError, match="expected 900"):
        load_maze_csv(bad)
    bad.write_text("source,question,answer,rating\nx," + "S" + " " * 2 + "#,S  #,1\n")
    with pytest.raises(TRMError, match="exactly one start 'S' and one goal 'G'"):
        load_maze_csv(bad, size=2)
    with pytest.raises(TRMError, match="no such file"):
        load_maze_csv(tmp_path / "none.csv")


def test_build_data_generated(monkeypatch, tmp_path):
    monkeypatch.setenv("TRM_CACHE_DIR", str(tmp_path))
    data = build_data(MazeDataConfig(size=6, min_path=6, n_train=8, n_test=4, n_aug=8))
    assert data.train_size == 64 and data.score is score
    b = data.get_train(np.arange(16))
    assert b["inputs"].shape == (16, 36) and score(b["inputs"], b["labels"], b["labels"]).all()
    assert data.eval["inputs"].shape == (4, 36)


def test_training_evaluation_uses_the_task_score(monkeypatch, tmp_path):
    """The trainer's periodic evaluation must call PuzzleData.score (maze: valid and shortest)."""
    import dataclasses

    from trmlm.config import TRMConfig, TrainConfig
    from trmlm.puzzle.train import train_puzzle
    monkeypatch.setenv("TRM_CACHE_DIR", str(tmp_path))
    data = build_data(MazeDataConfig(size=6, min_path=6, n_train=4, n_test=4, n_aug=1))
    calls = []

    def always(inputs, predictions, labels):
        calls.append(len(inputs))
        return np.ones(len(inputs), dtype=bool)

    data = dataclasses.replace(data, score=always)
    model = TRMConfig(vocab_size=6, seq_len=36, d_model=16, n_heads=2, n_latent=1, n_cycles=1,
                      max_sup_steps=2, puzzle_emb_len=0)
    train = TrainConfig(batch_size=4, train_steps=1, eval_every=1, eval_size=4, ema_decay=0.0,
                        device="cpu")
    result = train_puzzle(model, train, data, out_dir=None, run_config={}, progress=False)
    assert calls and result.final["exact_acc"] == 1.0
