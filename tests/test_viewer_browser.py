"""The viewer pages in a real headless browser (Debian's chromium driven by Playwright): open
from a file:// URL, move the slider and read the grid shown, play, hover a token and read the
tooltip, screenshot (not blank). Skipped only where no chromium binary exists (`.ci/run` installs
it). TRM_VIEWER_SCREENSHOTS=DIR keeps the screenshots (docs/img/viewer-*.png come from here);
TRM_VIEWER_SUDOKU / TRM_VIEWER_LM name other checkpoints to render (default: the tiny ones)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trmlm.cli.main import app
from test_viewer import EASY, page_data, tiny_puzzle_checkpoint

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium binary (apt-get install chromium; .ci/run installs it)", allow_module_level=True)
from playwright.sync_api import sync_playwright  # noqa: E402  (the dev extra; a missing one is a failure)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
runner = CliRunner()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A fresh chromium profile; no browser download (executable_path is Debian's chromium)."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                    args=FLAGS, viewport={"width": 1100, "height": 700})
        yield ctx
        ctx.close()


def open_page(browser, path: Path):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: errors.append(f"request {r.url}") if not r.url.startswith("file://") else None)
    page.goto(path.resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']")
    return page, errors


def shown_grid(page) -> list[str]:
    return page.eval_on_selector_all("#pred-grid .cell", "cells => cells.map(c => c.dataset.label)")


def screenshot(page, path: Path, name: str) -> None:
    """Save, check the picture is not blank (pixel spread and colours), keep it if asked."""
    from PIL import Image

    page.screenshot(path=str(path))
    img = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
    assert img.std() > 20, "blank screenshot"
    assert len(np.unique(img.reshape(-1, 3)[::7], axis=0)) > 20, "a screenshot of few colours"
    keep = os.environ.get("TRM_VIEWER_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(keep) / name)


def _checkpoint(env: str, default: Path) -> Path:
    return Path(os.environ[env]) if os.environ.get(env) else default


def test_puzzle_page_slider_play_and_chart(browser, tmp_path_factory, tmp_path):
    ckpt = _checkpoint("TRM_VIEWER_SUDOKU", tiny_puzzle_checkpoint(tmp_path_factory, "sudoku", "sudoku-tiny"))
    html = tmp_path / "solve.html"
    res = runner.invoke(app, ["solve", "sudoku", EASY, "--checkpoint", str(ckpt), "--steps", "5", "--html", str(html)])
    assert res.exit_code == 0, res.output
    steps = page_data(html)["puzzles"][0]["steps"]
    target = page_data(html)["puzzles"][0]["target"]["cells"]
    page, errors = open_page(browser, html)
    assert page.inner_text("#step-label") == "step 1 / 5"
    assert shown_grid(page) == steps[0]["cells"]
    slider = page.locator("#step-slider")
    slider.focus()
    for s in (2, 3, 4):  # the keyboard moves the slider one step at a time
        page.keyboard.press("ArrowRight")
        assert page.get_attribute("#pred-grid", "data-step") == str(s)
        assert shown_grid(page) == steps[s - 1]["cells"]
        changed = sum(a != b for a, b in zip(steps[s - 1]["cells"], steps[s - 2]["cells"]))
        assert page.locator("#pred-grid .cell.changed").count() == changed
        wrong = 0 if steps[s - 1]["correct"] else sum(a != b for a, b in zip(steps[s - 1]["cells"], target))
        assert page.locator("#pred-grid .cell.wrong").count() == wrong
        assert f"halt probability {steps[s - 1]['halt_prob']:.3f}" in page.inner_text("#step-info")
    slider.fill("1")  # drag to the start
    assert shown_grid(page) == steps[0]["cells"] and page.locator("#pred-grid .cell.changed").count() == 0
    assert page.locator("#halt-chart .bar").count() == 5
    page.click("#halt-chart .bar[data-step='4']")
    assert shown_grid(page) == steps[3]["cells"] and page.input_value("#step-slider") == "4"
    page.click("#play")  # plays on to the last step and stops there
    page.wait_for_function("document.getElementById('step-label').textContent === 'step 5 / 5'", timeout=10_000)
    assert shown_grid(page) == steps[4]["cells"]
    page.wait_for_function("document.getElementById('play').textContent.includes('play')", timeout=5_000)
    screenshot(page, tmp_path / "puzzle.png", "viewer-puzzle.png")
    assert errors == []


def test_arc_page_grids_change_shape(browser, tmp_path):
    from trmlm.cli.view_cmds import puzzle_page
    from trmlm.puzzles.arc.encode import encode
    from trmlm.puzzles.run import get_task

    grids = [np.array([[1, 2, 3]]), np.array([[4, 3], [2, 1]])]
    preds = np.stack([encode(g) for g in grids])[:, None]
    html = puzzle_page(tmp_path / "arc.html", "arc", get_task("arc"), encode(np.array([[1, 2], [3, 4]]))[None],
                       preds, np.array([[-1.0], [1.5]]), [encode(grids[1])], np.array([[False], [True]]), "arc")
    page, errors = open_page(browser, html)
    assert shown_grid(page) == ["1", "2", "3"]
    page.locator("#step-slider").fill("2")
    assert shown_grid(page) == ["4", "3", "2", "1"]
    colour = page.eval_on_selector("#pred-grid .cell", "c => getComputedStyle(c).backgroundColor")
    assert colour == "rgb(255, 220, 0)"  # ARC colour 4 is yellow
    assert "the halt head first fires at step 2" in page.inner_text("#step-info")
    assert errors == []


def test_text_page_hover_shows_per_step_predictions(browser, lm_ckpt, tmp_path):
    ckpt = _checkpoint("TRM_VIEWER_LM", lm_ckpt)
    html = tmp_path / "gen.html"
    res = runner.invoke(app, ["generate", "--checkpoint", str(ckpt), "--prompt", "ROMEO:", "--max-new-tokens", "60",
                              "--temperature", "0", "--html", str(html)])
    assert res.exit_code == 0, res.output
    toks = page_data(html)["samples"][0]["tokens"]
    page, errors = open_page(browser, html)
    spans = page.locator(".tok")
    assert spans.count() == len(toks)
    assert page.locator("#tooltip").is_hidden()
    for i in (0, len(toks) // 2, len(toks) - 1):
        spans.nth(i).hover()
        tip = page.locator("#tooltip")
        assert tip.is_visible()
        rows = tip.locator("tr[data-step]")
        assert rows.count() == toks[i]["steps"] == len(toks[i]["per_step"])
        for s, st in enumerate(toks[i]["per_step"]):
            text = rows.nth(s).inner_text()
            assert f"{st['halt_prob']:.3f}" in text
            top_text, top_p, _ = st["top"][0]
            assert f"{100 * top_p:.1f}%" in text
            assert top_text.replace(" ", "\u2423").replace("\n", "\u21b5") in text
        assert f"token {i + 1} " in tip.locator("h2").inner_text()
    colours = page.eval_on_selector_all(".tok", "s => s.map(e => getComputedStyle(e).backgroundColor)")
    by_steps = {}
    for t, c in zip(toks, colours):
        by_steps.setdefault(t["steps"], set()).add(c)
    assert all(len(c) == 1 for c in by_steps.values())  # one colour per step count
    spans.nth(len(toks) // 3).hover()
    screenshot(page, tmp_path / "text.png", "viewer-text.png")
    page.mouse.move(5, 5)
    assert page.locator("#tooltip").is_hidden()
    assert errors == []
