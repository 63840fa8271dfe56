"""What a new user checks first: the wheel (presets inside, one top-level package, installs and trains
from outside the repository), LICENSE, --version, completion, flags, one option vocabulary, the
tokenizer file, readable PNGs, NO_COLOR, the training bar's ETA."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trmlm.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
SUDOKU = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"


# -- the wheel ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built (no network, no build isolation) from a copy of the sources, so the
    checkout gets no build/ or egg-info."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for name in ("trmlm", "cli", "puzzles", "configs"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(dist), str(src)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    (whl,) = dist.glob("trmlm-*.whl")
    return whl


def test_wheel_ships_presets_and_one_top_level_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names}
    assert tops == {"trmlm", f"{wheel.name.split('-py3')[0]}.dist-info"}  # no top-level cli/ or puzzles/
    presets = {f"trmlm/configs/{p.relative_to(ROOT / 'configs').as_posix()}"
               for p in (ROOT / "configs").rglob("*") if p.suffix in (".yaml", ".json")}
    assert "trmlm/configs/sudoku-tiny.yaml" in presets and presets <= names
    # every package of the three folders, under its installed name
    installed = {"trmlm": "trmlm", "cli": "trmlm/cli", "puzzles": "trmlm/puzzles"}
    for folder, target in installed.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.relative_to(ROOT / folder).as_posix()
            assert f"{target}/{rel}" in names, f"package {init.parent.relative_to(ROOT)} is missing from the wheel " \
                                               "(add it to [tool.setuptools] packages in pyproject.toml)"
    assert {"trmlm/py.typed", "trmlm/assets/tinyshakespeare.txt.gz", "trmlm/puzzles/api.py"} <= names
    dist_info = wheel.name.split("-py3")[0] + ".dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    with zipfile.ZipFile(wheel) as z:
        assert "trm = trmlm.cli.main:main" in z.read(f"{dist_info}/entry_points.txt").decode()
        assert z.read(f"{dist_info}/top_level.txt").decode().split() == ["trmlm"]


def test_wheel_installs_and_trains_outside_the_repository(wheel, tmp_path):
    """(~15 s on 2 CPU cores, so in the default suite.) A fresh venv sees the installed dependencies (a .pth to this venv's site-packages, whose
    own .pth hooks, the editable install among them, are not run) and the wheel, nothing else."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    import importlib.util

    deps = ("torch", "numpy", "typer", "rich", "safetensors", "yaml", "tokenizers", "huggingface_hub")
    dirs = {str(Path(importlib.util.find_spec(d).origin).parent.parent) for d in deps}  # where they are installed
    Path(site, "_trmlm_test_deps.pth").write_text("".join(f"{d}\n" for d in sorted(dirs)))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", TRM_CACHE_DIR=str(tmp_path / "cache"))

    def trm(*args: str) -> subprocess.CompletedProcess:
        res = subprocess.run([str(venv / "bin" / "trm"), *args], cwd=work, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-3000:]
        return res

    where = subprocess.run([str(py), "-c", "import trmlm; print(trmlm.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(venv)), where
    assert trm("--version").stdout.strip() == "trm (trmlm) 0.1.0"
    trm("train-puzzle", "sudoku", "--preset", "sudoku-tiny", "--out", "runs/sudoku", "--quiet")
    trm("train-lm", "--preset", "lm-tiny", "--out", "runs/lm", "--quiet", "--set", "train.train_steps=4")
    for run, command in (("sudoku", "trm train-puzzle sudoku --preset sudoku-tiny"), ("lm", "trm train-lm --preset lm-tiny")):
        card = (work / "runs" / run / "README.md").read_text()
        assert command in card  # the card records the command that made the checkpoint
    solved = json.loads(trm("solve", "sudoku", SUDOKU, "--checkpoint", "runs/sudoku", "--json").stdout)
    assert len(solved["prediction"]) == 81
    res = subprocess.run([str(py), "-m", "trmlm", "--version"], cwd=work, env=env, capture_output=True, text=True)
    assert res.stdout.strip() == "trm (trmlm) 0.1.0"


def test_license_file():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()


# -- command-line conventions -------------------------------------------------------------------

def test_version_and_completion(monkeypatch):
    import trmlm

    # Typer may detect the shell from the process tree (shellingham), which differs between a
    # terminal, CI and pytest-xdist workers started under nohup; its own tests switch that off.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"trm (trmlm) {trmlm.__version__}"
    assert "--install-completion" in runner.invoke(app, ["--help"]).stdout
    script = runner.invoke(app, ["--show-completion", "bash"], prog_name="trm")
    assert script.exit_code == 0 and "_TRM_COMPLETE" in script.stdout, (script.output, script.exception)
    res = subprocess.run([sys.executable, "-m", "trmlm", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0 and res.stdout.strip() == f"trm (trmlm) {trmlm.__version__}"


@pytest.mark.parametrize("command", ["solve", "eval-puzzle", "generate", "eval-lm", "train-puzzle", "train-lm", "bench"])
def test_flags_are_shown_as_flags(command):
    """No `<bool>` beside on/off flags in the help; the model-running commands share --device/--threads."""
    text = runner.invoke(app, [command, "--help"]).stdout
    assert "<bool>" not in text and "--help " in text
    if command in ("solve", "eval-puzzle", "generate", "eval-lm", "bench"):
        assert "--device" in text and "--threads" in text


@pytest.fixture(scope="module")
def sudoku_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sudoku") / "ckpt"
    res = runner.invoke(app, ["train-puzzle", "sudoku", "--preset", "sudoku-tiny", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    return out


def test_solve_device_threads_and_json_flag(sudoku_ckpt):
    ok = runner.invoke(app, ["solve", "sudoku", SUDOKU, "--checkpoint", str(sudoku_ckpt), "--json",
                             "--device", "cpu", "--threads", "1"])
    assert ok.exit_code == 0, ok.output
    assert len(json.loads(ok.stdout)["prediction"]) == 81
    bad = runner.invoke(app, ["solve", "sudoku", SUDOKU, "--checkpoint", str(sudoku_ckpt), "--device", "tpu"])
    assert bad.exit_code == 2 and bad.stderr.strip() == "error: unknown device 'tpu' (use auto, cpu or cuda)"
    stray = runner.invoke(app, ["solve", "sudoku", SUDOKU, "--checkpoint", str(sudoku_ckpt), "--json", "true"])
    assert stray.exit_code == 2  # --json takes no value


def test_generate_defaults_to_auto_device():
    from trmlm.cli import lm_cmds
    import inspect

    assert inspect.signature(lm_cmds.generate_cmd).parameters["device"].default == "auto"


def test_eval_lm_prints_a_table(lm_ckpt):
    res = runner.invoke(app, ["eval-lm", "--checkpoint", str(lm_ckpt), "--tokens", "64", "--parallel-tokens", "128",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert any("metric" in line and "value" in line for line in lines)
    row = next(line for line in lines if "bpc_parallel " in line)
    assert "│" in row or "┃" in row  # a rich table row, like eval-puzzle's
    js = json.loads(runner.invoke(app, ["eval-lm", "--checkpoint", str(lm_ckpt), "--tokens", "64",
                                        "--parallel-tokens", "128", "--json"]).stdout)
    assert f"{js['bpc_parallel']:.4f}" in row


def test_no_color_shows_steps_as_digit_rows(lm_ckpt, monkeypatch):
    """On a terminal --show-steps colours tokens by their steps; with NO_COLOR the digit rows
    carry the steps instead (before, NO_COLOR left no per-token steps at all)."""
    from rich.console import Console

    from trmlm.cli import lm_cmds

    monkeypatch.setattr(lm_cmds, "out", Console(force_terminal=True, color_system="standard", highlight=False))
    args = ["generate", "--checkpoint", str(lm_ckpt), "--prompt", "ROMEO:", "--max-new-tokens", "12",
            "--temperature", "0", "--show-steps", "--device", "cpu"]
    coloured = runner.invoke(app, args)
    assert coloured.exit_code == 0, coloured.output
    assert "\x1b[" in coloured.stdout and "steps per character" not in coloured.stdout
    monkeypatch.setenv("NO_COLOR", "1")
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0, plain.output
    assert "\x1b[" not in plain.stdout and "--- steps per character (token) ---" in plain.stdout
    text, digits = plain.stdout.split("---\n", 2)[-1].splitlines()[:2]
    assert text.startswith("ROMEO:") and digits[:6] == " " * 6 and digits[6:].strip().isdigit()


# -- files --------------------------------------------------------------------------------------

def test_char_tokenizer_file_is_a_hf_tokenizers_file(tmp_path, lm_ckpt):
    from tokenizers import Tokenizer as HFTokenizer

    from trmlm.lm.tokenizer import CharTokenizer, load_tokenizer, save_tokenizer, train_tokenizer

    text = "To be, or not to be:\nthat is the question.\t é"
    tok = CharTokenizer.train(text)
    path = save_tokenizer(tok, tmp_path / "char")
    assert path.name == "tokenizer.json"
    hf = HFTokenizer.from_file(str(path))
    assert hf.encode(text).ids == tok.encode(text) and hf.decode(tok.encode(text)) == text
    back = load_tokenizer(path)
    assert isinstance(back, CharTokenizer) and back.chars == tok.chars
    # a checkpoint's tokenizer (written by train-lm) is readable by tokenizers too
    ck = HFTokenizer.from_file(str(lm_ckpt / "tokenizer.json"))
    assert ck.decode(load_tokenizer(lm_ckpt).encode("ROMEO:")) == "ROMEO:"
    # the earlier custom format still loads
    old = tmp_path / "old" / "tokenizer.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"trmlm_tokenizer": "char", "chars": tok.chars}))
    assert load_tokenizer(old).chars == tok.chars
    # a byte-level BPE file is not mistaken for a char one
    bpe = save_tokenizer(train_tokenizer("bpe", text * 20, 300), tmp_path / "bpe")
    assert load_tokenizer(bpe).kind == "bpe"


def test_eval_puzzle_png_is_readable(sudoku_ckpt, tmp_path):
    """Digits drawn, givens vs filled vs wrong cells coloured apart, one column per supervision step."""
    pytest.importorskip("matplotlib")
    from trmlm.puzzles import plot
    from trmlm.puzzles.run import TASKS, load_model, resolve_config
    from trmlm.cli.common import configs_dir
    from trmlm.puzzles.sudoku.grid import from_tokens
    from trmlm.runtime import resolve_runtime

    png = tmp_path / "pred.png"
    res = runner.invoke(app, ["eval-puzzle", "sudoku", "--checkpoint", str(sudoku_ckpt), "--json", "--png", str(png)],
                        env={"TRM_CACHE_DIR": str(tmp_path)})
    assert res.exit_code == 0, res.output
    assert png.stat().st_size > 10_000

    model, run, _ = load_model(sudoku_ckpt)
    held_out = TASKS["sudoku"].build_data(resolve_config("sudoku", configs_dir(), "sudoku-tiny").data).eval
    fig = plot.predictions_figure(model, held_out, resolve_runtime("cpu"), TASKS["sudoku"], n=2)
    axes = fig.axes
    n_sup = run.model.max_sup_steps
    assert len(axes) == 2 * (n_sup + 2)  # input | step 1 .. N_sup | target, per puzzle
    givens = int((from_tokens(held_out["inputs"][0]) > 0).sum())
    digits = [t for t in axes[0].texts if t.get_text().isdigit()]
    assert len(digits) == givens and {t.get_color() for t in digits} == {plot.GIVEN_FG}
    assert [a.get_title().split(":")[0] for a in axes[1:n_sup + 1]] == [f"step {s}" for s in range(1, n_sup + 1)]
    step_colours = {t.get_color() for a in axes[1:n_sup + 1] for t in a.texts}
    assert plot.GIVEN_FG in step_colours and step_colours & {plot.FILLED_FG, plot.WRONG_FG}
    assert len([t for t in axes[n_sup + 1].texts if t.get_text().isdigit()]) == 81  # the full target
    assert fig.legends and "given" in fig.legends[0].get_texts()[0].get_text()
    import matplotlib.pyplot as plt
    plt.close(fig)
    assert plot.shown_steps(16) == [1, 3, 5, 7, 10, 12, 14, 16] and plot.shown_steps(3) == [1, 2, 3]


def test_training_bar_eta_follows_the_time_budget():
    """The ETA is the sooner of the step-count estimate and the budget left (the budget ends the run)."""
    from trmlm.progress import TimeLeftColumn

    class FakeTask:
        def __init__(self, time_remaining, budget_left):
            self.time_remaining, self.fields = time_remaining, {"budget_left": budget_left}

    col = TimeLeftColumn()
    assert str(col.render(FakeTask(2400.0, 600.0))) == "0:10:00"  # budget ends first
    assert str(col.render(FakeTask(300.0, 600.0))) == "0:05:00"   # the steps end first
    assert str(col.render(FakeTask(None, 90.0))) == "0:01:30"     # no step rate yet
    assert str(col.render(FakeTask(75.0, None))) == "0:01:15"     # no budget
    assert str(col.render(FakeTask(None, None))) == "-:--:--"
