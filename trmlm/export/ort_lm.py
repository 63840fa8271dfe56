"""Greedy generation from an exported LM with onnxruntime and numpy only (no torch import).

The same rules as `trm generate --temperature 0` (trmlm/lm/generate.py): the prompt is fed token
by token; every token is refined one supervision step at a time against the committed K/V of
the earlier tokens until its halt probability reaches the threshold (or max steps), then
committed; the last token's logits pick the next token (argmax, after the repetition penalty);
stop strings are cut; past the context the window slides to the last context/2 tokens.
A checkpoint decoded with the per-step cache (its generation config's `cache`, set for every
`cache_levels` model) keeps one committed (K, V) per level, as trmlm/lm/stepsync.py does.

    python -m trmlm.export.ort_lm EXPORT_DIR --prompt "ROMEO:" --max-new-tokens 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trmlm.errors import TRMError
from trmlm.export.manifest import read_manifest
from trmlm.lm.config import unscored_steps


def make_session(path: Path, threads: int = 1):
    """An onnxruntime CPU session with `threads` intra-op threads (0 = onnxruntime's default)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise TRMError("onnxruntime is not installed (pip install 'trmlm[export]')") from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@dataclass
class Halting:
    """Per-token halting, as HaltPolicy: stop after step s >= min_steps once sigmoid(q) >= threshold;
    threshold None = always max_steps."""

    max_steps: int
    min_steps: int = 1
    threshold: float | None = 0.5

    def __post_init__(self) -> None:
        if self.max_steps < 1 or not 1 <= self.min_steps <= self.max_steps:
            raise TRMError(f"need 1 <= --min-steps ({self.min_steps}) <= --max-steps ({self.max_steps})")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise TRMError("--halt-threshold must lie in [0, 1]")

    @classmethod
    def from_generation(cls, gen: dict[str, Any], n_sup: int) -> Halting:
        """The checkpoint's generation_config.json settings (GenerationConfig.validate's rule)."""
        max_steps = int(gen.get("max_steps") or 0) or n_sup
        if gen.get("no_halting"):
            return cls(max_steps, max_steps, None)
        return cls(max_steps, int(gen.get("min_steps", 1)), float(gen.get("halt_threshold", 0.5)))


class NumpyCache:
    """Committed (K, V) per layer, (NL, B, H, context, Dh); `commit` is the one place pos advances."""

    def __init__(self, n_layers: int, n_heads: int, head_dim: int, max_len: int, batch: int = 1) -> None:
        shape = (n_layers, batch, n_heads, max_len, head_dim)
        self.k = np.zeros(shape, np.float32)
        self.v = np.zeros(shape, np.float32)
        self.max_len, self.pos = max_len, 0

    @property
    def free(self) -> int:
        return self.max_len - self.pos

    def prefix(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.ascontiguousarray(self.k[:, :, :, :self.pos]),
                np.ascontiguousarray(self.v[:, :, :, :self.pos]))

    def commit(self, k: np.ndarray, v: np.ndarray) -> None:
        self.k[:, :, :, self.pos:self.pos + 1] = k
        self.v[:, :, :, self.pos:self.pos + 1] = v
        self.pos += 1


class LevelCaches:
    """The committed levels a token reads and writes. Per-step (trmlm/lm/stepsync.py StepCaches):
    levels[s] holds each token's commit of its state after s supervision steps, and step s of a
    later token reads level min(s, k) - 1. Commit-last (`commit_final`): one level, holding each
    token's commit of its final state."""

    def __init__(self, count: int, make, commit_final: bool = False) -> None:
        self.levels: list[NumpyCache] = [make() for _ in range(count)]
        self.commit_final = commit_final

    def level(self, step: int) -> NumpyCache:
        return self.levels[min(step, len(self.levels)) - 1]

    def committed_state(self, level_index: int, states: list):
        """What a finished token with `states` (initial, after step 1, ...) commits to a level:
        its final state (commit-last), or its state after min(level, steps) steps (per-step)."""
        return states[-1] if self.commit_final else states[min(level_index, len(states) - 1)]

    @property
    def free(self) -> int:
        return self.levels[0].free


class OnnxLM:
    """The exported graphs of a TRM language model (manifest kind "lm") and its tokenizer."""

    def __init__(self, export_dir: str | Path, threads: int = 1, cache: str | None = None) -> None:
        """cache: "commit-last" or "per-step"; None = the checkpoint's generation config's."""
        from trmlm.lm.tokenizer import load_tokenizer

        self.dir = Path(export_dir)
        self.manifest = read_manifest(self.dir, "lm")
        self.sessions = {name: make_session(self.dir / f, threads)
                         for name, f in self.manifest["graphs"].items()}
        self.tokenizer = load_tokenizer(self.dir / self.manifest["tokenizer"])
        s = self.manifest["shapes"]
        self.n_layers, self.n_heads, self.head_dim = s["n_layers"], s["n_heads"], s["head_dim"]
        self.context, self.n_sup = s["context"], s["max_sup_steps"]
        config = self.manifest.get("config", {})
        # the checkpoint's own decoder: per-step levels (cache_levels or N_sup of them) or commit-last
        cache = cache or self.manifest.get("generation", {}).get("cache") or "commit-last"
        if cache not in ("commit-last", "per-step"):
            raise TRMError(f"--cache must be commit-last or per-step, got {cache!r}")
        self.per_step = cache == "per-step"
        self.level_count = int(config.get("cache_levels") or 0) or self.n_sup
        # (per-step only) refine_on "loss" / "cached": a prompt token before the last is refined
        # for none / cache_levels - 1 of the steps (LMConfig.unscored_steps)
        self.unscored_steps = unscored_steps(config.get("refine_on", "all"), int(config.get("cache_levels") or 0))

    def run(self, graph: str, **inputs: np.ndarray) -> list[np.ndarray]:
        """Run one graph; inputs it does not declare are left out (the exporter drops an input the
        graph does not read, e.g. z of the commit pass when the model commits x + y)."""
        session = self.sessions[graph]
        names = {i.name for i in session.get_inputs()}
        return session.run(None, {k: v for k, v in inputs.items() if k in names})

    def new_cache(self) -> LevelCaches:
        def make() -> NumpyCache:
            return NumpyCache(self.n_layers, self.n_heads, self.head_dim, self.context)
        if self.per_step:
            return LevelCaches(self.level_count, make)
        return LevelCaches(1, make, commit_final=True)

    def feed(self, cache: LevelCaches, token: int, halting: Halting,
             refine: bool = True) -> tuple[np.ndarray, int]:
        """Refine the token at the cache's next position (one graph call per supervision step,
        halting after each), commit its (K, V) (per level: its state after that many steps, the
        last one above its halting step); returns the next-token logits (V,) and the steps used.
        refine False (per-step cache only): the token stops after the model's unscored steps
        (none: its initial state, 0 steps)."""
        if cache.free < 1:
            raise TRMError("KV cache full")
        tok = np.array([[token]], np.int64)             # (1, 1)
        position = np.array([cache.levels[0].pos], np.int64)  # (1,)
        y, z = self.run("init", token=tok)
        states = [(y, z)]
        top = halting.max_steps if refine else min(self.unscored_steps or 0, halting.max_steps)
        for s in range(1, top + 1):
            pk, pv = cache.level(s).prefix()             # (NL, 1, H, P, Dh)
            y, z = self.run("refine", token=tok, position=position, y=y, z=z, prefix_k=pk, prefix_v=pv)
            states.append((y, z))
            if halting.threshold is not None and s >= halting.min_steps:
                q = self.run("halt", y=y)[0][0, 0]       # float32, as the torch head returns it
                if 1.0 / (1.0 + np.exp(-q)) >= halting.threshold:
                    break
        for level_index, level in enumerate(cache.levels):
            ly, lz = cache.committed_state(level_index, states)
            pk, pv = level.prefix()
            k, v = self.run("commit", token=tok, y=ly, z=lz, position=position, prefix_k=pk, prefix_v=pv)
            level.commit(k, v)
        return self.run("logits", y=y)[0][0, 0], len(states) - 1

    def start(self, ids: list[int], halting: Halting) -> tuple[LevelCaches, np.ndarray, int]:
        """A fresh cache with `ids` fed (sequential prefill); the last token's logits and steps.
        A per-step model trained with refine_on "loss" or "cached" refines only the last prompt
        token in full."""
        cache = self.new_cache()
        only_last = self.per_step and self.unscored_steps is not None
        for i, t in enumerate(ids):
            logits, steps = self.feed(cache, t, halting, refine=not only_last or i == len(ids) - 1)
        return cache, logits, steps


def repetition_penalty(logits: np.ndarray, previous: list[int], penalty: float) -> np.ndarray:
    """CTRL: logits of seen tokens divided by `penalty` if positive, multiplied if negative."""
    if penalty == 1.0 or not previous:
        return logits
    out = logits.copy()
    seen = np.unique(np.asarray(previous, np.int64))
    out[seen] = np.where(out[seen] > 0, out[seen] / penalty, out[seen] * penalty)
    return out


@dataclass
class Generated:
    text: str                  # the continuation (stop string excluded)
    tokens: list[int]
    token_steps: list[int]     # supervision steps spent predicting each generated token
    seconds: float
    reason: str                # "length" | "stop"

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / max(self.seconds, 1e-9)


def generate_greedy(lm: OnnxLM, prompt: str, max_new_tokens: int = 200, stop: list[str] | None = None,
                    halting: Halting | None = None, penalty: float = 1.0) -> Generated:
    """Greedy continuation of `prompt` (see the module docstring for the rules)."""
    stop = list(stop or [])
    if not prompt:
        raise TRMError("empty prompt: give at least one character with --prompt")
    if max_new_tokens < 1:
        raise TRMError("--max-new-tokens must be >= 1")
    if not all(stop):
        raise TRMError("stop strings must not be empty")
    halting = halting or Halting.from_generation(lm.manifest.get("generation", {}), lm.n_sup)
    ids = lm.tokenizer.encode(prompt)
    if len(ids) >= lm.context:
        raise TRMError(f"prompt of {len(ids)} tokens does not fit the model's context of "
                       f"{lm.context} tokens (at most {lm.context - 1})")
    t0 = time.perf_counter()
    cache, logits, steps = lm.start(ids, halting)
    history, new_ids, token_steps = list(ids), [], []
    text, reason = "", "length"
    while True:
        token = int(np.argmax(repetition_penalty(logits, history, penalty)))
        new_ids.append(token)
        history.append(token)
        token_steps.append(steps)
        full = lm.tokenizer.decode(new_ids)
        if not full.endswith("\ufffd") and len(full) > len(text):  # an incomplete UTF-8 sequence waits
            text = full
        cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
        if cut >= 0:
            text, reason = text[:cut], "stop"
            break
        if len(new_ids) >= max_new_tokens:
            break
        if cache.free < 1:  # context full: slide the window to the last half of the context
            cache, logits, steps = lm.start(history[-(lm.context // 2):], halting)
        else:
            logits, steps = lm.feed(cache, token, halting)
    return Generated(text, new_ids, token_steps, time.perf_counter() - t0, reason)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trmlm.export.ort_lm",
                                description="Greedy generation from a `trm export` LM directory "
                                            "with onnxruntime (no torch).")
    p.add_argument("export_dir")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the checkpoint's (200)")
    p.add_argument("--stop", action="append", default=None, help="stop before this string (repeatable)")
    p.add_argument("--halt-threshold", type=float, default=None)
    p.add_argument("--min-steps", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--no-halting", action="store_true")
    p.add_argument("--cache", default=None, help="commit-last | per-step (default: the checkpoint's)")
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (0 = its default)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the text")
    a = p.parse_args(argv)
    try:
        lm = OnnxLM(a.export_dir, a.threads, a.cache)
        gen = dict(lm.manifest.get("generation", {}))
        for key, value in (("halt_threshold", a.halt_threshold), ("min_steps", a.min_steps),
                           ("max_steps", a.max_steps), ("max_new_tokens", a.max_new_tokens),
                           ("repetition_penalty", a.repetition_penalty), ("stop", a.stop)):
            if value is not None:
                gen[key] = value
        gen["no_halting"] = a.no_halting or gen.get("no_halting", False)
        out = generate_greedy(lm, a.prompt, int(gen.get("max_new_tokens", 200)), gen.get("stop"),
                              Halting.from_generation(gen, lm.n_sup),
                              float(gen.get("repetition_penalty", 1.0)))
    except TRMError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps({"prompt": a.prompt, "text": out.text, "tokens": len(out.tokens),
                          "token_steps": out.token_steps, "stop_reason": out.reason,
                          "seconds": round(out.seconds, 4), "tokens_per_s": round(out.tokens_per_s, 2)}))
    else:
        print(a.prompt + out.text)
        mean = sum(out.token_steps) / len(out.token_steps)
        print(f"{len(out.tokens)} tokens in {out.seconds:.2f}s ({out.tokens_per_s:.1f} tokens/s), "
              f"mean steps/token {mean:.2f}, stop: {out.reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
