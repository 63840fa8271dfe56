"""Per-token adaptive compute of a TRM language-model checkpoint: every exit rule on held-out text.

    python benchmarks/adaptive_compute.py --checkpoint runs/trm --tokens 4096 --threads 1

= trm bench --adaptive-compute --out benchmarks/results/adaptive: report.json and the PNGs there.
"""

import sys

from trmlm.cli.main import app

if __name__ == "__main__":
    app(["bench", "--adaptive-compute", "--out", "benchmarks/results/adaptive", *sys.argv[1:]])
