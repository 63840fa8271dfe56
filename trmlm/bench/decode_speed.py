"""`trm bench --decode`: cached decode time per token vs prefix length, against an equal-FLOPs GPT-2, and KV bytes vs depth."""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from trmlm.bench.common import decode_flops_per_token, hardware, sync
from trmlm.errors import TRMError
from trmlm.lm.cache import KVCache
from trmlm.lm.config import LMConfig
from trmlm.lm.decode import decode_step
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.model import TRMLanguageModel, TransformerLM
from trmlm.lm.stepsync import StepCaches, decode_step_sync, own_decoder

PREFIXES = [64, 128, 256, 512, 1024]
MAX_PREFIX = 32768   # an oversized request is an error, not an hour of decoding
DEPTHS = [(1, 1, 1), (3, 2, 1), (8, 4, 2), (16, 6, 3)]   # (N_sup, n, T) for the KV-bytes table


def with_context(cfg: LMConfig, context: int) -> LMConfig:
    """The same architecture with a longer context (RoPE tables sized to it)."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, seq_len=context))


def fill_prefix(cache: KVCache, length: int, generator: torch.Generator) -> None:
    """Commit `length` positions of random (K, V): decode time depends on the prefix length, not on
    its values, and prefilling 1024 tokens through the recursion would only slow the benchmark."""
    L, B, H, _, Dh = cache.k.shape
    kvs = [(torch.randn(B, H, length, Dh, generator=generator).to(cache.k),
            torch.randn(B, H, length, Dh, generator=generator).to(cache.k)) for _ in range(L)]
    cache.commit(kvs)


def median_seconds_per_token(decode_one, warmup: int, tokens: int, device: torch.device) -> float:
    """Median wall seconds of `decode_one()` (one token) over `tokens` calls after `warmup` calls;
    CUDA is synchronized around each so the clock sees the work."""
    times = []
    for i in range(warmup + tokens):
        sync(device)
        t0 = time.perf_counter()
        decode_one()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def time_trmlm(model: TRMLanguageModel | TransformerLM, prefix: int, tokens: int, warmup: int,
               policy: HaltPolicy) -> float:
    """Median seconds per decoded token at batch 1 after `prefix` committed positions, with the
    model's own decoder (the commit-last cache, or the per-step levels of a cache_levels model)."""
    make_cache, step = own_decoder(model)
    cache = make_cache(model, 1, prefix + warmup + tokens)
    levels = cache.levels if isinstance(cache, StepCaches) else [cache]
    generator = torch.Generator().manual_seed(prefix)
    for level in levels:
        fill_prefix(level, prefix, generator)
    token = torch.zeros(1, dtype=torch.long, device=levels[0].k.device)

    def decode_one() -> None:
        nonlocal token
        token = step(model, cache, token, policy).logits.argmax(-1)

    return median_seconds_per_token(decode_one, warmup, tokens, levels[0].k.device)


