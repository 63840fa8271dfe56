"""Maze end to end through the CLI on the tiny preset; bad mazes exit 2; the paper preset steps."""

import json

import pytest
import torch
from typer.testing import CliRunner

from trmlm.cli.common import configs_dir
from trmlm.cli.main import app
from cli_checks import assert_one_line_error
from model_checks import assert_every_parameter_learns, final_predictions, held_out_accuracy
from trmlm.puzzles.maze.grid import parse_maze, shortest_path, tokens_to_text, valid_shortest
from trmlm.puzzles.run import load_model
from trmlm.puzzles.run import resolve_config
from trmlm.puzzle.act import act_step, new_carry
from trmlm.puzzle.registry import build_puzzle_model

runner = CliRunner()
MAZE6 = "#S  ##\n# # # \n#   G#\n## ## \n      \n######\n"




@pytest.fixture(scope="module")
def maze_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("maze") / "ckpt"
    cache = tmp_path_factory.mktemp("cache")
    result = runner.invoke(app, ["train-puzzle", "maze", "--preset", "maze-tiny", "--out", str(out), "--quiet",
                                 "--model", "hrm"], env={"TRM_CACHE_DIR": str(cache)})
    assert result.exit_code == 0, result.output
    assert "Held-out puzzle #0" in result.stdout
    return out, cache


def test_train_eval_solve(maze_checkpoint, tmp_path, monkeypatch):
    ckpt, cache = maze_checkpoint
    config = json.loads((ckpt / "config.json").read_text())
    assert config["model"]["arch"] == "hrm" and config["model"]["seq_len"] == 36
    png = tmp_path / "pred.png"
    result = runner.invoke(app, ["eval-puzzle", "maze", "--checkpoint", str(ckpt), "--json", "--png", str(png)],
                           env={"TRM_CACHE_DIR": str(cache)})
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    monkeypatch.setenv("TRM_CACHE_DIR", str(cache))
    hand = held_out_accuracy(ckpt, "maze", 8)  # the saved weights' argmax, by hand
    assert metrics["n_eval"] == 8 and metrics["exact_acc"] == hand["exact_acc"]
    assert metrics["cell_acc"] == pytest.approx(hand["cell_acc"], abs=1e-12)
    assert 0.0 < hand["cell_acc"] < 1.0  # a value the check can get wrong
    assert png.is_file() and png.stat().st_size > 1000
    result = runner.invoke(app, ["solve", "maze", MAZE6, "--checkpoint", str(ckpt), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # the prediction is the model's own; `correct` says whether it is a valid shortest path
    tokens = parse_maze(MAZE6)
    model, _, _ = load_model(ckpt, "maze")
    pred = final_predictions(model, tokens[None])
    assert data["prediction"] == tokens_to_text(pred[0])
    ref = shortest_path(tokens)[None]
    assert valid_shortest(tokens[None], ref, ref)[0]  # the criterion can say yes
    assert data["correct"] is bool(valid_shortest(tokens[None], pred, ref)[0])


def test_eval_on_given_mazes_of_a_unique_path_run(maze_checkpoint, tmp_path):
    """eval-puzzle --source CSV on a checkpoint of the generator's unique_path preset (maze-cpu):
    the filter is the generator's, the given mazes are scored as they are (was a ValueError
    traceback)."""
    import csv
    import shutil

    from trmlm.puzzles.maze.generator import generate_mazes

    ckpt = tmp_path / "ckpt"
    shutil.copytree(maze_checkpoint[0], ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["data"]["unique_path"] = True
    (ckpt / "config.json").write_text(json.dumps(config))
    given = tmp_path / "given"
    given.mkdir()
    for split, seed, n in (("train", 1, 2), ("test", 2, 5)):
        q, a, r = generate_mazes(n, 6, 6, seed)
        with open(given / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["question", "answer", "rating"])
            w.writerows([tokens_to_text(q[i]), tokens_to_text(a[i]), int(r[i])] for i in range(n))
    result = runner.invoke(app, ["eval-puzzle", "maze", "--checkpoint", str(ckpt), "--source", str(given), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_eval"] == 5


@pytest.mark.parametrize("maze,needle", [
    (MAZE6.replace("S", " "), "exactly one start 'S', found 0"),
    (MAZE6.replace("G", " "), "exactly one goal 'G', found 0"),
    ("#S  #\n# # #\n#   G\n## ##\n     \n", "25 cells but the model was trained on 36"),
])
def test_bad_maze_is_one_line_exit_2(maze_checkpoint, maze, needle):
    result = runner.invoke(app, ["solve", "maze", maze, "--checkpoint", str(maze_checkpoint[0])])
    assert_one_line_error(result, needle)


def test_maze_hard_preset_runs_one_step():
    run = resolve_config("maze", configs_dir(), "maze-hard")
    m, t = run.model, run.train
    assert (m.seq_len, m.vocab_size, m.d_model, m.n_latent, m.n_cycles, m.mixer) == (900, 6, 512, 4, 3, "attention")
    assert (t.batch_size, t.weight_decay, t.ema_decay) == (768, 1.0, 0.999)
    assert run.data.size == 30 and run.data.min_path == 110
    torch.manual_seed(0)
    model = build_puzzle_model(m)
    batch = {"inputs": torch.randint(1, 5, (1, 900)), "labels": torch.randint(1, 6, (1, 900)),
             "puzzle_ids": torch.zeros(1, dtype=torch.long)}
    carry, stats = act_step(model, new_carry(model, batch))
    stats.loss.backward()
    assert torch.isfinite(stats.loss)
    assert_every_parameter_learns(model)
