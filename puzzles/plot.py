"""PNG of held-out predictions vs targets for any grid task (eval-puzzle --png)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from trmlm.errors import TRMError
from trmlm.puzzle.eval import trace_supervision


def save_predictions_png(path: str | Path, model, held_out: dict, runtime, mod, n: int = 6) -> Path:
    """Rows: the first n held-out puzzles; columns: input, prediction, target (token images)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TRMError("--png needs matplotlib (pip install matplotlib)") from None
    n = min(n, len(held_out["inputs"]))
    inputs = held_out["inputs"][:n]
    labels = held_out["labels"][:n]
    t = torch.as_tensor(inputs, dtype=torch.long, device=runtime.device)
    ids = torch.as_tensor(held_out["puzzle_ids"][:n], dtype=torch.long, device=runtime.device)
    preds = trace_supervision(model, t, ids, runtime=runtime).predictions[-1]
    if hasattr(mod, "score"):
        solved = mod.score(inputs, preds, labels)
    else:
        solved = ((preds == labels) | (labels < 0)).all(-1)
    side = math.isqrt(inputs.shape[1])
    vmax = int(mod.VOCAB) - 1
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for i in range(n):
        for j, (grid, title) in enumerate(((inputs[i], "input"), (preds[i], "prediction"),
                                           (np.where(labels[i] < 0, 0, labels[i]), "target"))):
            ax = axes[i, j]
            ax.imshow(np.asarray(grid).reshape(side, side), cmap="tab20", vmin=0, vmax=max(vmax, 1),
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 1:
                title += " (solved)" if solved[i] else " (wrong)"
            ax.set_title(f"#{i} {title}", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
