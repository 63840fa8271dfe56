"""benchmarks/lm_tasks.py merge_report: rows of several invocations merged into one JSON."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# one invocation: `count` rows (task NAME-i) merged one call at a time into the file argv[1]
WRITER = """
import argparse, sys
sys.path.insert(0, {bench!r})
from lm_tasks import merge_report
out, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
args = argparse.Namespace(out=out, threads=1)
for i in range(count):
    merge_report(args, "lm_tasks", ("task", "model", "budget"),
                 [{{"task": f"{{name}}-{{i}}", "model": "trm", "budget": "equal_cpu", "exact_acc": i / count}}])
"""


def _writers(out: Path, names: list[str], count: int) -> None:
    code = WRITER.format(bench=str(ROOT / "benchmarks"))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(out), name, str(count)], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for name in names]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]


def test_a_row_replaces_the_one_with_its_key_and_keeps_the_rest(tmp_path):
    out = tmp_path / "r.json"
    _writers(out, ["a"], 3)
    _writers(out, ["a"], 2)  # a-0 and a-1 again, a-2 kept
    rows = json.loads(out.read_text())["rows"]
    assert [(r["task"], r["exact_acc"]) for r in rows] == [("a-0", 0.0), ("a-1", 0.5), ("a-2", 2 / 3)]
    assert all(r["command"].startswith("python benchmarks/lm_tasks.py") for r in rows)


def test_invocations_side_by_side_lose_no_rows(tmp_path):
    """Two processes merging into one file at once: every row of both is there at the end."""
    out = tmp_path / "results" / "shared.json"
    _writers(out, ["left", "right"], 40)
    tasks = {r["task"] for r in json.loads(out.read_text())["rows"]}
    assert tasks == {f"{name}-{i}" for name in ("left", "right") for i in range(40)}
    assert sorted(p.name for p in out.parent.iterdir()) == ["shared.json"]  # no lock or temporary files left
