"""Every YAML preset loads into its dataclasses; paper presets run one training step on CPU."""


import pytest
import torch

from trmlm.cli.common import configs_dir
from trmlm.puzzles.run import TASKS, build_run_config, resolve_config
from trmlm.puzzle.act import act_step, new_carry
from trmlm.configtools import apply_overrides, from_dict, load_yaml
from trmlm.config import TRMConfig
from trmlm.errors import TRMError
from trmlm.puzzle.model import TRMPuzzleModel
from model_checks import assert_every_parameter_learns

PUZZLE_PRESETS = sorted(p for p in configs_dir().glob("*.yaml") if "task" in load_yaml(p))


def test_presets_exist():
    names = {p.stem for p in PUZZLE_PRESETS}
    assert {"sudoku-cpu", "sudoku-att-cpu", "sudoku-hard-cpu", "sudoku-tiny", "sudoku-extreme-mlp", "sudoku-extreme-att",
            "maze-cpu", "maze-mlp-cpu"} <= names


@pytest.mark.parametrize("path", PUZZLE_PRESETS, ids=lambda p: p.stem)
def test_puzzle_preset_loads(path):
    run = build_run_config(load_yaml(path))
    mod = TASKS[run.task]
    seq = mod.seq_len(run.data) if hasattr(mod, "seq_len") else mod.SEQ
    assert run.model.vocab_size == mod.VOCAB and run.model.seq_len == seq


@pytest.mark.parametrize("name,mixer", [("sudoku-extreme-mlp", "mlp"), ("sudoku-extreme-att", "attention")])
def test_paper_preset_is_paper_config_and_steps(name, mixer):
    run = resolve_config("sudoku", configs_dir(), name)
    m, t = run.model, run.train
    assert (m.d_model, m.n_layers, m.n_latent, m.n_cycles, m.max_sup_steps, m.mixer) == (512, 2, 6, 3, 16, mixer)
    assert (t.batch_size, t.lr, t.weight_decay, t.ema_decay) == (768, 1e-4, 1.0, 0.999)
    assert run.data.n_train == 1000 and run.data.n_aug == 1000
    # one supervision step (tiny batch) at full paper width on CPU
    model = TRMPuzzleModel(m)
    batch = {"inputs": torch.randint(1, 11, (2, 81)), "labels": torch.randint(2, 11, (2, 81)),
             "puzzle_ids": torch.zeros(2, dtype=torch.long)}
    carry, stats = act_step(model, new_carry(model, batch))
    stats.loss.backward()
    assert torch.isfinite(stats.loss)
    assert_every_parameter_learns(model)
    assert 5e6 < model.num_parameters() < 8e6  # the paper's "7M parameters"


def test_overrides_and_strictness():
    raw = apply_overrides({"model": {"d_model": 64}}, ["model.n_heads=2", "train.lr=0.01"])
    assert raw == {"model": {"d_model": 64, "n_heads": 2}, "train": {"lr": 0.01}}
    assert from_dict(TRMConfig, raw["model"]).n_heads == 2
    with pytest.raises(TRMError, match="unknown config key 'model.heads'"):
        from_dict(TRMConfig, {"heads": 2}, "model")
    with pytest.raises(TRMError, match="expected an integer"):
        from_dict(TRMConfig, {"d_model": "wide"}, "model")
    with pytest.raises(TRMError, match="not one of"):
        from_dict(TRMConfig, {"mixer": "conv"}, "model")
    with pytest.raises(TRMError, match="not divisible"):
        from_dict(TRMConfig, {"d_model": 60, "n_heads": 8}, "model")
    with pytest.raises(TRMError, match="fixed to 81"):
        build_run_config({"task": "sudoku", "model": {"seq_len": 80}})
