"""--logger jsonl|tensorboard|wandb: what the sinks hold equals metrics.jsonl; missing extras refused."""

import json
import math
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from cli_checks import assert_one_line_error
from trmlm.logging import JsonlLogger

REPO = Path(__file__).resolve().parents[1]
PUZZLE = ["train-puzzle", "sudoku", "--preset", "sudoku-tiny", "--quiet", "--set", "train.threads=1",
          "--set", "train.log_every=1", "--set", "train.eval_every=1000"]
LM = ["train-lm", "--preset", "lm-tiny", "--quiet", "--set", "train.threads=1", "--set", "train.log_every=1",
      "--set", "train.train_steps=3"]


def trm(*args: str, tmp: Path, env: dict) -> subprocess.CompletedProcess:
    """The console entry point in a subprocess (its own environment: W&B runs in a child process)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "TRM_CACHE_DIR": str(tmp / "cache"), **env}
    return subprocess.run([sys.executable, "-m", "trmlm.cli.main", *args], capture_output=True, text=True,
                          env=full_env, cwd=tmp)


def jsonl(run: Path, key: str) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if r.get(key) is not None}  # later rows win


def tensorboard_scalars(log_dir: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    assert tag in acc.Tags()["scalars"], acc.Tags()
    return {e.step: e.value for e in acc.Scalars(tag)}


def assert_equal_curves(got: dict[int, float], want: dict[int, float]) -> None:
    assert set(got) == set(want) and want, (sorted(got), sorted(want))
    for s in want:
        assert math.isclose(got[s], want[s], rel_tol=1e-6), (s, got[s], want[s])  # float32 in the events


def test_jsonl_logger_rows(tmp_path):
    import numpy as np
    import torch

    lg = JsonlLogger(tmp_path / "m.jsonl")
    lg.log(3, {"loss": torch.tensor(0.5), "acc": np.float32(0.25), "bad": float("nan"), "hist": [1, 2],
               "name": "x", "n": 7})
    lg.close()
    (row,) = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert {k: v for k, v in row.items() if k != "time"} == {"step": 3, "loss": 0.5, "acc": 0.25, "bad": None,
                                                             "name": "x", "n": 7}


def test_tensorboard_puzzle_events_equal_jsonl_across_resume(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    monkeypatch.setenv("TRM_CACHE_DIR", str(tmp_path / "cache"))
    for steps, extra in ((3, []), (5, ["--resume"])):
        res = invoke(*PUZZLE, "--set", f"train.train_steps={steps}", "--out", str(run), "--logger", "tensorboard",
                     *extra)
        assert res.exit_code == 0, res.output[-3000:]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one file per launch
    want = jsonl(run, "train/loss")
    assert sorted(want) == [1, 2, 3, 4, 5]
    assert_equal_curves(tensorboard_scalars(run / "tensorboard", "train/loss"), want)
    assert_equal_curves(tensorboard_scalars(run / "tensorboard", "eval/exact_acc"), jsonl(run, "eval/exact_acc"))


def test_tensorboard_lm_events_equal_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "lm"
    res = invoke(*LM, "--out", str(run), "--logger", "tensorboard")
    assert res.exit_code == 0, res.output[-3000:]
    assert_equal_curves(tensorboard_scalars(run / "tensorboard", "loss"), jsonl(run, "loss"))
    assert_equal_curves(tensorboard_scalars(run / "tensorboard", "bpc_parallel"), jsonl(run, "bpc_parallel"))


def wandb_history(run_dir: Path) -> list[dict[str, str]]:
    """History records of an offline .wandb file: the LevelDB log format (32 KiB blocks, 7-byte
    record headers: crc32, length, type FULL=1 FIRST=2 MIDDLE=3 LAST=4) after a 7-byte file header."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, part, rows = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer padding
            pos += 32768 - pos % 32768
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        part, pos = part + data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(part)
            part = b""
            if rec.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): item.value_json for item in rec.history.item})
    return rows


def test_wandb_offline_run_equals_jsonl_and_stays_off_the_network(tmp_path):
    pytest.importorskip("wandb")
    # Every address W&B could use points at this listening socket; nothing may connect to it.
    with socket.socket() as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen(8)
        trap.setblocking(False)
        url = f"http://127.0.0.1:{trap.getsockname()[1]}"
        env = {"WANDB_BASE_URL": url, "HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url,
               "https_proxy": url, "NO_PROXY": "", "no_proxy": "", "WANDB_MODE": "online",
               "WANDB_API_KEY": "x" * 40, "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
        run = tmp_path / "run"
        proc = trm(*PUZZLE, "--set", "train.train_steps=3", "--out", str(run), "--logger", "wandb", tmp=tmp_path,
                   env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with pytest.raises(BlockingIOError):
            trap.accept()
    rows = wandb_history(run)
    got = {int(r["_step"]): float(r["train/loss"]) for r in rows if "train/loss" in r}
    assert_equal_curves(got, jsonl(run, "train/loss"))


def invoke(*args: str):
    from typer.testing import CliRunner

    from trmlm.cli.main import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("kind", ["tensorboard", "wandb"])
@pytest.mark.parametrize("command", [PUZZLE, LM], ids=["train-puzzle", "train-lm"])
def test_missing_extra_is_a_one_line_error_before_any_work(tmp_path, monkeypatch, kind, command):
    monkeypatch.setitem(sys.modules, kind, None)  # the package is absent to importlib
    run = tmp_path / "run"
    res = invoke(*command, "--out", str(run), "--logger", kind)
    assert_one_line_error(res, f"error: --logger {kind} needs the {kind} package: pip install 'trmlm[{kind}]'")
    assert not run.exists()


def test_unknown_logger_is_a_one_line_error(tmp_path):
    res = invoke(*PUZZLE, "--out", str(tmp_path / "run"), "--logger", "mlflow")
    assert_one_line_error(res, "error: --logger must be one of jsonl, tensorboard, wandb, got 'mlflow'")
