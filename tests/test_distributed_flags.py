"""DistContext's small collectives across real processes (gloo): the clock and the time checks every
rank must agree on (the lr decay's clock, stop, evaluate now), and the flat mean of logged figures."""

import json
import os
import subprocess
import sys

import pytest

from trmlm.distributed import DistContext, free_port

WORKER = """
import json, sys, torch
from trmlm.distributed import init_distributed
d = init_distributed("cpu")
flags = [d.rank == 1, False, True]          # only rank 1 is out of time
x = torch.tensor([float(d.rank), 10.0 * d.rank])
d.all_reduce_mean_([x])
clock, agreed = d.agree(100.0 + 10 * d.rank, flags)
print(json.dumps({"rank": d.rank, "any": agreed, "clock": clock, "mean": x.tolist()}))
torch.distributed.destroy_process_group()
"""


def test_flags_are_or_ed_and_figures_averaged_over_two_processes():
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(r),
                                              "LOCAL_RANK": str(r), "WORLD_SIZE": "2", "MASTER_PORT": port})
             for r in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    for o in outs:  # both ranks see rank 1's flag, so both stop at the same step
        assert o["any"] == [True, False, True]
        assert o["clock"] == 105.0  # one learning rate on both ranks: their mean clock
        assert o["mean"] == pytest.approx([0.5, 5.0])


def test_one_process_keeps_its_flags_and_collectives_run_where_the_backend_lives():
    assert DistContext().agree(7.5, [True, False]) == (7.5, [True, False])
    assert str(DistContext(device_type="cpu").comm_device) == "cpu"
    assert str(DistContext(rank=3, world=4, local_rank=1, device_type="cuda").comm_device) == "cuda:1"
