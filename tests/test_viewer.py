"""The viewer pages (trm solve / eval-puzzle / generate --html, trm view): the inline trace is
the run's own data (the same grids, halt logits, tokens and steps as --json prints), the page is
self-contained, bad input exits 2. The browser test drives the pages (test_viewer_browser.py)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from trmlm.cli.main import app
from cli_checks import assert_one_line_error
from trmlm.viewer.page import extract_json, read_document

torch.set_num_threads(1)
runner = CliRunner()
EASY = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
MAZE6 = "#S  ##\n# # # \n#   G#\n## ## \n      \n######\n"


def tiny_puzzle_checkpoint(tmp_path_factory, task: str, preset: str) -> Path:
    """A tiny trained puzzle checkpoint, trained once per test session (kept under basetemp)."""
    out = tmp_path_factory.getbasetemp() / f"viewer-{preset}"
    if not (out / "model.safetensors").is_file():
        res = runner.invoke(app, ["train-puzzle", task, "--preset", preset, "--out", str(out), "--quiet",
                                  "--overwrite"], env={"TRM_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "cache")})
        assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def sudoku_ckpt(tmp_path_factory) -> Path:
    return tiny_puzzle_checkpoint(tmp_path_factory, "sudoku", "sudoku-tiny")


def page_data(path: Path) -> dict:
    html = path.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "the page must not load anything"
    return json.loads(extract_json(html))


def sigmoid(q: float) -> float:
    return 1 / (1 + math.exp(-q))


def test_solve_html_holds_every_step(sudoku_ckpt, tmp_path):
    page = tmp_path / "solve.html"
    res = runner.invoke(app, ["solve", "sudoku", EASY, "--checkpoint", str(sudoku_ckpt), "--steps", "4",
                              "--html", str(page), "--json", "--show-steps"])
    assert res.exit_code == 0, res.output
    ref = json.loads(res.stdout)
    doc = page_data(page)
    assert doc["kind"] == "puzzle" and doc["task"] == "sudoku" and len(doc["puzzles"]) == 1
    p = doc["puzzles"][0]
    assert "".join(p["input"]["cells"]) == EASY
    assert [sum(map(bool, p["givens"]))] == [sum(c != "." for c in EASY)]
    assert len(p["steps"]) == len(ref["steps"]) == 4
    for step, want in zip(p["steps"], ref["steps"]):
        assert (step["rows"], step["cols"]) == (9, 9)
        assert "".join(step["cells"]) == want["prediction"]
        assert step["q_halt"] == pytest.approx(want["q_halt"], abs=1e-4)
        assert step["halt_prob"] == pytest.approx(sigmoid(want["q_halt"]), abs=1e-4)
    assert p["steps"][-1]["correct"] == ref["correct"]
    assert len(p["target"]["cells"]) == 81 and "." not in p["target"]["cells"]


def test_eval_puzzle_html(sudoku_ckpt, tmp_path):
    page = tmp_path / "eval.html"
    res = runner.invoke(app, ["eval-puzzle", "sudoku", "--checkpoint", str(sudoku_ckpt), "--json", "--html", str(page)],
                        env={"TRM_CACHE_DIR": str(tmp_path)})
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    doc = page_data(Path(metrics["html"]))
    assert len(doc["puzzles"]) == 8 and all(len(p["steps"]) == 2 for p in doc["puzzles"])
    # the page's per-step verdicts are the evaluation's own: exact accuracy per step over the 8
    per_step = [np.mean([p["steps"][s]["correct"] for p in doc["puzzles"]]) for s in range(2)]
    assert per_step == pytest.approx(metrics["exact_acc_per_step"], abs=1e-3)


def test_maze_and_arc_grids(tmp_path):
    """The task adapters: maze characters on an N x N grid; ARC grids cropped from the canvas
    (their shape may change from step to step) with the ARC palette."""
    from trmlm.cli.view_cmds import ARC_PALETTE, puzzle_page
    from trmlm.puzzles.arc.encode import encode
    from trmlm.puzzles.run import get_task

    maze = get_task("maze")
    tok = maze.parse_input(MAZE6)
    path = maze.reference_solution(tok)
    preds = np.stack([tok, path])[:, None]  # (S=2, B=1, L)
    doc = read_document(puzzle_page(tmp_path / "maze.json", "maze", maze, tok[None], preds, np.array([[-3.0], [2.0]]),
                                    [path], np.array([[False], [True]]), "maze"))
    p = doc["puzzles"][0]
    assert (p["input"]["rows"], p["input"]["cols"]) == (6, 6) and "".join(p["input"]["cells"]) == MAZE6.replace("\n", "")
    assert "o" in p["steps"][1]["cells"] and p["halt_step"] == 2 and doc["palette"]["#"]

    arc = get_task("arc")
    inp = np.array([[1, 2], [3, 4]])
    steps = np.stack([encode(np.array([[1, 2, 3]])), encode(np.array([[4, 3], [2, 1]]))])[:, None]
    doc = read_document(puzzle_page(tmp_path / "arc.json", "arc", arc, encode(inp)[None], steps,
                                    np.zeros((2, 1)), [encode(np.array([[4, 3], [2, 1]]))], None, "arc"))
    p = doc["puzzles"][0]
    assert [(s["rows"], s["cols"]) for s in p["steps"]] == [(1, 3), (2, 2)]
    assert p["steps"][1]["cells"] == p["target"]["cells"] == ["4", "3", "2", "1"]
    assert doc["palette"] == ARC_PALETTE and p["givens"] is None


def test_generate_html_ties_every_step_to_its_token(lm_ckpt, tmp_path):
    """Greedy, 40 tokens (the 32-token window slides): the page's tokens are the printed text,
    their steps the reported steps, and the final step's top-1 is the next generated token."""
    page = tmp_path / "gen.html"
    res = runner.invoke(app, ["generate", "--checkpoint", str(lm_ckpt), "--prompt", "ROMEO:", "--max-new-tokens", "40",
                              "--temperature", "0", "--json", "--html", str(page)])
    assert res.exit_code == 0, res.output
    ref = json.loads(res.stdout.strip().splitlines()[-1])["samples"][0]
    doc = page_data(page)
    assert doc["kind"] == "text" and doc["prompt"] == "ROMEO:" and doc["max_steps"] == 2
    toks = doc["samples"][0]["tokens"]
    assert "".join(t["text"] for t in toks) == ref["text"]
    assert [t["steps"] for t in toks] == ref["token_steps"]
    for t in toks:
        assert len(t["per_step"]) == t["steps"]
        for st in t["per_step"]:
            probs = [p for _, p, _ in st["top"]]
            assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < st["halt_prob"] < 1
        assert t["per_step"][-1]["top"][0][2] == t["id"]  # greedy: the chosen token is the argmax


