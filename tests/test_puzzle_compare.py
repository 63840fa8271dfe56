"""benchmarks/puzzle_compare.py: which model configs the comparison trains (fast: no training)."""

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from trmlm.cli.common import configs_dir
from trmlm.puzzle.registry import build_puzzle_model
from trmlm.puzzles.run import resolve_config

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("puzzle_compare", ROOT / "benchmarks" / "puzzle_compare.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


@pytest.mark.parametrize("task", sorted(compare.PRESETS))
def test_every_model_builds_from_the_task_preset(task):
    base = resolve_config(task, configs_dir(), compare.PRESETS[task], overrides=[])
    for name in compare.MODELS:
        cfg = replace(base.model, **compare.model_changes(name, compare.ATTN_POS[task]))
        model = build_puzzle_model(cfg)
        if cfg.mixer == "attention":
            assert cfg.pos_encoding == compare.ATTN_POS[task]
            assert hasattr(model, "rel_bias") == (cfg.pos_encoding == "grid_bias")
        else:
            assert cfg.pos_encoding == "none" and cfg.grid_box == 0


def test_attention_positions_follow_the_flag():
    assert compare.model_changes("direct", "rope")["pos_encoding"] == "rope"
    assert compare.model_changes("HRM", "grid_bias")["pos_encoding"] == "grid_bias"
    assert compare.model_changes("TRM-MLP", "grid_bias") == {"arch": "trm", "mixer": "mlp", "pos_encoding": "none",
                                                          "grid_box": 0}
