"""The README.md model card of a checkpoint directory, generated from its config.json and meta.json."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

LICENSE = "mit"  # the project's license (LICENSE, pyproject.toml)
CARD = "README.md"


def provenance(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a checkpoint's card says about how it was made: this process's command line and the
    machine it trains on (recorded by the training loops in meta.json, so a later save on another
    machine does not claim that machine)."""
    from trmlm.bench.common import hardware

    return {"command": command_line(), "hardware": hardware(device)}


def command_line(argv: list[str] | None = None) -> str:
    """sys.argv as a shell command; the `trm` console script, `python -m trmlm` and the data-parallel
    workers (`python -m trmlm.cli.main`) all read as `trm ...`."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    head = argv[0].replace("\\", "/")
    if Path(head).name == "trm" or head.endswith(("trmlm/__main__.py", "trmlm/cli/main.py", "/cli/main.py")):
        return shlex.join(["trm", *argv[1:]])
    return shlex.join([Path(head).name, *argv[1:]])


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.1f}"


def _table(rows: list[tuple[str, Any]], head: tuple[str, str]) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows]
    return "\n".join(lines)


def _hardware_line(hw: dict[str, Any] | None) -> str:
    if not hw:
        return "Hardware: not recorded for this checkpoint."
    where = hw.get("gpu") if hw.get("device") == "cuda" and hw.get("gpu") else hw.get("cpu", "unknown CPU")
    parts = [f"{hw.get('device', '?')} ({where})", f"{hw.get('cores', '?')} CPU cores",
             f"{hw.get('threads', '?')} torch threads", f"torch {hw.get('torch', '?')}"]
    return f"Hardware: {', '.join(parts)}; recorded {hw.get('measured', 'at an unrecorded time')}."


def _lm_data(data: dict[str, Any]) -> str:
    if data.get("task"):
        return f"the built-in `{data['task']}` text task"
    if data.get("files"):
        return "local files " + ", ".join(f"`{Path(f).name}`" for f in data["files"])
    if data.get("hub_dataset"):
        return f"the Hub dataset `{data['hub_dataset']}`"
    return "tiny Shakespeare (embedded in the package)"


def render(config: dict[str, Any], meta: dict[str, Any], weights_numel: int | None = None,
           location: str | None = None) -> str:
    """The card text. `location` (a hub id or path) goes into the loading example."""
    puzzle = "task" in config  # a puzzle run config is {task, model, train, data}; the LM's has no `task`
    net = config.get("model", {})
    if puzzle:
        task = config["task"]
        title = f"TRM {task} model"
        tags = ["trmlm", "tiny-recursive-model", task]
        example = 'result = m.solve(PUZZLE)   # grid, valid, steps, halt_logits, trace'
        params = meta.get("params")
        data = config.get("data", {})
        shown = [f"{k}={data[k]}" for k in ("source", "train_sets", "size", "n_train", "n_aug") if k in data]
        what = f"{task} puzzles" + (f" ({', '.join(shown)})" if shown else "")
    else:
        task = "language model"
        title = f"per-token recursive language model ({config.get('arch', 'trm')})"
        tags = ["trmlm", "tiny-recursive-model", "text-generation"]
        example = 'print(m.generate("ROMEO:", max_new_tokens=100))'
        params = meta.get("parameters")
        what = _lm_data(config.get("data", {}))
    if params is None:
        params = weights_numel
    arch = config.get("arch", net.get("arch", "trm"))
    shape = (f"{arch}, {net.get('mixer', 'attention')} mixer, D={net.get('d_model')}, "
             f"{net.get('n_layers')} layers, n={net.get('n_latent')}, T={net.get('n_cycles')}, "
             f"N_sup={net.get('max_sup_steps')}")
    metrics = meta.get("metrics") or {}
    scalar = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    step = meta.get("step", metrics.get("step"))
    seconds = meta.get("train_seconds", metrics.get("train_s", meta.get("seconds")))
    prov = meta.get("provenance") or {}
    command = prov.get("command")
    overview = [("task", task), ("network", shape), ("parameters", params if params is not None else "unknown"),
                ("trained on", what), ("optimizer steps", step if step is not None else "unknown"),
                ("training time", f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "unknown")]
    out = [
        "---", f"license: {LICENSE}", "library_name: trmlm", "tags:", *[f"- {t}" for t in tags], "---", "",
        f"# {title}", "",
        "A Tiny Recursive Model trained with [trmlm](https://pypi.org/project/trmlm/) "
        "(Tiny Recursive Models: one small network applied recursively, deep supervision, a learned "
        "halting head). This card is generated from the checkpoint's `config.json` and `meta.json`.", "",
        "## Use", "", "```python", "import trmlm", "",
        f'm = trmlm.load("{location or "path/to/this/directory"}")', example, "```", "",
        "## Model", "", _table(overview, ("", "")), "",
        "## Metrics", "",
        ("Held-out metrics measured by the training run at its last evaluation"
         + (f" (step {step})" if step is not None else "") + ":") if scalar else
        "No metrics were recorded with this checkpoint.", "",
    ]
    if scalar:
        out += [_table(scalar, ("metric", "value")), ""]
    out += [_hardware_line(prov.get("hardware")), "",
            "## How it was made", "",
            *(["```bash", command, "```"] if command else ["The command was not recorded."]), "",
            "## Config", "", "```json", json.dumps(config, indent=1, sort_keys=True), "```", "",
            "## License", "",
            "MIT, the license of trmlm. The terms of the training data apply to it as well.", ""]
    return "\n".join(out)


def write(path: str | Path, config: dict[str, Any], meta: dict[str, Any], weights_numel: int | None = None,
          location: str | None = None) -> Path:
    """(Re)write DIR/README.md atomically."""
    from trmlm.checkpoint import atomic_write_bytes

    card = Path(path) / CARD
    atomic_write_bytes(card, render(config, meta, weights_numel, location).encode())
    return card
