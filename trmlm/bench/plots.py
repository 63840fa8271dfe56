"""PNG figures of the adaptive-compute report: Pareto curve, steps histogram, per-token heat map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trmlm.errors import TRMError

MARKERS = {"fixed": ("s", "tab:blue"), "learned": ("o", "tab:red"), "random": ("x", "tab:gray"),
           "oracle": ("*", "tab:green"), "kl": ("^", "tab:purple"), "argmax": ("v", "tab:orange")}
LABELS = {"fixed": "fixed depth", "learned": "learned halting (threshold sweep)",
          "random": "random exit, same mean depth", "oracle": "oracle exit",
          "kl": "KL between steps (training-free)", "argmax": "argmax stable (training-free)"}


def pyplot():
    try:
        import matplotlib
    except ImportError as e:  # the bench / dev extras install it
        raise TRMError("the plots need matplotlib: pip install 'trmlm[bench]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_plot(report: dict[str, Any], path: Path) -> Path:
    """Bits per character vs mean supervision steps per token, one series per exit kind."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, (marker, colour) in MARKERS.items():
        rows = sorted((r for r in report["rows"] if r["kind"] == kind), key=lambda r: r["steps_mean"])
        if not rows:
            continue
        style = "-" if kind in ("fixed", "learned", "kl") and len(rows) > 1 else ""
        ax.plot([r["steps_mean"] for r in rows], [r["bpc"] for r in rows], marker=marker, linestyle=style,
                color=colour, label=LABELS[kind], markersize=9 if kind == "oracle" else 6)
    op = next(r for r in report["rows"] if r["name"] == report["operating_point"])
    ax.annotate("operating point", (op["steps_mean"], op["bpc"]), textcoords="offset points", xytext=(8, 8))
    hw = report["hardware"]
    ax.set_xlabel("mean supervision steps per token")
    ax.set_ylabel("sequential bits per character (real cache)")
    ax.set_title(f"Quality vs compute, {report['eval_tokens']} held-out tokens ({hw['device']}, batch 1)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def steps_histogram(steps: list[int], max_steps: int, title: str, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(steps, bins=[s + 0.5 for s in range(max_steps + 1)], rwidth=0.8, color="tab:red")
    ax.set_xticks(range(1, max_steps + 1))
    ax.set_xlabel("supervision steps used")
    ax.set_ylabel("tokens")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def token_heatmap(pieces: list[str], steps: list[int], max_steps: int, title: str, path: Path,
                  per_line: int = 64) -> Path:
    """Each token of a sample text in a cell coloured by the steps it used."""
    plt = pyplot()
    lines: list[list[tuple[str, int]]] = [[]]
    for piece, s in zip(pieces, steps):
        for j, part in enumerate(piece.split("\n")):
            if j > 0 or len(lines[-1]) >= per_line:
                lines.append([])
            if part or j == 0:
                lines[-1].append((part or " ", s))
    lines = [ln for ln in lines if ln][:40]
    width = max(sum(max(1, len(p)) for p, _ in ln) for ln in lines)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.13 * width), 0.28 * len(lines) + 0.9))
    cmap = plt.get_cmap("viridis", max_steps)
    for row, line in enumerate(lines):
        x = 0
        for piece, s in line:
            w = max(1, len(piece))
            # steps 0: a token no position predicted (the first of a prompt): grey
            ax.add_patch(plt.Rectangle((x, -row - 1), w, 1, color=cmap(s - 1) if s else "lightgrey"))
            ax.text(x + w / 2, -row - 0.5, piece, ha="center", va="center", fontsize=7, family="monospace",
                    color="white" if 0 < s and s - 1 < max_steps / 2 else "black")
            x += w
    ax.set_xlim(0, width)
    ax.set_ylim(-len(lines), 0)
    ax.axis("off")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0.5, max_steps + 0.5))
    fig.colorbar(sm, ax=ax, ticks=range(1, max_steps + 1), label="steps", fraction=0.03)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
