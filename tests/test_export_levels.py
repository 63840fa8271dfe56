"""A per-step-cache checkpoint (`cache_levels`) exported: the onnxruntime loop decodes it with its
own levels, as `trm generate` does by default, and writes the same text with the same steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trmlm.cli.main import app

pytest.importorskip("onnxruntime", reason="the `export` extra (onnx, onnxscript, onnxruntime)")
from test_export import _mixed_threshold, _ort_generate, _torch_generate, export  # noqa: E402

runner = CliRunner()
LEVELS = ["--set", "commit_input=x+y+z", "--set", "cross_grad=true", "--set", "train_cache=previous_step",
          "--set", "cache_levels=2", "--set", "model.max_sup_steps=3", "--set", "step_weights=linear",
          "--set", "updates=per_batch"]


@pytest.fixture(scope="module", params=["all", "loss"])
def levels_ckpt(request, tmp_path_factory) -> tuple[Path, Path, str]:
    """lm-tiny with a two-level state cache and N_sup 3 (step 3 reads the last level), every
    position refined or (refine_on loss, the loss on the answers of 2-digit sums) only the
    answers; 6 optimizer steps; its export, and a prompt in its alphabet."""
    root = tmp_path_factory.mktemp(f"levels_{request.param}")
    extra = ["--set", "refine_on=all"] if request.param == "all" else \
        ["--task", "add-2", "--set", "refine_on=loss", "--set", "data.loss_on=target"]
    res = runner.invoke(app, ["train-lm", "--preset", "lm-tiny", "--out", str(root / "ckpt"), "--quiet",
                              *LEVELS, *extra])
    assert res.exit_code == 0, res.output
    prompt = "ROMEO:" if request.param == "all" else "12+34="
    report = export(root / "ckpt", root / "onnx", "--bench", "8", "--bench-prompt", prompt)
    (root / "report.json").write_text(json.dumps(report))
    return root / "ckpt", root / "onnx", prompt


def test_generate_defaults_to_the_checkpoints_own_cache(levels_ckpt):
    """`trm generate` without --cache decodes a cache_levels checkpoint with its per-step levels;
    the commit-last cache reads states it was never trained on and writes other text."""
    ckpt, _, prompt = levels_ckpt
    args = ["--prompt", prompt, "--max-new-tokens", "24", "--no-halting"]
    def run(*more: str) -> tuple[str, list[int]]:
        out = _torch_generate(ckpt, *args, *more)
        return out["text"], out["token_steps"]

    own = run()
    assert own == run("--cache", "per-step")
    assert own[0] != run("--cache", "commit-last")[0]


@pytest.mark.parametrize("extra", [[], ["--no-halting"], ["--no-halting", "--max-steps", "5"], "mixed"])
def test_ort_levels_text_equals_trm_generate(levels_ckpt, extra):
    """40 tokens from a 6-token prompt (the 32-token context slides once); with a threshold
    between the recorded halt probabilities some tokens halt after 1 step and commit that
    state to both levels."""
    ckpt, onnx, prompt = levels_ckpt
    if extra == "mixed":
        extra = ["--halt-threshold", repr(_mixed_threshold(ckpt, prompt, 40))]
    args = ["--prompt", prompt, "--max-new-tokens", "40", *extra]
    ref = _torch_generate(ckpt, *args)
    got = _ort_generate(onnx, *args)
    assert got["text"] == ref["text"] and got["tokens"] == ref["tokens"] == 40
    assert got["token_steps"] == ref["token_steps"]
    if extra and extra[0] == "--halt-threshold":
        assert 1 in got["token_steps"] and max(got["token_steps"]) > 1
    # the commit-last loop on the same graphs is another model: it must not pass for this one
    other = _ort_generate(onnx, *args, "--cache", "commit-last")
    assert (other["text"], other["token_steps"]) != (ref["text"], ref["token_steps"])


def test_ort_levels_manifest_and_bench(levels_ckpt):
    """The manifest carries the checkpoint's decoder; `trm export --bench` times both loops on it."""
    _, onnx, _ = levels_ckpt
    manifest = json.loads((onnx / "manifest.json").read_text())
    assert manifest["generation"]["cache"] == "per-step" and manifest["config"]["cache_levels"] == 2
    assert json.loads((onnx.parent / "report.json").read_text())["bench"]["same_text"]
