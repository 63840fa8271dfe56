"""Export command: trm export (ONNX graphs of a puzzle or LM checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from trmlm.checkpoint import CONFIG, load_checkpoint, read_json
from trmlm.cli.common import out, err, user_errors
from trmlm.errors import TRMError


def export_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint directory from train-puzzle or train-lm."),
    out_dir: Path = typer.Option(..., "--out", help="Directory for the graphs, their weights and manifest.json."),
    fmt: str = typer.Option("onnx", "--format", help="onnx (the only format)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier export in --out."),
    bench: int = typer.Option(0, "--bench", help="LM: then time this many greedy tokens, torch vs onnxruntime, side by side."),
    bench_prompt: str = typer.Option("ROMEO:", "--bench-prompt", help="Prompt for --bench."),
    threads: int = typer.Option(1, help="CPU threads for --bench (torch and onnxruntime alike)."),
    as_json: bool = typer.Option(False, "--json", help="Print the export report as JSON."),
) -> None:
    """Export a checkpoint as ONNX graphs for onnxruntime: the puzzle model's supervision step, or
    the LM's per-token pieces (initial state, one refinement step against a committed K/V prefix of
    any length, the commit pass, the output and halt heads). Each graph is checked against torch
    (max difference <= 1e-4) before the export is written. Generate without torch:
    `python -m trmlm.export.ort_lm OUT --prompt TEXT`."""
    if fmt != "onnx":
        raise TRMError(f"--format must be onnx, got {fmt!r}")
    if bench < 0 or threads < 0:
        raise TRMError("--bench and --threads must be >= 0")
    load_checkpoint(checkpoint)  # one-line errors for a missing or corrupt checkpoint
    config = read_json(checkpoint / CONFIG, "checkpoint config")
    from trmlm.export.onnx_export import export_lm, export_puzzle

    if "task" in config:
        from trmlm.puzzle.train import run_config_dict
        from trmlm.puzzles.run import load_model

        if bench:
            raise TRMError("--bench times LM decoding; this is a puzzle checkpoint")
        model, run, _ = load_model(checkpoint)
        result = export_puzzle(model, run_config_dict(run.task, run.model, run.train, run.data), out_dir,
                               source=str(checkpoint), overwrite=overwrite)
        lm = None
    else:
        from trmlm.configtools import to_dict
        from trmlm.lm.checkpoint import load_lm

        lm = load_lm(checkpoint)
        result = export_lm(lm.model, Path(checkpoint) / lm.tokenizer.file_name, to_dict(lm.generation),
                           out_dir, source=str(checkpoint), overwrite=overwrite)
    report = {"out": str(out_dir), "kind": result.manifest["kind"], "files": result.bytes,
              "parity_max_abs_diff": result.parity}
    if bench:
        from trmlm.export.bench import bench_decode

        report["bench"] = bench_decode(lm, checkpoint, out_dir, bench_prompt, bench, threads=threads)
    if as_json:
        out.print_json(json.dumps(report))
        return
    total = sum(v for k, v in result.bytes.items() if k.endswith((".onnx", ".bin")))
    out.print(f"exported {result.manifest['kind']} graphs to {out_dir} ({total:,} bytes of graphs and weights)", soft_wrap=True)
    for name, size in result.bytes.items():
        out.print(f"  {name:22s} {size:>12,} bytes")
    out.print("max |onnxruntime - torch|: " + ", ".join(f"{k} {v:.1e}" for k, v in result.parity.items()), soft_wrap=True)
    if "bench" in report:
        b = report["bench"]
        out.print(f"decode, {b['tokens']} greedy tokens, {b['threads']} thread(s), median of {b['repeats']}: "
                  f"torch {b['torch_tokens_per_s']:.1f} tokens/s, onnxruntime {b['onnxruntime_tokens_per_s']:.1f} "
                  f"tokens/s ({b['speedup']:.2f}x); same text: {b['same_text']}", soft_wrap=True)
    if lm is not None:
        err.print(f"generate without torch: python -m trmlm.export.ort_lm {out_dir} --prompt TEXT", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("export")(user_errors(export_cmd))
