"""A 2-node run simulated on this machine: two torchrun agents (--nnodes 2, --node-rank 0/1) on
localhost over gloo train the same curve as one process (docs/training.md, "Scale-out")."""

import json
import os
import subprocess
import sys
from pathlib import Path

from trmlm.distributed import free_port

REPO = Path(__file__).resolve().parents[1]
BASE = ["train-puzzle", "sudoku", "--preset", "sudoku-tiny", "--quiet", "--set", "train.threads=1",
        "--set", "train.log_every=1", "--set", "train.eval_every=1000", "--set", "train.train_steps=6"]


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def test_two_torchrun_nodes_equal_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRM_CACHE_DIR": str(tmp_path / "cache")}
    single = tmp_path / "single"
    proc = subprocess.run([sys.executable, "-m", "trmlm.cli.main", *BASE, "--out", str(single)], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # One agent per "node", as `torchrun` would be started on each machine: static rendezvous at
    # node 0's address (here 127.0.0.1 and a free port); each node writes to its own --out, as
    # separate machines would, and only global rank 0 (on node 0) writes the run.
    port = free_port()
    agents = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
         "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
         "-m", "trmlm.cli.main", *BASE, "--out", str(tmp_path / f"node{rank}")],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    try:
        logs = [a.communicate(timeout=300)[0] for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()
                a.wait()
    for a, log in zip(agents, logs):
        assert a.returncode == 0, log[-3000:]

    two, one = losses(tmp_path / "node0"), losses(single)
    assert sorted(two) == sorted(one) == list(range(1, 7))
    for s in one:  # the global batch split over two processes: the same gradients up to float sums
        assert abs(two[s] - one[s]) <= 1e-5 * max(1.0, abs(one[s])), (s, two[s], one[s])
    assert not (tmp_path / "node1" / "model.safetensors").exists()  # rank 1 writes no checkpoint
