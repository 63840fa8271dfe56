"""ARC JSON loading: every shared format, and strict one-line errors for malformed tasks."""

import json

import numpy as np
import pytest

from trmlm.puzzles.arc.load import load_tasks, validate_grid
from trmlm.puzzles.arc.task import ArcDataConfig, build_data, load_sets
from trmlm.errors import TRMError


def _task(grid):
    return {"train": [{"input": grid, "output": [[1]]}], "test": [{"input": [[1]], "output": [[2]]}]}


@pytest.mark.parametrize("grid,needle", [
    ([[1, 2], [3]], "ragged grid, row 1 has 1 cells"),
    ([[1, 12]], "colour 12 at row 0, column 1 is outside 0-9"),
    ([[1.5]], "outside 0-9"),
    ([[0] * 31], "grid is 1x31"),
    ([[0]] * 31, "grid is 31x1"),
    ([], "non-empty list of rows"),
])
def test_bad_grids(tmp_path, grid, needle):
    with pytest.raises(TRMError, match=needle):
        validate_grid(grid, "g")
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"abc": _task(grid)}))
    with pytest.raises(TRMError, match=needle) as exc:
        load_tasks(str(path))
    assert "\n" not in str(exc.value) and "task abc train[0] input" in str(exc.value)


def test_bad_json_and_missing(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"a": {"train": [')
    with pytest.raises(TRMError, match="invalid JSON"):
        load_tasks(str(path))
    with pytest.raises(TRMError, match="no such ARC task"):
        load_tasks(str(tmp_path / "none.json"))
    path.write_text(json.dumps({"a": {"train": []}}))
    with pytest.raises(TRMError, match="needs 'train' and 'test'"):
        load_tasks(str(path))


def test_single_task_file_and_directory(tmp_path):
    (tmp_path / "t1.json").write_text(json.dumps(_task([[1, 2]])))
    (tmp_path / "t2.json").write_text(json.dumps(_task([[3]])))
    tasks = load_tasks(str(tmp_path))
    assert sorted(tasks) == ["t1", "t2"] and tasks["t1"].train[0][0].tolist() == [[1, 2]]
    assert list(load_tasks(str(tmp_path / "t1.json"))) == ["t1"]


def test_kaggle_layout(tmp_path):
    (tmp_path / "x_challenges.json").write_text(json.dumps(
        {"k": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}}))
    (tmp_path / "x_solutions.json").write_text(json.dumps({"k": [[[4]]]}))
    task = load_tasks(str(tmp_path / "x_challenges.json"))["k"]
    assert task.test[0][1].tolist() == [[4]]


def test_shared_files(shared_data_dir):
    arc = shared_data_dir / "arc"
    if not arc.is_dir():
        pytest.skip("no shared ARC data")
    assert len(load_tasks(str(arc / "conceptarc_minimal.json"))) == 16
    ev2 = load_tasks(str(arc / "trm_kaggle_combined.zip") + "#arc-agi_evaluation2")
    assert len(ev2) == 120 and all(all(o is not None for _, o in t.test) for t in ev2.values())
    with pytest.raises(TRMError, match="no nope_challenges.json"):
        load_tasks(str(arc / "trm_kaggle_combined.zip") + "#nope")


def test_data_bundle_ids_and_leakage_switch(shared_data_dir):
    src = str(shared_data_dir / "arc" / "conceptarc_minimal.json")
    if not (shared_data_dir / "arc").is_dir():
        pytest.skip("no shared ARC data")
    cfg = ArcDataConfig(train_sets=[src], eval_sets=[src], max_eval_tasks=3, n_aug=4)
    sets = load_sets(cfg)
    # a task in both lists is held out: never trained on its test pairs
    assert sum(sets.is_eval) == 3 and len(sets.tasks) == 3
    data = build_data(cfg)
    assert data.num_puzzle_ids == 1 + 3 * 4 == sets.num_puzzle_ids  # n_aug slots per task
    b = data.get_train(np.arange(8))
    assert b["inputs"].shape == (8, 900) and (b["puzzle_ids"] >= 1).all()
    no_ids = build_data(ArcDataConfig(train_sets=[src], eval_sets=[src], max_eval_tasks=3, n_aug=4,
                                      puzzle_ids=False))
    assert no_ids.num_puzzle_ids == 1 and (no_ids.eval["puzzle_ids"] == 0).all()
    with pytest.raises(TRMError, match="no training pairs"):
        build_data(ArcDataConfig(train_sets=[], eval_sets=[src], max_eval_tasks=2,
                                 eval_demos_in_train=False))
