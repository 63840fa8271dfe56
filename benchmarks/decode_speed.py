"""Cached decode time per token vs prefix length, against an equal-FLOPs GPT-2, and KV bytes vs depth.

    python benchmarks/decode_speed.py --threads 1          # = trm bench --decode --out benchmarks/results

Prints the tables and writes benchmarks/results/decode.json (targets in docs/benchmarks.md).
Extra arguments go to `trm bench` (e.g. --preset lm-paper --prefix-lengths 64,1024).
"""

import sys

from trmlm.cli.main import app

if __name__ == "__main__":
    app(["bench", "--decode", "--out", "benchmarks/results", *sys.argv[1:]])