def gpt2_equal_flops(cfg: LMConfig, context: int, commits: int = 1):
    """A Hugging Face GPT-2 with the TRM's FLOPs per token at full depth and every prefix length:
    one layer per layer application of the TRM (N_sup T (n + 1) + `commits` commit calls, one
    per cache level, times its layers),
    the same width, heads and vocabulary, and an MLP width that makes each layer's matmuls equal
    (GPT-2's 2-matrix GELU MLP of width 1.5 W = the TRM's 3-matrix SwiGLU of width W)."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError as e:
        raise TRMError("the GPT-2 baseline needs transformers: pip install 'trmlm[bench]'") from e
    net = cfg.model
    layers = (net.max_sup_steps * net.n_cycles * (net.n_latent + 1) + commits) * net.n_layers
    gcfg = GPT2Config(vocab_size=net.vocab_size, n_positions=context, n_embd=net.d_model, n_layer=layers,
                      n_head=net.n_heads, n_inner=3 * net.ffn_width // 2, resid_pdrop=0.0, embd_pdrop=0.0,
                      attn_pdrop=0.0, use_cache=True, bos_token_id=0,
                      eos_token_id=0)
    return GPT2LMHeadModel(gcfg).eval(), layers


@torch.no_grad()
def time_gpt2(model, prefix: int, tokens: int, warmup: int) -> float:
    """Median seconds per token of GPT-2 decoding with its own KV cache (past_key_values), batch 1."""
    device = next(model.parameters()).device
    ids = torch.randint(0, model.config.vocab_size, (1, prefix), generator=torch.Generator().manual_seed(prefix))
    out = model(input_ids=ids.to(device), use_cache=True)
    past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)

    def decode_one() -> None:
        nonlocal past, token
        out = model(input_ids=token, past_key_values=past, use_cache=True)
        past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)

    return median_seconds_per_token(decode_one, warmup, tokens, device)


def gpt2_flops_per_token(model, keys: int) -> float:
    c = model.config
    D, F = c.n_embd, c.n_inner
    per_layer = 2 * (4 * D * D + 2 * D * F) + 4 * keys * D
    return c.n_layer * per_layer + 2 * D * c.vocab_size


def _nan_filled(caches: list[KVCache]) -> list[KVCache]:
    for cache in caches:
        for buf in (cache.k, cache.v):
            buf.fill_(float("nan"))  # sentinel: every value a commit stores replaces one NaN
    return caches


def _written_bytes(caches: list[KVCache]) -> int:
    """Bytes that commits stored into NaN-filled caches."""
    return sum(int((~buf.isnan()).sum()) * buf.element_size() for c in caches for buf in (c.k, c.v))


def kv_bytes_table(cfg: LMConfig, tokens: int = 8) -> list[dict[str, Any]]:
    """Bytes per token of the commit-last cache vs the per-step cache (one level per supervision
    step, as Huginn keeps one entry per recursion step), for growing recursion depth: the
    formula, and what decoding `tokens` real tokens at full depth actually wrote into each (the
    per-step cache with one level per step, whatever `cfg.cache_levels` says)."""
    cfg = dataclasses.replace(cfg, cache_levels=0)
    rows = []
    for n_sup, n, T in DEPTHS:
        net = dataclasses.replace(cfg.model, max_sup_steps=n_sup, n_latent=n, n_cycles=T, seq_len=tokens)
        model = TRMLanguageModel(dataclasses.replace(cfg, model=net)).eval()
        policy = HaltPolicy.fixed(n_sup)
        # one spare position each: a commit beyond the decoded tokens would show in the count
        cache, = _nan_filled([KVCache.for_model(model, 1, tokens + 1)])
        per_step = StepCaches(model, 1, tokens + 1)
        _nan_filled(per_step.levels)
        for t in range(tokens):
            token = torch.tensor([t % net.vocab_size])
            decode_step(model, cache, token, policy)
            decode_step_sync(model, per_step, token, policy)
        rows.append({"N_sup": n_sup, "n": n, "T": T, "f_calls_per_token": n_sup * T * (n + 1) + 1,
                     "commit_last_bytes_per_token": cache.bytes_per_token(),
                     "commit_last_bytes_measured": _written_bytes([cache]) // tokens,
                     "per_step_cache_bytes_per_token": per_step.bytes_per_token(),
                     "per_step_cache_bytes_measured": _written_bytes(per_step.levels) // tokens})
    return rows


def run_decode_bench(cfg: LMConfig, prefixes: list[int] | None = None, tokens: int = 32, warmup: int = 4,
                     gpt2: bool = True, console: Console | None = None, progress: bool = True,
                     rounds: int = 3, device: torch.device | str = "cpu") -> dict[str, Any]:
    """TRM (full depth N_sup, and 1 step) and the equal-FLOPs GPT-2 at every prefix length, batch 1:
    per model the best of `rounds` interleaved medians over `tokens` timed tokens."""
    prefixes = sorted(prefixes or PREFIXES)
    if prefixes[0] < 1 or prefixes[-1] > MAX_PREFIX or tokens < 1:
        raise TRMError(f"--prefix-lengths must lie in 1..{MAX_PREFIX} and --decode-tokens be >= 1")
    if cfg.arch != "trm":
        raise TRMError("--decode benchmarks the TRM architecture; give a TRM checkpoint or preset")
    context = prefixes[-1] + warmup + tokens
    cfg = with_context(cfg, context)
    torch.manual_seed(0)
    trm = TRMLanguageModel(cfg).eval().to(device)
    n_sup = cfg.model.max_sup_steps
    own = own_decoder(trm)[0](trm, 1, 1)  # the decoder timed: commit-last, or per-step levels
    policies = {"trm_full": HaltPolicy.fixed(n_sup), "trm_1step": HaltPolicy.fixed(1)}
    baseline, g_layers = gpt2_equal_flops(cfg, context, own.commits_per_token) if gpt2 else (None, 0)
    if baseline is not None:
        baseline.to(device)
    rows = []
    columns = [TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task("decode", total=len(prefixes))
        for P in prefixes:
            bar.update(task, description=f"prefix {P}")
            keys = torch.tensor([P + 1])
            row: dict[str, Any] = {"prefix": P}
            # Interleaved rounds, best round's median kept per model: a shared machine's
            # transient load then hits every model alike instead of one row.
            for _ in range(rounds):
                for name, pol in policies.items():
                    ms = 1e3 * time_trmlm(trm, P, tokens, warmup, pol)
                    row[f"{name}_ms"] = min(row.get(f"{name}_ms", ms), ms)
                if baseline is not None:
                    ms = 1e3 * time_gpt2(baseline, P, tokens, warmup)
                    row["gpt2_ms"] = min(row.get("gpt2_ms", ms), ms)
            one = torch.ones(1, dtype=torch.long)
            row["trm_full_gflops_per_token"] = float(decode_flops_per_token(
                cfg.model, one * n_sup, keys, one, one * 0, own.commits_per_token)) / 1e9
            if baseline is not None:
                row["gpt2_gflops_per_token"] = gpt2_flops_per_token(baseline, P + 1) / 1e9
                row["trm_over_gpt2_tokens_per_s"] = row["gpt2_ms"] / row["trm_full_ms"]
            rows.append(row)
            bar.advance(task)
    first, last = rows[0], rows[-1]
    kv = kv_bytes_table(cfg)
    report = {"benchmark": "decode", "hardware": hardware(device), "batch": 1, "timed_tokens": tokens, "rounds": rounds,
              "warmup_tokens": warmup, "weights": "random (decode time does not depend on them)",
              "trm": {"d_model": cfg.model.d_model, "n_layers": cfg.model.n_layers, "n": cfg.model.n_latent,
                      "T": cfg.model.n_cycles, "N_sup": n_sup, "params": trm.num_parameters(),
                      "decoder": "per-step" if isinstance(own, StepCaches) else "commit-last",
                      "kv_bytes_per_token": own.bytes_per_token()},
              "rows": rows, "kv_bytes_vs_depth": kv,
              "ratio_time_longest_vs_shortest_prefix": last["trm_full_ms"] / first["trm_full_ms"]}
    if baseline is not None:
        report["gpt2"] = {"n_layer": g_layers, "n_embd": cfg.model.d_model, "n_inner": baseline.config.n_inner,
                          "params": sum(p.numel() for p in baseline.parameters()),
                          "implementation": "transformers GPT2LMHeadModel, past_key_values"}
    targets = {"time_at_longest_prefix_at_most_1.3x_shortest": report["ratio_time_longest_vs_shortest_prefix"] <= 1.3,
               "kv_bytes_independent_of_depth": len({r["commit_last_bytes_measured"] for r in kv}) == 1}
    if baseline is not None:
        targets["tokens_per_s_at_least_gpt2_every_prefix"] = all(r["trm_over_gpt2_tokens_per_s"] >= 1.0 for r in rows)
    report["targets"] = targets
    report["targets_met"] = all(targets.values())
    return report


def print_decode_tables(report: dict[str, Any], console: Console) -> None:
    hw, t = report["hardware"], report["trm"]
    gpt2 = "gpt2" in report
    table = Table(title=f"cached decode, batch 1, {hw['device']} {hw['threads']} thread(s): TRM D {t['d_model']}, "
                        f"{t['n_layers']} layers, N_sup {t['N_sup']} x T {t['T']} x (n {t['n']} + 1), "
                        f"{t.get('decoder', 'commit-last')} cache"
                        + (f" vs GPT-2 {report['gpt2']['n_layer']} layers (equal FLOPs)" if gpt2 else ""))
    cols = ["prefix", "TRM full depth ms/token", "TRM 1 step ms/token", "GFLOP/token"]
    if gpt2:
        cols += ["GPT-2 ms/token", "GPT-2 GFLOP/token", "TRM/GPT-2 tokens/s"]
    for c in cols:
        table.add_column(c, justify="right")
    for r in report["rows"]:
        cells = [str(r["prefix"]), f"{r['trm_full_ms']:.2f}", f"{r['trm_1step_ms']:.2f}",
                 f"{r['trm_full_gflops_per_token']:.4f}"]
        if gpt2:
            cells += [f"{r['gpt2_ms']:.2f}", f"{r['gpt2_gflops_per_token']:.4f}", f"{r['trm_over_gpt2_tokens_per_s']:.2f}x"]
        table.add_row(*cells)
    console.print(table)
    kv = Table(title="KV cache bytes per token vs recursion depth (fp32, batch 1)")
    for c in ("N_sup", "n", "T", "f calls/token", "commit-last (ours)", "measured", "per-step cache", "measured"):
        kv.add_column(c, justify="right")
    for r in report["kv_bytes_vs_depth"]:
        kv.add_row(str(r["N_sup"]), str(r["n"]), str(r["T"]), str(r["f_calls_per_token"]),
                   str(r["commit_last_bytes_per_token"]), str(r["commit_last_bytes_measured"]),
                   str(r["per_step_cache_bytes_per_token"]), str(r["per_step_cache_bytes_measured"]))
    console.print(kv)
    console.print(f"time per token at prefix {report['rows'][-1]['prefix']} / at {report['rows'][0]['prefix']}: "
                  f"{report['ratio_time_longest_vs_shortest_prefix']:.2f}x")
    for k, v in report["targets"].items():
        console.print(f"  target {k}: {'met' if v else 'MISSED'}")
