"""trm bench --train-step: interleaved timing and the optional lucidrains peer row."""

from __future__ import annotations

import pytest

from trmlm.cli.common import configs_dir
from trmlm.puzzles.throughput import blocked, bench_puzzle, interleaved_seconds


def test_interleaved_timing_alternates_and_reports_per_step_seconds():
    calls = []

    def make(name, n):
        def step():
            calls.append(name)
            return n
        return step

    timed = interleaved_seconds([make("a", 1), make("b", 4)], warmup=1, rounds=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warmup each once, then strict alternation
    assert len(timed) == 2 and all(w >= 0 and c >= 0 for w, c in timed)


def test_blocked_repeats_a_fast_step():
    count = [0]

    def step():
        count[0] += 1
        return 1

    block = blocked(step, min_seconds=0.01)
    first = count[0]
    n = block()
    assert first == 1 and n > 1 and count[0] == first + n


def test_peer_row_beside_the_preset_row():
    pytest.importorskip("tiny_recursive_model")
    rows = bench_puzzle("sudoku-tiny", batch=2, steps=1, warmup=0, configs_dir=configs_dir(), peer=True)
    ours, peer = rows
    assert peer["kind"] == "peer" and peer["shape_of"] == "sudoku-tiny"
    assert (peer["d_model"], peer["n"], peer["T"], peer["batch"]) == (ours["d_model"], ours["n"], ours["T"], 2)
    assert ours["peer_ratio"] == pytest.approx(ours["throughput"] / peer["throughput"])
    assert peer["gflop_per_step"] > 0
