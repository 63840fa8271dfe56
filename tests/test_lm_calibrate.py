"""Halt-head calibration (trmlm/lm/calibrate.py, `trm calibrate-halt`): labels, the states it
labels, the fit, and the command."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from trmlm.cli.main import app
from trmlm.lm.calibrate import (CalibrationConfig, argmax_labels, calibrate_halting, exit_steps, fit_halt_head,
                                halt_labels, step_states)
from trmlm.lm.config import LMConfig
from trmlm.lm.decode import sequential_logits
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.model import build_model

torch.set_num_threads(1)


def _model(dtype=torch.float32):
    net = dataclasses.replace(LMConfig().model, vocab_size=17, seq_len=12, d_model=32, n_heads=4,
                              n_layers=2, n_latent=2, n_cycles=1, max_sup_steps=3, swiglu_multiple=16)
    torch.manual_seed(0)
    model = build_model(LMConfig(model=net, train_cache="final_sweep")).eval().to(dtype)
    with torch.no_grad():  # a halt head with a real signal, so exits vary per token
        model.q_head.weight.normal_(0, 1.0)
        model.q_head.bias.zero_()
    return model


def test_labels_on_hand_made_losses():
    # tokens: flat (nothing to gain), gains at step 2 only, gains at step 3 only, worse then better
    # (and a fifth: step 2 is the best, the last step almost as bad as the first)
    ce = torch.tensor([[2.30, 1.00, 1.00, 0.20, 0.50],
                       [2.31, 0.20, 1.00, 1.00, 0.10],
                       [2.30, 0.20, 0.20, 0.10, 0.48]])[:, None, :]  # (S=3, B=1, L=5)
    lab = halt_labels(ce, margin=0.05, scale=50.0)[:, 0]  # (S, L)
    assert torch.all(lab[-1] == 1.0)
    # flat: halt at once (gain 0 < margin) -> 1 - sigmoid(-2.5)
    assert lab[0, 0] == pytest.approx(1 - torch.sigmoid(torch.tensor(-2.5)).item(), abs=1e-6)
    # the 0.01 wobble of the flat token is under the margin: still "halt" (1 - sigmoid(-2))
    assert lab[1, 0] == pytest.approx(1 - torch.sigmoid(torch.tensor(-2.0)).item(), abs=1e-5)
    # gains 0.8 at step 2: continue after step 1, halt after step 2
    assert lab[0, 1] < 0.01 and lab[1, 1] > 0.9
    # gains only at step 3: continue after steps 1 and 2
    assert lab[0, 2] < 0.01 and lab[1, 2] < 0.01
    # worse, then better: step 1 (0.20) is 0.10 above the later best (step 3, 0.10): continue,
    # against the later best, not the next step (which is worse)
    assert lab[0, 3] == pytest.approx(1 - torch.sigmoid(torch.tensor(50 * (0.10 - 0.05))).item(), abs=1e-5)
    assert lab[1, 3] < 0.01
    # the label looks at the best later step, not the last one: after step 1 the fifth token
    # still gains 0.40 (at step 2), though the last step is only 0.02 better; after step 2 halt
    assert lab[0, 4] < 0.01 and lab[1, 4] > 0.9


def test_argmax_labels_on_hand_made_predictions():
    # is the step's top token the target? tokens: right from step 1; right from step 2; right
    # at step 2 only (step 3 loses it); never right; right at step 1, wrong at 2, right at 3
    right = torch.tensor([[1, 0, 0, 0, 1],
                          [1, 1, 1, 0, 0],
                          [1, 1, 0, 0, 1]], dtype=torch.bool)[:, None, :]  # (S=3, B=1, L=5)
    lab = argmax_labels(right)[:, 0]  # (S, L)
    assert lab.tolist() == [[1, 0, 0, 1, 1],   # never right: more steps will not help, halt at once
                            [1, 1, 1, 1, 0],   # the fifth: wrong now, right again at step 3
                            [1, 1, 1, 1, 1]]


def test_fit_touches_only_the_halt_head_and_learns_a_separable_rule():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    ys = torch.randn(3, 4, 50, 32, generator=g)
    labels = (ys[..., 0] > 0).float()
    fit_halt_head(model, ys, labels, iters=300, lr=5e-2)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"q_head.weight", "q_head.bias"}
    with torch.no_grad():
        pred = model.halt_logit(ys[:-1]) > 0
    assert (pred == labels[:-1].bool()).float().mean() > 0.95


def test_step_states_label_what_sequential_decoding_reaches():
    """With as many Jacobi sweeps as positions the cache is decoding's: the last step's losses
    are those of token-by-token decoding with the real cache (float64)."""
    model = _model(torch.float64)
    t = torch.randint(0, 17, (2, 9), generator=torch.Generator().manual_seed(1))
    tokens, targets = t[:, :-1], t[:, 1:]
    for policy in (HaltPolicy.fixed(3), HaltPolicy(max_steps=3, threshold=0.5)):
        ys, ce, _ = step_states(model, tokens, targets, 3, policy, sweeps=tokens.shape[1])
        assert ys.shape == (3, 2, 8, 32) and ce.shape == (3, 2, 8)
        if policy.threshold is None:
            logits, _ = sequential_logits(model, tokens, policy)
            ref = F.cross_entropy(logits.reshape(-1, 17), targets.reshape(-1), reduction="none").view(2, 8)
            torch.testing.assert_close(ce[-1], ref.float(), rtol=1e-6, atol=1e-6)  # the CE is taken in fp32
    # a cache built from halted states differs from the full-depth one
    _, ce_full, _ = step_states(model, tokens, targets, 3, HaltPolicy.fixed(3), sweeps=8)
    _, ce_halt, _ = step_states(model, tokens, targets, 3, HaltPolicy(max_steps=3, threshold=0.5), sweeps=8)
    assert not torch.allclose(ce_full, ce_halt)


def test_calibration_moves_exits_toward_the_labels():
    """Hand-made world: the labels say every token halts after step 1 (margin huge); after
    calibration the exit stops everything at step 1. With margin 0 and a loss that strictly
    falls, most tokens continue."""
    model = _model()
    windows = torch.randint(0, 17, (16, 13), generator=torch.Generator().manual_seed(2))
    rep = calibrate_halting(model, windows, CalibrationConfig(margin=100.0, rounds=2, sweeps=2, iters=200))
    assert [r["round"] for r in rep["rounds"]] == [1, 2]
    assert rep["rounds"][-1]["mean_exit_step"] == pytest.approx(1.0)
    ys, _, _ = step_states(model, windows[:, :-1], windows[:, 1:], 3, HaltPolicy.fixed(3), 2)
    assert torch.all(exit_steps(model, ys, 0.5) == 1)


def test_unscored_positions_are_labelled_halt_now():
    """scored=False positions (a task's prompt) get label 1 at every step whatever their losses:
    with margin 0 the scored ones keep their loss-based labels, the rest stop at step 1."""
    model = _model()
    windows = torch.randint(0, 17, (16, 13), generator=torch.Generator().manual_seed(3))
    scored = torch.zeros(16, 12, dtype=torch.bool)
    scored[:, 6:] = True
    rep = calibrate_halting(model, windows, CalibrationConfig(margin=0.0, rounds=1, sweeps=2, iters=400),
                            scored=scored)
    assert rep["scored_share"] == 0.5
    ys, _, _ = step_states(model, windows[:, :-1], windows[:, 1:], 3, HaltPolicy.fixed(3), 2)
    steps = exit_steps(model, ys, 0.5)
    assert steps[:, :6].float().mean() < steps[:, 6:].float().mean()


def test_argmax_calibration_fits_the_argmax_labels_of_decodings_states():
    """label="argmax": round 1 labels the full-depth cache's states by their top tokens (the
    mean label per step is argmax_labels' on the same states, not the loss labels')."""
    model = _model()
    windows = torch.randint(0, 17, (24, 13), generator=torch.Generator().manual_seed(4))
    _, ce, right = step_states(model, windows[:, :-1], windows[:, 1:], 3, HaltPolicy.fixed(3), 2)
    want = argmax_labels(right)
    assert not torch.allclose(want.mean(dim=(1, 2)), halt_labels(ce, 0.02, 50.0).mean(dim=(1, 2)), atol=1e-2)
    rep = calibrate_halting(model, windows, CalibrationConfig(label="argmax", rounds=1, sweeps=2, iters=400))
    assert rep["label"] == "argmax"
    assert rep["rounds"][0]["mean_label_per_step"] == pytest.approx(want.mean(dim=(1, 2)).tolist(), abs=1e-4)


@pytest.mark.parametrize("bad", [dict(margin=-1.0), dict(threshold=1.0), dict(rounds=0), dict(lr=0.0),
                                 dict(label="nonsense")])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        CalibrationConfig(**bad)


def test_cli_writes_a_new_checkpoint_with_only_the_halt_head_changed(lm_ckpt, tmp_path):
    from safetensors.torch import load_file

    runner = CliRunner()
    out = tmp_path / "cal"
    res = runner.invoke(app, ["calibrate-halt", "--checkpoint", str(lm_ckpt), "--out", str(out),
                              "--windows", "8", "--rounds", "1", "--sweeps", "2", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["rounds"][0]["tokens"] == 8 * 32
    old, new = load_file(lm_ckpt / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(old) == set(new)
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed <= {"q_head.weight", "q_head.bias"} and changed
    assert json.loads((out / "meta.json").read_text())["halt_calibration"]["margin"] == 0.02
    # the calibrated checkpoint decodes
    res = runner.invoke(app, ["generate", "--checkpoint", str(out), "--prompt", "RO", "--max-new-tokens", "4",
                              "--temperature", "0"])
    assert res.exit_code == 0, res.output
    # never over its input, never over an existing run without --overwrite
    for args in (["--out", str(lm_ckpt)], ["--out", str(out)], ["--margin", "-1"], ["--windows", "0"],
                 ["--out", str(tmp_path / "x"), "--scored", "targets"],   # a text checkpoint has no targets
                 ["--out", str(tmp_path / "y"), "--scored", "nonsense"],
                 ["--out", str(tmp_path / "z"), "--pick-threshold", "0.5"]):   # no task to decode
        res = runner.invoke(app, ["calibrate-halt", "--checkpoint", str(lm_ckpt), *args])
        assert res.exit_code == 2, (args, res.output)


def test_pick_threshold_on_hand_made_rows():
    from trmlm.lm.calibrate import pick_threshold

    rows = [{"threshold": 0.5, "exact_acc": 0.30, "steps_mean": 1.1},
            {"threshold": 0.9, "exact_acc": 0.325, "steps_mean": 1.2},
            {"threshold": 0.99, "exact_acc": 0.33, "steps_mean": 1.4}]
    # full depth 0.33: 0.9 is within 0.01 and cheaper than 0.99; 0.5 is 0.03 below
    assert pick_threshold(rows, 0.33, 0.01)["threshold"] == 0.9
    assert pick_threshold(rows, 0.33, 0.05)["threshold"] == 0.5
    assert pick_threshold(rows, 0.33, 0.0)["threshold"] == 0.99
    # nothing within the tolerance: the most accurate, the cheaper on a tie
    tie = rows + [{"threshold": 0.999, "exact_acc": 0.33, "steps_mean": 1.6}]
    assert pick_threshold(tie, 0.40, 0.01)["threshold"] == 0.99
    # equal steps: the higher (safer) threshold
    same = [{"threshold": 0.5, "exact_acc": 0.3, "steps_mean": 1.0}, {"threshold": 0.7, "exact_acc": 0.3, "steps_mean": 1.0}]
    assert pick_threshold(same, 0.3, 0.01)["threshold"] == 0.7
    with pytest.raises(ValueError):
        pick_threshold([], 0.3, 0.01)


def test_cli_picks_the_stored_threshold_on_the_validation_problems(tmp_path):
    """--pick-threshold decodes the validation problems (the figures eval-lm --split val gives),
    stores the pick as the checkpoint's threshold, and refuses bad lists."""
    from trmlm.lm.checkpoint import load_lm

    runner = CliRunner()
    ckpt, out = tmp_path / "add", tmp_path / "cal"
    res = runner.invoke(app, ["train-lm", "--preset", "lm-tiny", "--task", "add-2", "--out", str(ckpt), "--quiet",
                              "--set", "train.train_steps=2", "--set", "data.task_eval_problems=40",
                              "--set", "data.task_test_problems=8"])
    assert res.exit_code == 0, res.output
    common = ["calibrate-halt", "--checkpoint", str(ckpt), "--windows", "4", "--rounds", "1", "--sweeps", "2",
              "--scored", "targets", "--pick-problems", "6"]
    res = runner.invoke(app, [*common, "--out", str(out), "--pick-threshold", "0.9,0.3,0.6", "--json"])
    assert res.exit_code == 0, res.output
    pick = json.loads(res.stdout)["threshold_pick"]
    assert [r["threshold"] for r in pick["rows"]] == [0.3, 0.6, 0.9] and pick["split"] == "val"
    ok = [r for r in pick["rows"] if r["exact_acc"] >= pick["full_depth"]["exact_acc"] - 0.01]
    expect = min(ok, key=lambda r: (r["steps_mean"], -r["threshold"])) if ok else None
    assert expect is None or pick["picked"] == expect["threshold"]
    assert load_lm(out).generation.halt_threshold == pick["picked"]
    assert json.loads((out / "meta.json").read_text())["halt_calibration"]["threshold_pick"]["picked"] == pick["picked"]
    for threshold, row in [(None, pick["full_depth"]), (0.6, pick["rows"][1])]:
        flags = ["--no-halting"] if threshold is None else ["--halt-threshold", str(threshold)]
        res = runner.invoke(app, ["eval-lm", "--checkpoint", str(out), "--split", "val", "--problems", "6",
                                  "--json", *flags])
        assert res.exit_code == 0, res.output
        ref = json.loads(res.stdout.strip().splitlines()[-1])
        assert (ref["exact_acc"], round(ref["steps_mean"], 4)) == (row["exact_acc"], row["steps_mean"])
    # more problems than the checkpoint's validation split holds (40): generated past it, the same draw
    res = runner.invoke(app, [*common[:-1], "50", "--out", str(tmp_path / "cal50"), "--pick-threshold", "0.6",
                              "--json"])
    assert res.exit_code == 0, res.output
    pick = json.loads(res.stdout)["threshold_pick"]
    res = runner.invoke(app, ["eval-lm", "--checkpoint", str(out), "--split", "val", "--problems", "50", "--json",
                              "--no-halting"])
    ref = json.loads(res.stdout.strip().splitlines()[-1])
    assert pick["problems"] == 50 and pick["full_depth"] == {"exact_acc": ref["exact_acc"],
                                                              "steps_mean": round(ref["steps_mean"], 4)}
    for bad in (["--pick-threshold", "0.5,1.5"], ["--pick-threshold", "0.5,x"], ["--pick-threshold", ","],
                ["--pick-threshold", "0.5", "--pick-problems", "0"], ["--pick-threshold", "0.5", "--pick-tolerance", "-1"]):
        res = runner.invoke(app, [*common, "--out", str(tmp_path / "bad"), *bad])
        assert res.exit_code == 2 and "--pick" in res.output, (bad, res.output)
