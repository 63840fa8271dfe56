"""benchmarks/lm_collect.py: the current rows of several lm_tasks reports gathered into one file."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def report(path: Path, task: str, rows: list[tuple[str, str, float, str]], cpu: str) -> Path:
    path.write_text(json.dumps({"hardware": {"cpu": cpu}, "rows": [
        {"task": task, "model": m, "budget": b, "exact_acc": acc, "command": cmd} for m, b, acc, cmd in rows]}))
    return path


def collect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/lm_collect.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_rows_of_the_named_tasks_are_gathered_with_source_hardware_and_seed(tmp_path):
    arith = report(tmp_path / "arith.json", "arith", [
        ("trm", "equal_tokens", 0.6, "python benchmarks/lm_tasks.py --set train.seed=2 --x"),
        ("transformer", "equal_tokens", 0.5, "python benchmarks/lm_tasks.py")], cpu="A")
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps({"hardware": {"cpu": "B"}, "rows": [
        {"task": "hops", "model": "trm", "budget": "equal_tokens", "exact_acc": 0.3, "command": "c"},
        {"task": "arith", "model": "transformer", "budget": "equal_tokens", "exact_acc": 0.9, "command": "old"}]}))
    out = tmp_path / "lm_tasks.json"
    out.write_text(json.dumps({"rows": [{"task": "stale", "model": "trm", "budget": "equal_tokens"}]}))
    proc = collect(f"{arith}", f"{mixed}:hops", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = {(r["task"], r["model"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {("arith", "trm"), ("arith", "transformer"), ("hops", "trm")}  # the stale row is gone
    assert rows[("arith", "transformer")]["exact_acc"] == 0.5  # mixed.json's arith row was not named
    assert rows[("arith", "trm")]["seed"] == 2 and rows[("arith", "transformer")]["seed"] == 0
    assert rows[("hops", "trm")]["hardware"] == {"cpu": "B"} and rows[("hops", "trm")]["command"] == "c"
    assert rows[("arith", "trm")]["source"].endswith("arith.json")


def test_a_later_input_replaces_the_same_row(tmp_path):
    a = report(tmp_path / "a.json", "arith", [("trm", "equal_tokens", 0.1, "a")], cpu="A")
    b = report(tmp_path / "b.json", "arith", [("trm", "equal_tokens", 0.2, "b")], cpu="B")
    out = tmp_path / "out.json"
    assert collect(str(a), str(b), "--out", str(out)).returncode == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["exact_acc"], row["command"]) == (0.2, "b")


def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path):
    a = report(tmp_path / "a.json", "arith", [("trm", "equal_tokens", 0.1, "a")], cpu="A")
    out = tmp_path / "out.json"
    for spec, message in [(f"{a}:hops", f"error: {a}:hops: no rows of task hops"),
                          (str(tmp_path / "missing.json"), f"error: {tmp_path / 'missing.json'}: not a readable")]:
        proc = collect(spec, "--out", str(out))
        assert proc.returncode == 2 and proc.stderr.startswith(message) and len(proc.stderr.splitlines()) == 1
    assert not out.exists()
