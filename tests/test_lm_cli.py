"""CLI: train-lm on the tiny preset then generate; bad input is a one-line error with exit code 2."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from trmlm.cli.common import configs_dir
from trmlm.cli.main import app
from trmlm.lm.config import LMConfig, load_lm_config

torch.set_num_threads(1)
runner = CliRunner()


def test_train_lm_writes_a_complete_checkpoint(lm_ckpt):
    names = {p.name for p in lm_ckpt.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json"} <= names
    meta = json.loads((lm_ckpt / "meta.json").read_text())
    assert meta["step"] == 4 and meta["arch"] == "trm" and meta["finished"] is True
    assert 0 < meta["metrics"]["bpc_sequential"] < 10


def test_generate_streams_text_and_stats(lm_ckpt):
    res = runner.invoke(app, ["generate", "--checkpoint", str(lm_ckpt), "--prompt", "ROMEO:",
                              "--max-new-tokens", "12", "--seed", "1", "--show-steps"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("ROMEO:")
    assert "steps per character" in res.stdout  # not a terminal: step digits under the text
    assert "tokens/s" in res.stderr and "mean steps/token" in res.stderr


def test_generate_with_per_step_cache(lm_ckpt):
    res = runner.invoke(app, ["generate", "--checkpoint", str(lm_ckpt), "--prompt", "ROMEO:",
                              "--max-new-tokens", "8", "--cache", "per-step", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["samples"][0]["tokens"] == 8
    one_line_error(runner.invoke(app, ["generate", "--checkpoint", str(lm_ckpt), "--prompt", "A",
                                       "--cache", "huge"]), "--cache")


def test_generate_json_is_reproducible(lm_ckpt):
    args = ["generate", "--checkpoint", str(lm_ckpt), "--prompt", "ROMEO:", "--max-new-tokens", "10",
            "--json", "--seed", "7", "--temperature", "1.0", "--num-samples", "2"]
    a, b = runner.invoke(app, args), runner.invoke(app, args)
    assert a.exit_code == 0, a.output
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert all(len(s["token_steps"]) == s["tokens"] for s in ja["samples"])
    assert [s["text"] for s in ja["samples"]] == [s["text"] for s in jb["samples"]]
    assert len(ja["samples"]) == 2 and all(s["tokens"] == 10 for s in ja["samples"])


def test_eval_lm_reports_sequential_and_parallel(lm_ckpt):
    res = runner.invoke(app, ["eval-lm", "--checkpoint", str(lm_ckpt), "--tokens", "64",
                              "--parallel-tokens", "64", "--json", "--max-steps", "1", "--no-halting"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["steps_mean"] == 1.0 and m["eval_tokens"] == 64  # 2 windows of 32 (context 32)
    assert 0 < m["bpc_sequential"] < 10 and 0 < m["bpc_parallel_same_windows"] < 10


@pytest.mark.parametrize("arch", ["transformer", "transformer-iso"])
def test_baselines_train_and_generate(arch, tmp_path):
    out = tmp_path / arch
    res = runner.invoke(app, ["train-lm", "--preset", "lm-tiny", "--model", arch, "--out", str(out),
                              "--quiet", "--set", "train.train_steps=2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["generate", "--checkpoint", str(out), "--prompt", "A", "--max-new-tokens", "5"])
    assert res.exit_code == 0, res.output
    one_line_error(runner.invoke(app, ["generate", "--checkpoint", str(out), "--prompt", "A",
                                       "--cache", "per-step"]), "needs a TRM")


def one_line_error(res, fragment: str) -> None:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], res.stderr
    assert "Traceback" not in res.output


@pytest.mark.parametrize("prompt,fragment", [
    ("", "empty prompt"),
    ("ROMEO " * 10, "does not fit"),   # lm-tiny context is 32 tokens
    ("ROMEO ✓", "not in the tokenizer"),
])
def test_bad_prompt(lm_ckpt, prompt, fragment):
    res = runner.invoke(app, ["generate", "--checkpoint", str(lm_ckpt), "--prompt", prompt])
    one_line_error(res, fragment)


def test_missing_and_corrupt_checkpoint(lm_ckpt, tmp_path):
    one_line_error(runner.invoke(app, ["generate", "--checkpoint", str(tmp_path / "nope"),
                                       "--prompt", "A"]), "not found")
    bad = tmp_path / "bad"
    shutil.copytree(lm_ckpt, bad)
    (bad / "model.safetensors").write_bytes(b"garbage")
    one_line_error(runner.invoke(app, ["generate", "--checkpoint", str(bad), "--prompt", "A"]),
                   "corrupt checkpoint weights")
    bad_tok = tmp_path / "badtok"
    shutil.copytree(lm_ckpt, bad_tok)
    (bad_tok / "tokenizer.json").write_text("{oops")
    one_line_error(runner.invoke(app, ["generate", "--checkpoint", str(bad_tok), "--prompt", "A"]),
                   "corrupt tokenizer")
    (bad_tok / "tokenizer.json").unlink()
    one_line_error(runner.invoke(app, ["generate", "--checkpoint", str(bad_tok), "--prompt", "A"]),
                   "no tokenizer.json")


def test_bad_options_and_config(lm_ckpt, tmp_path):
    one_line_error(runner.invoke(app, ["generate", "--checkpoint", str(lm_ckpt), "--prompt", "A",
                                       "--max-steps", "99"]), "N_sup")
    one_line_error(runner.invoke(app, ["train-lm", "--preset", "nope"]), "unknown preset")
    one_line_error(runner.invoke(app, ["train-lm", "--preset", "lm-tiny", "--set", "model.d_modle=3"]),
                   "unknown config key")
    one_line_error(runner.invoke(app, ["train-lm", "--preset", "lm-tiny", "--model", "rnn"]), "--model")
    one_line_error(runner.invoke(app, ["train-lm", "--preset", "lm-tiny", "--data",
                                       str(tmp_path / "missing.txt")]), "not found")


def test_train_tokenizer(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be, that is the question.\n" * 200)
    res = runner.invoke(app, ["train-tokenizer", "--data", str(corpus), "--vocab-size", "300",
                              "--out", str(tmp_path / "tok")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "tok" / "tokenizer.json").is_file()


def test_every_lm_preset_loads_strictly():
    presets = sorted(configs_dir().glob("lm-*.yaml"))
    assert {p.stem for p in presets} >= {"lm-tiny", "lm-shakespeare-cpu", "lm-paper"}
    for p in presets:
        cfg = load_lm_config(p.stem, [], [], configs_dir())
        assert isinstance(cfg, LMConfig) and cfg.model.puzzle_emb_len == 0


def test_checkpoints_from_before_the_commit_input_option_keep_their_semantics(lm_ckpt, tmp_path):
    """A config without `commit_input` (and with the old `net` section name) loads as the
    model it was: committing the answer state alone."""
    import json
    import shutil

    from trmlm.lm.checkpoint import load_lm

    old = tmp_path / "old"
    shutil.copytree(lm_ckpt, old)
    cfg = json.loads((old / "config.json").read_text())
    cfg["net"] = cfg.pop("model")
    del cfg["commit_input"]
    (old / "config.json").write_text(json.dumps(cfg))
    lm = load_lm(old)
    assert lm.cfg.commit_input == "y" and lm.cfg.model == load_lm(lm_ckpt).cfg.model


def test_stop_strings_typed_with_escapes():
    from trmlm.cli.lm_cmds import _unescape

    assert _unescape(r"\n") == "\n" and _unescape(r"a\tb") == "a\tb"
    assert _unescape(r"\\n") == "\\n" and _unescape(r"\x") == "\\x" and _unescape("é\\") == "é\\"
