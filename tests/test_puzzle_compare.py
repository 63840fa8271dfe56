"""benchmarks/puzzle_compare.py: which model configs it trains, its curves (timed evaluation) and files."""

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest

from trmlm.cli.common import configs_dir
from trmlm.config import TrainConfig
from trmlm.configtools import to_dict
from trmlm.puzzle import train as train_mod
from trmlm.puzzle.registry import build_puzzle_model
from trmlm.puzzle.train import train_puzzle
from trmlm.puzzles.run import get_task, resolve_config

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("puzzle_compare", ROOT / "benchmarks" / "puzzle_compare.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


@pytest.mark.parametrize("task", sorted(compare.PRESETS))
def test_every_model_builds_from_the_task_preset(task):
    base = resolve_config(task, configs_dir(), compare.PRESETS[task], overrides=[])
    att = resolve_config(task, configs_dir(), compare.ATTN_PRESETS[task], overrides=[])
    attn = compare.attention_recipe(task)
    for name in compare.MODELS:
        cfg = replace(base.model, **compare.model_changes(name, attn))
        train = replace(base.train, **compare.train_changes(name, attn))
        model = build_puzzle_model(cfg)
        if cfg.mixer == "attention":
            # positions, lr and warmup of the task's attention preset; the rest of the CPU preset
            assert (cfg.pos_encoding, cfg.grid_box, cfg.grid_bias_slope, cfg.grid_bias_prior) == (
                att.model.pos_encoding, att.model.grid_box, att.model.grid_bias_slope, att.model.grid_bias_prior)
            assert (train.lr, train.warmup_steps) == (att.train.lr, att.train.warmup_steps)
            assert train.batch_size == base.train.batch_size
            assert hasattr(model, "rel_bias") == (cfg.pos_encoding == "grid_bias")
        else:
            assert cfg.pos_encoding == "none" and cfg.grid_box == 0 and cfg.grid_bias_slope == 0
            assert train == base.train


@pytest.mark.parametrize("task", sorted(compare.PRESETS))
def test_the_base_preset_is_what_trm_train_puzzle_runs(task):
    """TRM-MLP and the ablations start from the task's default CPU preset (the README command), not
    from the attention preset the attention models borrow their recipe from."""
    from trmlm.puzzles.run import DEFAULT_PRESETS

    assert compare.PRESETS[task] == DEFAULT_PRESETS[task]


def test_sudoku_attention_models_get_the_measured_2d_recipe():
    attn = compare.attention_recipe("sudoku")
    assert (attn.pos_encoding, attn.grid_box) == ("grid_bias", 3)
    assert (attn.grid_bias_slope, attn.grid_bias_prior) == (2.0, "peers")  # the Sudoku constraint prior
    assert compare.model_changes("HRM", attn)["grid_bias_prior"] == "peers"
    assert compare.attention_recipe("maze").grid_bias_prior == "locality"
    assert attn.train == {"lr": 1e-3, "warmup_steps": 300}


def test_attention_positions_follow_the_flag():
    rope = compare.attention_recipe("sudoku", "rope")
    assert compare.model_changes("direct", rope)["pos_encoding"] == "rope"
    assert compare.model_changes("direct", rope)["grid_box"] == 0  # boxes only with grid encodings
    bias = compare.attention_recipe("maze", "grid_bias")
    assert compare.model_changes("HRM", bias)["pos_encoding"] == "grid_bias"
    assert compare.model_changes("TRM-MLP", bias) == {"arch": "trm", "mixer": "mlp", "pos_encoding": "none",
                                                      "grid_box": 0, "grid_bias_slope": 0.0}
    # the maze preset's locality prior goes to every attention model, and only with grid_bias
    assert bias.grid_bias_slope == 2.0
    assert compare.model_changes("direct", bias)["grid_bias_slope"] == 2.0
    assert compare.attention_recipe("maze", "rope").grid_bias_slope == 0.0


def test_rows_measured_without_the_locality_prior_are_not_merged(tmp_path):
    report = {"minutes_per_model": 1.0, "threads": 2, "data_config": {}, "attn_pos": "grid_bias",
              "attn_train": {"lr": 1e-3}, "attn_grid_bias_slope": 2.0, "attn_grid_bias_prior": "locality"}
    path = tmp_path / "old.json"
    old = {k: v for k, v in report.items() if k != "attn_grid_bias_slope"}  # a file from before: slope 0
    path.write_text(json.dumps({**old, "rows": [{"model": "HRM"}]}))
    assert [r["model"] for r in compare.merge_rows(path, [{"model": "direct"}], report)] == ["direct"]
    path.write_text(json.dumps({**report, "rows": [{"model": "HRM"}]}))
    assert [r["model"] for r in compare.merge_rows(path, [{"model": "direct"}], report)] == ["HRM", "direct"]
    peers = {**report, "attn_grid_bias_prior": "peers"}  # another prior's rows are not merged either
    assert [r["model"] for r in compare.merge_rows(path, [{"model": "direct"}], peers)] == ["direct"]


def _diff(a, b) -> dict:
    """The fields where two config dicts differ: name -> (a's value, b's value)."""
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


@pytest.mark.parametrize("task", sorted(compare.PRESETS))
def test_every_ablation_builds_and_differs_from_trm_mlp_only_where_declared(task):
    base = resolve_config(task, configs_dir(), compare.PRESETS[task], overrides=[])
    attn = compare.attention_recipe(task)
    ref_model = replace(base.model, **compare.model_changes(compare.ABLATION_OF, attn))
    ref_train = replace(base.train, **compare.train_changes(compare.ABLATION_OF, attn))
    assert compare.train_changes(compare.ABLATION_OF, attn) == {}
    for name, changes in compare.ABLATIONS.items():
        assert set(changes) <= {"model", "train"} and any(changes.values()), name
        cfg = replace(base.model, **compare.model_changes(name, attn))
        train = replace(base.train, **compare.train_changes(name, attn))
        model_diff = _diff(to_dict(cfg), to_dict(ref_model))
        train_diff = _diff(to_dict(train), to_dict(ref_train))
        # every declared field changes a preset value, and nothing else changes
        assert model_diff == {k: (v, getattr(ref_model, k)) for k, v in changes.get("model", {}).items()}, name
        assert train_diff == {k: (v, getattr(ref_train, k)) for k, v in changes.get("train", {}).items()}, name
        build_puzzle_model(cfg)
    depth = compare.ABLATIONS["TRM-MLP T=1,n=7"]["model"]
    assert replace(ref_model, **depth).effective_depth == ref_model.effective_depth  # the docstring's claim


def test_ablations_flag_appends_every_ablation_once():
    assert compare.selected(["HRM"], False) == ["HRM"]
    assert compare.selected([], True) == list(compare.ABLATIONS)
    assert compare.selected(["TRM-MLP", "TRM-MLP no EMA"], True) == [
        "TRM-MLP", "TRM-MLP no EMA", *[a for a in compare.ABLATIONS if a != "TRM-MLP no EMA"]]


def test_merge_rows_orders_models_then_ablations(tmp_path):
    report = {"minutes_per_model": 1.0, "threads": 2, "data_config": {}, "attn_pos": "rope",
              "attn_train": {"lr": 1e-3}, "attn_grid_bias_slope": 0.0,
              "attn_grid_bias_prior": "locality"}
    path = tmp_path / "old.json"
    old = [{"model": "TRM-MLP no EMA"}, {"model": "HRM"}, {"model": "TRM-MLP"}]
    path.write_text(json.dumps({**report, "rows": old}))
    rows = compare.merge_rows(path, [{"model": "TRM-MLP single-z"}, {"model": "direct"}], report)
    assert [r["model"] for r in rows] == ["TRM-MLP", "HRM", "direct", "TRM-MLP single-z", "TRM-MLP no EMA"]
    # rows measured with another attention recipe (or before it was recorded) are not kept
    path.write_text(json.dumps({**report, "attn_train": None, "rows": old}))
    rows = compare.merge_rows(path, [{"model": "direct"}], report)
    assert [r["model"] for r in rows] == ["direct"]
    legacy = {k: v for k, v in report.items() if k != "attn_train"}
    for task, kept in (("sudoku", False), ("maze", True)):  # maze: its attention preset is its base preset
        path.write_text(json.dumps({**legacy, "task": task, "rows": old}))
        rows = compare.merge_rows(path, [{"model": "direct"}], {**report, "task": task})
        assert ("HRM" in [r["model"] for r in rows]) == kept, task


def test_eval_every_minutes_is_validated():
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eval_every_minutes"):
            TrainConfig(eval_every_minutes=bad)


class FakeClock:
    """Stands in for the trainer's `time` module: each time() call advances `dt` seconds, and the
    call numbered `stall_at` advances `stall` more (one slow step), so the counts are exact."""

    def __init__(self, dt: float, stall_at: int = -1, stall: float = 0.0) -> None:
        self.now, self.calls, self.dt, self.stall_at, self.stall = 1000.0, 0, dt, stall_at, stall

    def time(self) -> float:
        self.calls += 1
        self.now += self.dt + (self.stall if self.calls == self.stall_at else 0.0)
        return self.now


def _timed_run(monkeypatch, tmp_path, clock: FakeClock, minutes: float, every: float) -> list[float]:
    monkeypatch.setenv("TRM_CACHE_DIR", str(tmp_path))
    base = resolve_config("sudoku", configs_dir(), "sudoku-tiny", overrides=[])
    data = get_task("sudoku").build_data(base.data)
    train = replace(base.train, train_steps=10**9, eval_every=10**9, max_minutes=minutes,
                    eval_every_minutes=every, device="cpu", threads=1)
    monkeypatch.setattr(train_mod, "time", clock)
    result = train_puzzle(base.model, train, data, out_dir=None, run_config={}, progress=False)
    return [r["train_s"] for r in result.history]


def test_timed_evaluation_gives_one_row_per_multiple_of_the_interval(monkeypatch, tmp_path):
    """Budget 1.2 s, an evaluation every 0.3 s of training: at 0.3, 0.6, 0.9 and at the end."""
    train_s = _timed_run(monkeypatch, tmp_path, FakeClock(dt=0.01), minutes=0.02, every=0.005)
    assert len(train_s) == 4, train_s
    for k, t in enumerate(train_s, start=1):  # train_s is rounded to 0.1 s; a step is ~0.03 s
        assert abs(t - 0.3 * k) <= 0.1 + 1e-9, train_s


def test_a_step_past_several_multiples_evaluates_once(monkeypatch, tmp_path):
    """Every 0.6 s of a 2.4 s budget; a 1.5 s stall at ~0.1 s passes 0.6 and 1.2: one evaluation
    there, then 1.8 and the end, never a burst of catch-up evaluations."""
    clock = FakeClock(dt=0.01, stall_at=10, stall=1.5)
    train_s = _timed_run(monkeypatch, tmp_path, clock, minutes=0.04, every=0.01)
    assert len(train_s) == 3, train_s
    assert 1.5 <= train_s[0] <= 1.7 and abs(train_s[1] - 1.8) <= 0.1 + 1e-9 and train_s[2] >= 2.4, train_s


def test_smoke_run_writes_json_curves_and_png(monkeypatch, tmp_path):
    """The script end to end on the Sudoku CPU preset; the trainer's clock is a FakeClock (~1.5 s
    per step) so the 2.4 s budget is 2 steps and the 2 curve points fall at 1.2 s and the end."""
    monkeypatch.setenv("TRM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(train_mod, "time", FakeClock(dt=0.5))
    png = tmp_path / "x.png"
    compare.main(["--task", "sudoku", "--minutes", "0.04", "--n-train", "64", "--n-test", "16",
                  "--threads", "1", "--curve-points", "2", "--curve-size", "8",
                  "--models", "TRM-MLP", "TRM-MLP single-z", "--out", str(tmp_path), "--png", str(png)])
    report = json.loads((tmp_path / "puzzle_compare_sudoku.json").read_text())
    rows = {r["model"]: r for r in report["rows"]}
    assert list(rows) == ["TRM-MLP", "TRM-MLP single-z"]
    assert rows["TRM-MLP single-z"]["ablation_of"] == "TRM-MLP"
    assert rows["TRM-MLP single-z"]["changed"] == {"model.single_z": True}
    assert rows["TRM-MLP single-z"]["model_config"]["single_z"] and "ablation_of" not in rows["TRM-MLP"]
    for r in rows.values():
        assert r["n_eval"] == 16  # the final figures: the whole held-out set
        assert [c["n_eval"] for c in r["curve"]] == [8, 8], r["curve"]
        assert [c["step"] for c in r["curve"]] == [1, 2] and r["steps"] == 2, r["curve"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
