"""`trm train-lm --init-from`: a run that starts from a checkpoint's weights and tokenizer
(fine-tuning, e.g. with `cache_halting` after `trm calibrate-halt`)."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from trmlm.cli.main import app

# One optimizer step that cannot move a weight: what is saved is what the run started from.
FROZEN = ["--set", "train.train_steps=1", "--set", "train.lr=0", "--set", "train.weight_decay=0", "--quiet"]


def _train(*args: str):
    return CliRunner().invoke(app, ["train-lm", "--preset", "lm-tiny", *args])


def test_the_run_starts_from_the_checkpoint_weights(lm_ckpt, tmp_path):
    start = load_file(lm_ckpt / "model.safetensors")
    res = _train("--init-from", str(lm_ckpt), "--out", str(tmp_path / "ft"), *FROZEN)
    assert res.exit_code == 0, res.output
    tuned = load_file(tmp_path / "ft" / "model.safetensors")
    assert set(tuned) == set(start)
    assert all(torch.equal(start[k], tuned[k]) for k in start)
    meta = json.loads((tmp_path / "ft" / "meta.json").read_text())
    assert meta["init_from"] == str(lm_ckpt) and meta["step"] == 1
    assert (tmp_path / "ft" / "tokenizer.json").read_bytes() == (lm_ckpt / "tokenizer.json").read_bytes()
    # the same frozen step without --init-from saves a fresh initialisation
    res = _train("--out", str(tmp_path / "fresh"), *FROZEN)
    assert res.exit_code == 0, res.output
    fresh = load_file(tmp_path / "fresh" / "model.safetensors")
    assert not all(torch.equal(start[k], fresh[k]) for k in start)


def test_a_different_network_or_a_bad_source_is_refused(lm_ckpt, tmp_path):
    before = {p.name: p.read_bytes() for p in lm_ckpt.iterdir() if p.is_file()}
    cases = [
        (["--init-from", str(lm_ckpt), "--set", "model.d_model=64"], "model.d_model"),
        (["--init-from", str(lm_ckpt), "--model", "transformer"], "arch"),
        (["--init-from", str(lm_ckpt), "--set", "commit_input=y"], "commit_input"),
        (["--init-from", str(tmp_path / "missing")], "missing"),
        (["--init-from", str(lm_ckpt), "--task", "add-2"], "its tokenizer has no"),   # Shakespeare has no digits
    ]
    for args, named in cases:
        res = _train(*args, "--out", str(tmp_path / "x"), *FROZEN)
        assert res.exit_code == 2, (args, res.output)
        assert named in res.output and "Traceback" not in res.output, (args, res.output)
        assert not (tmp_path / "x").exists(), args
    # never into its own directory, even with --overwrite
    res = _train("--init-from", str(lm_ckpt), "--out", str(lm_ckpt), "--overwrite", *FROZEN)
    assert res.exit_code == 2 and "own --out" in res.output, res.output
    assert {p.name: p.read_bytes() for p in lm_ckpt.iterdir() if p.is_file()} == before
