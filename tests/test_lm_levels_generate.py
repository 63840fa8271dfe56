"""A cache_levels checkpoint is sampled with its own per-step decoder by default, from the CLI
(`trm generate` without --cache) and from the Python API (`trmlm.load(...).generate`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import trmlm
from trmlm.cli.main import app
from model_checks import train_levels_lm

runner = CliRunner()


@pytest.fixture(scope="module", params=["all", "loss"])
def levels_ckpt(request, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp(f"levels_gen_{request.param}") / "ckpt"
    return out, train_levels_lm(out, request.param)


def _cli(ckpt: Path, *args: str) -> tuple[str, list[int]]:
    res = runner.invoke(app, ["generate", "--checkpoint", str(ckpt), "--temperature", "0", "--json", *args])
    assert res.exit_code == 0, res.output
    sample = json.loads(res.stdout)["samples"][0]
    return sample["text"], sample["token_steps"]


def test_generate_defaults_to_the_checkpoints_own_cache(levels_ckpt):
    """Without --cache, the per-step levels; the commit-last cache reads states the model was
    never trained on and writes other text. The API's default is the same decoder."""
    ckpt, prompt = levels_ckpt
    args = ["--prompt", prompt, "--max-new-tokens", "24", "--no-halting"]
    own = _cli(ckpt, *args)
    assert own == _cli(ckpt, *args, "--cache", "per-step")
    assert own[0] != _cli(ckpt, *args, "--cache", "commit-last")[0]
    gen = trmlm.load(ckpt)
    assert gen.generate(prompt, max_new_tokens=24, temperature=0.0, no_halting=True) == own[0]
    assert gen.generate(prompt, max_new_tokens=24, temperature=0.0, no_halting=True, cache="commit-last") != own[0]
