"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest


def pytest_configure(config):
    """Under pytest-xdist (`-n N`), each worker gets its share of the cores (torch and the CLI
    subprocesses it starts), so N workers do not oversubscribe the machine."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return
    import torch

    threads = max(1, (os.cpu_count() or 1) // int(workers))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def lm_ckpt(tmp_path_factory) -> Path:
    """A tiny TRM language-model checkpoint (lm-tiny, 4 optimizer steps), shared read-only by the
    LM and bench CLI tests."""
    from typer.testing import CliRunner

    from trmlm.cli.main import app

    out = tmp_path_factory.mktemp("lm") / "tiny"
    res = CliRunner().invoke(app, ["train-lm", "--preset", "lm-tiny", "--out", str(out), "--quiet",
                                   "--set", "train.train_steps=4"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture
def shared_data_dir() -> Path:
    """The shared data directory ($TRM_SHARED_DATA, else shared/data beside the checkout); skips if absent."""
    env = os.environ.get("TRM_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data directory not found: {path}")
    return path


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where CUDA is available (they are real tests of the GPU path)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
