"""Side-by-side decode speed: `trm generate`'s torch loop vs the onnxruntime loop, same text, 1 thread."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

import onnxruntime
import torch

from trmlm.bench.common import hardware
from trmlm.checkpoint import WEIGHTS
from trmlm.export.ort_lm import Halting, OnnxLM, generate_greedy
from trmlm.lm.checkpoint import LoadedLM
from trmlm.lm.generate import GenerationConfig, SampleDone, generate


def _torch_run(lm: LoadedLM, prompt: str, gcfg: GenerationConfig) -> SampleDone:
    return [e for e in generate(lm.model, lm.tokenizer, prompt, gcfg) if isinstance(e, SampleDone)][0]


def bench_decode(lm: LoadedLM, checkpoint: Path, export_dir: Path, prompt: str, tokens: int,
                 repeats: int = 5, threads: int = 1) -> dict[str, Any]:
    """Greedy `tokens` tokens from `prompt` with both loops, alternating, `repeats` times each;
    median tokens/s (prompt prefill included, as `trm generate` reports it) and whether the
    texts are equal. Stop strings are off so both loops decode exactly `tokens` tokens."""
    torch.set_num_threads(threads)
    gcfg = dataclasses.replace(lm.generation, temperature=0.0, max_new_tokens=tokens, stop=[],
                               num_samples=1)  # (its own cache; the export's manifest says the same)
    policy = gcfg.validate(lm.cfg.model.max_sup_steps)
    halting = Halting(policy.max_steps, policy.min_steps, policy.threshold)
    onnx_lm = OnnxLM(export_dir, threads, gcfg.cache)
    _torch_run(lm, prompt, gcfg)                       # warm-up both
    generate_greedy(onnx_lm, prompt, tokens, [], halting, gcfg.repetition_penalty)
    torch_rates, ort_rates = [], []
    for _ in range(repeats):
        t = _torch_run(lm, prompt, gcfg)
        o = generate_greedy(onnx_lm, prompt, tokens, [], halting, gcfg.repetition_penalty)
        torch_rates.append(t.tokens / t.seconds)
        ort_rates.append(o.tokens_per_s)
    sizes = {p.name: p.stat().st_size for p in sorted(Path(export_dir).iterdir()) if p.is_file()}
    return {
        "prompt": prompt, "tokens": tokens, "repeats": repeats, "threads": threads,
        "same_text": t.text == o.text, "mean_steps_per_token": sum(o.token_steps) / len(o.token_steps),
        "torch_tokens_per_s": round(statistics.median(torch_rates), 1),
        "onnxruntime_tokens_per_s": round(statistics.median(ort_rates), 1),
        "speedup": round(statistics.median(ort_rates) / statistics.median(torch_rates), 3),
        "parameters": lm.model.num_parameters(),
        "safetensors_bytes": (Path(checkpoint) / WEIGHTS).stat().st_size,
        "export_bytes": sum(v for k, v in sizes.items() if k.endswith((".onnx", ".bin"))),
        "files": sizes, "onnxruntime": onnxruntime.__version__, "hardware": hardware("cpu"),
    }
