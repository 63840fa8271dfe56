"""A per-step-cache checkpoint (`cache_levels`) exported: the onnxruntime loop decodes it with its
own levels, as `trm generate` does by default (tests/test_lm_levels_generate.py), and writes the
same text with the same steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from model_checks import train_levels_lm

pytest.importorskip("onnxruntime", reason="the `export` extra (onnx, onnxscript, onnxruntime)")
from test_export import _ort_generate, export, ort_equals_torch  # noqa: E402


@pytest.fixture(scope="module", params=["all", "loss", "cached"])
def levels_ckpt(request, tmp_path_factory) -> tuple[Path, Path, str]:
    """A two-level state-cache lm-tiny (model_checks.train_levels_lm), its export, and a prompt."""
    root = tmp_path_factory.mktemp(f"levels_{request.param}")
    prompt = train_levels_lm(root / "ckpt", request.param)
    report = export(root / "ckpt", root / "onnx", "--bench", "8", "--bench-prompt", prompt)
    (root / "report.json").write_text(json.dumps(report))
    return root / "ckpt", root / "onnx", prompt


@pytest.mark.parametrize("extra", [[], ["--no-halting"], ["--no-halting", "--max-steps", "5"], "mixed"])
def test_ort_levels_text_equals_trm_generate(levels_ckpt, extra):
    """40 tokens from a 6-token prompt (the 32-token context slides once); with a threshold
    between the recorded halt probabilities some tokens halt after 1 step and commit that
    state to both levels."""
    ckpt, onnx, prompt = levels_ckpt
    ref, args = ort_equals_torch(ckpt, onnx, prompt, 40, extra)
    # the commit-last loop on the same graphs is another model: it must not pass for this one
    other = _ort_generate(onnx, *args, "--cache", "commit-last")
    assert (other["text"], other["token_steps"]) != (ref["text"], ref["token_steps"])


def test_ort_levels_manifest_and_bench(levels_ckpt):
    """The manifest carries the checkpoint's decoder; `trm export --bench` times both loops on it."""
    _, onnx, _ = levels_ckpt
    manifest = json.loads((onnx / "manifest.json").read_text())
    assert manifest["generation"]["cache"] == "per-step" and manifest["config"]["cache_levels"] == 2
    assert json.loads((onnx.parent / "report.json").read_text())["bench"]["same_text"]
