"""benchmarks/lm_seeds.py: several seeds' lm_tasks JSON summed up right, on hand-made rows."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def seed_file(path: Path, trm: float, depth1: float, halt: float, tf_tokens: float, tf_cpu: float) -> str:
    rung = {"add-2": 1.0}
    trm_row = {"task": "arith", "model": "trm", "train_tokens": 100, "exact_acc": halt, "exact_acc_full_depth": trm,
               "exact_acc_depth1": depth1, "halt_exact_acc": halt, "halt_mean_steps": 1.5,
               "exact_acc_per_rung": rung}
    rows = [dict(trm_row, budget="equal_cpu"), dict(trm_row, budget="equal_tokens"),
            {"task": "arith", "model": "transformer", "budget": "equal_tokens", "exact_acc": tf_tokens,
             "exact_acc_per_rung": rung, "train_tokens": 100},
            {"task": "arith", "model": "transformer", "budget": "equal_cpu", "exact_acc": tf_cpu,
             "exact_acc_per_rung": rung, "train_tokens": 200},
            {"task": "other", "model": "transformer", "budget": "equal_cpu", "exact_acc": 0.0,
             "exact_acc_per_rung": rung, "train_tokens": 1}]
    path.write_text(json.dumps({"rows": rows}))
    return str(path)


def test_seeds_table_means_and_paired_differences(tmp_path):
    a = seed_file(tmp_path / "a.json", trm=0.8, depth1=0.3, halt=0.78, tf_tokens=0.6, tf_cpu=0.7)
    b = seed_file(tmp_path / "b.json", trm=0.4, depth1=0.2, halt=0.40, tf_tokens=0.6, tf_cpu=0.5)
    out = tmp_path / "seeds.json"
    proc = subprocess.run([sys.executable, "benchmarks/lm_seeds.py", f"{a}=0", f"{b}=1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(out.read_text())
    models = rep["models"]
    assert models["trm full depth"]["mean"] == pytest.approx(0.6)
    assert models["trm full depth"]["sd"] == pytest.approx(0.2828427, rel=1e-5)  # sample sd of 0.8, 0.4
    assert models["trm depth 1"]["per_seed"] == {"0": 0.3, "1": 0.2}
    assert models["transformer equal_cpu"]["per_seed"] == {"0": 0.7, "1": 0.5}
    cpu = rep["paired"]["trm full depth - transformer equal_cpu"]
    assert cpu["per_seed"] == pytest.approx({"0": 0.1, "1": -0.1}) and cpu["trm_ahead"] == 1
    tokens = rep["paired"]["trm full depth - transformer equal_tokens"]
    assert tokens["mean"] == pytest.approx(0.0) and tokens["trm_ahead"] == 1
    assert "| trm halting | 0.780 | 0.400 | 0.590 |" in proc.stdout


def test_bad_input_spec_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/lm_seeds.py", "no-seed.json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: expected FILE=SEED, got 'no-seed.json'"