def test_generate_html_samples_and_stop(lm_ckpt, tmp_path):
    page = tmp_path / "gen.json"
    args = ["generate", "--checkpoint", str(lm_ckpt), "--prompt", "ROMEO:", "--max-new-tokens", "20",
            "--temperature", "1", "--seed", "3", "--num-samples", "2", "--json"]
    ref = json.loads(runner.invoke(app, args).stdout)["samples"]
    stop = ref[0]["text"][4:6]
    res = runner.invoke(app, [*args, "--stop", stop, "--html", str(page)])
    assert res.exit_code == 0, res.output
    ref = json.loads(res.stdout.strip().splitlines()[-1])["samples"]
    doc = read_document(page)  # a .json name writes the trace itself
    assert [s["text"] for s in doc["samples"]] == [s["text"] for s in ref]
    first = doc["samples"][0]
    assert first["stop_reason"] == "stop" and first["tokens"][-1]["cut"]  # the stop string's token
    printed = "".join(t["text"] for t in first["tokens"] if not t["cut"])
    assert printed.startswith(first["text"])


def test_view_renders_a_saved_trace(sudoku_ckpt, tmp_path):
    trace = tmp_path / "trace.json"
    res = runner.invoke(app, ["solve", "sudoku", EASY, "--checkpoint", str(sudoku_ckpt), "--html", str(trace)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["view", str(trace), "--out", str(tmp_path / "page.html")])
    assert res.exit_code == 0, res.output
    assert page_data(tmp_path / "page.html") == json.loads(trace.read_text())
    res = runner.invoke(app, ["view", str(tmp_path / "page.html"), "--out", str(tmp_path / "again.html")])
    assert res.exit_code == 0 and page_data(tmp_path / "again.html") == json.loads(trace.read_text())


def test_view_and_html_errors(sudoku_ckpt, lm_ckpt, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "nothing"}')
    assert_one_line_error(runner.invoke(app, ["view", str(bad), "--out", str(tmp_path / "x.html")]), "not a viewer trace")
    bad.write_text("{")
    assert_one_line_error(runner.invoke(app, ["view", str(bad), "--out", str(tmp_path / "x.html")]), "invalid JSON")
    assert_one_line_error(runner.invoke(app, ["view", str(tmp_path / "none.json"), "--out", str(tmp_path / "x.html")]),
                          "trace file not found")
    assert_one_line_error(runner.invoke(app, ["view", str(bad), "--out", str(tmp_path / "x.txt")]), "--out must name an .html")
    assert_one_line_error(runner.invoke(app, ["solve", "sudoku", EASY, "--checkpoint", str(sudoku_ckpt),
                                              "--html", str(tmp_path)]), "is a directory")


def test_html_escapes_the_trace(tmp_path):
    """A prompt holding </script> cannot end the inline JSON early."""
    from trmlm.viewer.page import render_html

    doc = {"kind": "text", "title": "<b>x</b>", "prompt": "</script><script>alert(1)</script>", "max_steps": 1,
           "threshold": 0.5, "samples": [{"text": "", "stop_reason": "length", "tokens": [], "mean_steps": 0}]}
    html = render_html(doc)
    assert html.count("</script>") == 2 and "<b>x</b>" not in html
    assert json.loads(extract_json(html)) == doc
