"""trm export --format onnx: every graph equals the model's own method to 1e-4; the torch-free
onnxruntime decode loop writes the text `trm generate --temperature 0` writes; bad input exits 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from trmlm.cli.main import app
from cli_checks import assert_one_line_error

pytest.importorskip("onnxruntime", reason="the `export` extra (onnx, onnxscript, onnxruntime)")
from trmlm.core import RecursionState  # noqa: E402
from trmlm.export.ort_puzzle import OnnxPuzzle  # noqa: E402
from trmlm.lm.checkpoint import load_lm  # noqa: E402
from trmlm.puzzle.eval import trace_supervision  # noqa: E402
from trmlm.puzzles.run import load_model  # noqa: E402
from test_viewer import tiny_puzzle_checkpoint  # noqa: E402

torch.set_num_threads(1)
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4


def export(checkpoint: Path, out: Path, *extra: str):
    res = runner.invoke(app, ["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out),
                              "--json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def lm_export(lm_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "lm"
    report = export(lm_ckpt, out, "--bench", "8")
    assert report["kind"] == "lm" and all(v <= TOL for v in report["parity_max_abs_diff"].values())
    assert {"lm_init.onnx", "lm_refine.onnx", "lm_commit.onnx", "lm_logits.onnx", "lm_halt.onnx",
            "lm_weights.bin", "tokenizer.json", "manifest.json"} <= set(report["files"])
    bench = report["bench"]
    assert bench["same_text"] and bench["tokens"] == 8 and bench["torch_tokens_per_s"] > 0
    assert bench["onnxruntime_tokens_per_s"] > 0 and bench["hardware"]["threads"] == 1
    return out


def _sessions(export_dir: Path) -> dict:
    import onnxruntime as ort

    manifest = json.loads((export_dir / "manifest.json").read_text())
    return {name: ort.InferenceSession(str(export_dir / f), providers=["CPUExecutionProvider"])
            for name, f in manifest["graphs"].items()}


def _max_diff(got: list[np.ndarray], ref: list[torch.Tensor]) -> float:
    assert [g.shape for g in got] == [tuple(r.shape) for r in ref]
    return max(float(np.abs(g - r.numpy()).max()) if r.numel() else 0.0 for g, r in zip(got, ref))


@pytest.mark.parametrize("batch,prefix_len", [(1, 0), (1, 1), (1, 9), (3, 31)])
def test_lm_graphs_equal_the_model_methods(lm_ckpt, lm_export, batch, prefix_len):
    """Each graph against the model's own method on fresh inputs, any prefix length (0 = the
    first token) and batch size."""
    model = load_lm(lm_ckpt).model
    net = model.cfg.model
    s = _sessions(lm_export)
    g = torch.Generator().manual_seed(prefix_len)
    tok = torch.randint(0, net.vocab_size, (batch, 1), generator=g)
    pos = torch.tensor([prefix_len])
    y, z = torch.randn(batch, 1, net.d_model, generator=g), torch.randn(batch, 1, net.d_model, generator=g)
    pk = torch.randn(net.n_layers, batch, net.n_heads, prefix_len, net.head_dim, generator=g)
    pv = torch.randn(net.n_layers, batch, net.n_heads, prefix_len, net.head_dim, generator=g)
    prefix = [(pk[i], pv[i]) for i in range(net.n_layers)]
    with torch.no_grad():
        x = model.embed_tokens(tok)
        init = model.initial_state(batch, 1)
        new = model.refine(RecursionState(y, z), x, pos, prefix, None, grad="none")
        kvs = model.commit_kv(x, RecursionState(y, z), pos, prefix)
        ref = {"init": [init.y, init.z], "refine": [new.y, new.z],
               "commit": [torch.stack([k for k, _ in kvs]), torch.stack([v for _, v in kvs])],
               "logits": [model.logits(y)], "halt": [model.halt_logit(y)]}
    n = {"token": tok.numpy(), "position": pos.numpy(), "y": y.numpy(), "z": z.numpy(),
         "prefix_k": pk.numpy(), "prefix_v": pv.numpy()}
    feeds = {"init": ["token"], "refine": ["token", "position", "y", "z", "prefix_k", "prefix_v"],
             "commit": ["token", "y", "z", "position", "prefix_k", "prefix_v"], "logits": ["y"], "halt": ["y"]}
    for name, keys in feeds.items():
        declared = {i.name for i in s[name].get_inputs()}  # z of the commit: only if the model commits it
        assert _max_diff(s[name].run(None, {k: n[k] for k in keys if k in declared}), ref[name]) <= TOL, name


def _ort_generate(export_dir: Path, *args: str) -> dict:
    """The onnxruntime loop in a fresh interpreter where `import torch` fails."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from trmlm.export.ort_lm import main\n"
            f"raise SystemExit(main({[str(export_dir), *args, '--json']!r}))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _torch_generate(checkpoint: Path, *args: str) -> dict:
    res = runner.invoke(app, ["generate", "--checkpoint", str(checkpoint), "--temperature", "0", "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["samples"][0]


def _mixed_threshold(checkpoint: Path, prompt: str, tokens: int) -> float:
    """A halt threshold in the widest gap between the middle 60% of the step-1 halt probabilities of a
    recorded run (trmlm.viewer.record): some tokens halt after step 1, the others refine on, and
    no probability sits within rounding distance of the threshold."""
    from trmlm.lm.generate import GenerationConfig, generate
    from trmlm.viewer.record import TextRecorder

    lm = load_lm(checkpoint)
    gcfg = GenerationConfig(temperature=0.0, max_new_tokens=tokens, no_halting=True, cache=lm.generation.cache)
    rec = TextRecorder(lm.tokenizer, gcfg)
    list(generate(lm.model, rec.tokenizer, prompt, rec.gcfg))
    probs = sorted({r.steps[0].halt_prob for r in rec.records if r.steps})  # (a token not refined: none)
    # onnxruntime and torch halt probabilities differ by ~1e-8 here (logits by ~1e-6, times
    # sigmoid' ~ 0.007); a gap of 1e-6 leaves a wide margin.
    middle = probs[len(probs) // 5: 4 * len(probs) // 5 + 1]
    gap, threshold = max((b - a, (a + b) / 2) for a, b in zip(middle, middle[1:]))
    assert gap > 1e-6, "the recorded halt probabilities are too close together"
    return threshold


def ort_equals_torch(checkpoint: Path, export_dir: Path, prompt: str, tokens: int, extra) -> tuple[dict, list[str]]:
    """Greedy text and per-token steps of the onnxruntime loop equal `trm generate`'s; `extra`
    "mixed": a threshold between the recorded step-1 halt probabilities (then some tokens halt
    after 1 step and others do not). Returns torch's output and the arguments used."""
    mixed = extra == "mixed"
    if mixed:
        extra = ["--halt-threshold", repr(_mixed_threshold(checkpoint, prompt, tokens))]
    args = ["--prompt", prompt, "--max-new-tokens", str(tokens), *extra]
    ref = _torch_generate(checkpoint, *args)
    got = _ort_generate(export_dir, *args)
    assert got["text"] == ref["text"] and got["tokens"] == ref["tokens"] == tokens
    assert got["token_steps"] == ref["token_steps"]
    if mixed:  # halting really decided
        assert 1 in got["token_steps"] and max(got["token_steps"]) > 1
    return ref, args


@pytest.mark.parametrize("extra", [[], ["--no-halting", "--max-steps", "3"], "mixed"])
def test_ort_greedy_text_equals_trm_generate(lm_ckpt, lm_export, extra):
    """60 tokens from a 6-token prompt: the context (32) fills and the window slides twice."""
    ort_equals_torch(lm_ckpt, lm_export, "ROMEO:", 60, extra)


def test_ort_stop_string_and_errors(lm_ckpt, lm_export):
    ref = _torch_generate(lm_ckpt, "--prompt", "ROMEO:", "--max-new-tokens", "30")
    stop = ref["text"][5:7]
    got = _ort_generate(lm_export, "--prompt", "ROMEO:", "--max-new-tokens", "30", "--stop", stop)
    want = _torch_generate(lm_ckpt, "--prompt", "ROMEO:", "--max-new-tokens", "30", "--stop", stop)
    assert got["text"] == want["text"] and got["stop_reason"] == want["stop_reason"] == "stop"
    for args, needle in ((["--prompt", ""], "empty prompt"), (["--prompt", "A" * 40], "does not fit"),
                         (["--prompt", "A", "--min-steps", "3", "--max-steps", "2"], "--min-steps")):
        code = ("import sys; sys.modules['torch'] = None\nfrom trmlm.export.ort_lm import main\n"
                f"raise SystemExit(main({[str(lm_export), *args]!r}))\n")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        assert res.returncode == 2 and res.stderr.startswith("error: ") and needle in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("task,preset", [("sudoku", "sudoku-tiny"), ("maze", "maze-tiny")])
def test_puzzle_export_equals_the_model(tmp_path_factory, task, preset):
    """The step graph against one call of the model (MLP mixer; attention with RoPE), and the
    onnxruntime steps against trace_supervision: same predictions after every step."""
    ckpt = tiny_puzzle_checkpoint(tmp_path_factory, task, preset)
    out = tmp_path_factory.mktemp("onnx") / task
    report = export(ckpt, out)
    assert report["kind"] == "puzzle" and set(report["parity_max_abs_diff"]) == {"init", "step"}
    model, _, _ = load_model(ckpt)
    cfg = model.cfg
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, cfg.vocab_size, (3, cfg.seq_len), generator=g)
    y, z = torch.randn(3, cfg.total_len, cfg.d_model, generator=g), torch.randn(3, cfg.total_len, cfg.d_model, generator=g)
    with torch.no_grad():
        ref = model(RecursionState(y, z), tokens, None, grad="none")
    s = _sessions(out)
    names = {i.name for i in s["step"].get_inputs()}
    feeds = {k: v for k, v in {"y": y.numpy(), "z": z.numpy(), "tokens": tokens.numpy(),
                               "puzzle_ids": np.zeros(3, np.int64)}.items() if k in names}
    got = s["step"].run(None, feeds)
    assert _max_diff(got, [ref.state.y, ref.state.z, ref.logits, ref.halt_logit]) <= TOL
    steps = cfg.max_sup_steps + 2  # past N_sup: the graph is one step, any count runs
    tr = trace_supervision(model, tokens, None, steps)
    run = OnnxPuzzle(out).solve(tokens.numpy(), steps=steps)
    assert (run.predictions == tr.predictions).all()
    assert np.abs(run.halt_logit - tr.q_halt).max() <= TOL


def test_export_errors(lm_ckpt, lm_export, tmp_path):
    base = ["export", "--checkpoint", str(lm_ckpt), "--out"]
    assert_one_line_error(runner.invoke(app, [*base, str(tmp_path / "a"), "--format", "tflite"]), "--format must be onnx")
    assert_one_line_error(runner.invoke(app, [*base, str(lm_export)]), "--overwrite")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert_one_line_error(runner.invoke(app, [*base, str(tmp_path / "busy")]), "holds no export")
    assert_one_line_error(runner.invoke(app, ["export", "--checkpoint", str(tmp_path / "none"), "--out",
                                              str(tmp_path / "b")]), "checkpoint not found")
    from trmlm.export.ort_lm import OnnxLM
    from trmlm.errors import TRMError

    with pytest.raises(TRMError, match="not a `trm export` directory"):
        OnnxLM(tmp_path)


def test_baseline_lm_does_not_export(tmp_path):
    out = tmp_path / "base"
    res = runner.invoke(app, ["train-lm", "--preset", "lm-tiny", "--model", "transformer", "--out", str(out),
                              "--quiet", "--set", "train.train_steps=1"])
    assert res.exit_code == 0, res.output
    assert_one_line_error(runner.invoke(app, ["export", "--checkpoint", str(out), "--out", str(tmp_path / "x")]),
                          "only TRM language models export")
