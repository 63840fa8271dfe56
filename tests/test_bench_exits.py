"""Exit rules (fixed, learned, random, oracle, KL, argmax) and the adaptive-compute / decode benchmarks on tiny models."""

from __future__ import annotations

import math

import pytest
import torch

from trmlm.bench.adaptive import AdaptiveSettings, run_adaptive_bench
from trmlm.bench.common import decode_flops_per_token
from trmlm.bench.decode_speed import gpt2_flops_per_token, kv_bytes_table, run_decode_bench
from trmlm.config import TRMConfig
from trmlm.flops import f_forward_flops
from trmlm.lm.cache import KVCache
from trmlm.lm.config import LMConfig
from trmlm.lm.decode import decode_step, reference_logits, sequential_logits
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.exits import ArgmaxExit, KLExit, OracleExit, RandomExit
from trmlm.lm.model import TRMLanguageModel

torch.set_num_threads(1)


def tiny_cfg(n_sup: int = 3, seq_len: int = 16, vocab: int = 11, cache_levels: int = 0) -> LMConfig:
    net = TRMConfig(vocab_size=vocab, seq_len=seq_len, d_model=32, n_heads=4, n_layers=2, n_latent=1,
                    n_cycles=1, max_sup_steps=n_sup, mixer="attention", pos_encoding="rope", puzzle_emb_len=0,
                    swiglu_multiple=16)
    if cache_levels:  # a two-level state cache decodes with its per-step levels
        return LMConfig(model=net, commit_input="x+y+z", cache_levels=cache_levels)
    return LMConfig(model=net)


@pytest.fixture(scope="module")
def model() -> TRMLanguageModel:
    torch.manual_seed(0)
    m = TRMLanguageModel(tiny_cfg()).eval()
    with torch.no_grad():  # a halt head that is not constant, so thresholds separate tokens
        m.q_head.weight.normal_(0, 1.0)
        m.q_head.bias.zero_()
    return m


def tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 11, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_fixed_and_learned_rules_keep_their_meaning(model):
    t = tokens(2, 10)
    _, steps = sequential_logits(model, t, HaltPolicy.fixed(2))
    assert (steps == 2).all()
    _, steps = sequential_logits(model, t, HaltPolicy(3, 1, 0.5))
    assert steps.min() >= 1 and steps.max() <= 3 and len(set(steps.flatten().tolist())) > 1
    # threshold 0: everything halts after the first step; threshold above 1: nothing halts early
    assert (sequential_logits(model, t, HaltPolicy(3, 1, 0.0))[1] == 1).all()
    assert (sequential_logits(model, t, HaltPolicy(3, 1, 1.0 + 1e-9))[1] == 3).all()


def test_random_exit_has_the_requested_mean_depth(model):
    rule = RandomExit(3, mean_depth=1.7, generator=torch.Generator().manual_seed(1))
    _, steps = sequential_logits(model, tokens(4, 16), rule)
    assert set(steps.flatten().tolist()) <= {1, 2}
    assert abs(steps.float().mean().item() - 1.7) < 0.15
    with pytest.raises(ValueError):
        RandomExit(3, mean_depth=3.5)


def test_training_free_exits(model):
    t = tokens(2, 8)
    assert (sequential_logits(model, t, KLExit(3, eps=1e9))[1] == 2).all()     # any change is small
    assert (sequential_logits(model, t, KLExit(3, eps=1e-30))[1] == 3).all()   # no change is small


def test_training_free_exits_stop_where_their_rule_says(model):
    """Every first token (empty prefix) of the vocabulary: the depth ArgmaxExit / KLExit pick
    equals the one computed here from the fixed-depth predictions at depths 1, 2."""
    first = torch.arange(11)
    logits = []
    for d in (1, 2):
        out = decode_step(model, KVCache.for_model(model, 11, 1), first, HaltPolicy.fixed(d))
        logits.append(out.logits.float())
    same = logits[0].argmax(-1) == logits[1].argmax(-1)
    want = torch.where(same, 2, 3)  # patience 1: stop at step 2 if the argmax held, else at max 3
    assert len(set(want.tolist())) == 2, want  # both outcomes occur, so the check can tell
    got = decode_step(model, KVCache.for_model(model, 11, 1), first, ArgmaxExit(3, patience=1)).steps
    assert got.tolist() == want.tolist()
    p1, p2 = (torch.log_softmax(x, -1) for x in logits)
    kl = (p2.exp() * (p2 - p1)).sum(-1)  # KL(p_2 || p_1) per token
    eps = float(kl.median())
    got = decode_step(model, KVCache.for_model(model, 11, 1), first, KLExit(3, eps=eps)).steps
    assert got.tolist() == torch.where(kl < eps, 2, 3).tolist()


def test_oracle_picks_the_best_step_for_the_first_token(model):
    """On an empty prefix the oracle's NLL is the minimum over the fixed depths."""
    t = tokens(3, 2)
    target = t[:, 1]
    nll = []
    for d in (1, 2, 3):
        cache = KVCache.for_model(model, 3, 2)
        out = decode_step(model, cache, t[:, 0], HaltPolicy.fixed(d))
        nll.append(-torch.log_softmax(out.logits, -1).gather(1, target[:, None])[:, 0])
    nll = torch.stack(nll)  # (3, B)
    rule = OracleExit(3)
    rule.target = target
    out = decode_step(model, KVCache.for_model(model, 3, 2), t[:, 0], rule)
    got = -torch.log_softmax(out.logits, -1).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(got, nll.min(0).values)
    assert out.steps.tolist() == (nll.argmin(0) + 1).tolist()


def test_decode_flops_count_the_calls_of_f():
    net = tiny_cfg().model
    steps, keys = torch.tensor([1, 3]), torch.tensor([5, 9])
    got = decode_flops_per_token(net, steps, keys, torch.ones(2), torch.zeros(2))
    calls = net.n_cycles * (net.n_latent + 1)
    head = 2 * net.d_model * net.vocab_size
    levels = decode_flops_per_token(net, steps, keys, torch.ones(2), torch.zeros(2), commits=2)
    for i in range(2):
        f = f_forward_flops(net, 1, 1, keys=int(keys[i]))
        assert math.isclose(float(got[i]), calls * int(steps[i]) * f + f + head, rel_tol=1e-9)
        assert math.isclose(float(levels[i]), calls * int(steps[i]) * f + 2 * f + head, rel_tol=1e-9)


def test_adaptive_bench_report(model):
    windows = tokens(2, 13)  # 2 windows of 12 predicted tokens
    settings = AdaptiveSettings(thresholds=[0.3, 0.7], kl_eps=[0.01], n_prompts=2, new_tokens=4)
    rep = run_adaptive_bench(model, windows, 1.0, settings, progress=False)
    names = [r["name"] for r in rep["rows"]]
    assert {"fixed 1", "fixed 2", "fixed 3", "halt q>=0.3", "halt q>=0.7", "KL<0.01", "argmax stable x1",
            "oracle"} <= set(names)
    rows = {r["name"]: r for r in rep["rows"]}
    fixed = [rows[f"fixed {d}"] for d in (1, 2, 3)]
    assert [r["steps_mean"] for r in fixed] == [1.0, 2.0, 3.0]
    assert [r["steps_histogram"] for r in fixed] == [[24, 0, 0], [0, 24, 0], [0, 0, 24]]
    assert all(sum(r["steps_histogram"]) == r["tokens"] == 24 for r in rep["rows"])
    assert fixed[0]["gflops_per_token"] < fixed[1]["gflops_per_token"] < fixed[2]["gflops_per_token"]
    assert rows["fixed 3"]["argmax_agreement"] == 1.0 and rows["fixed 3"]["greedy_agreement"] == 1.0
    # the shallower rows against the deepest, recomputed here: teacher-forced argmax and NLL
    # (batched, not the bench's batch-1 loop) and greedy continuations by full recompute
    inputs, targets = windows[:, :-1], windows[:, 1:]
    prompts = windows[:, :8]  # prompt_len = 13 - 1 - new_tokens 4
    ref = {}
    for d in (1, 2, 3):
        logits, _ = sequential_logits(model, inputs, HaltPolicy.fixed(d))
        nll = -torch.log_softmax(logits, -1).gather(-1, targets[..., None]).mean()
        ids = prompts.clone()
        for _ in range(4):
            nxt = reference_logits(model, ids, HaltPolicy.fixed(d))[0][:, -1].argmax(-1)
            ids = torch.cat([ids, nxt[:, None]], 1)
        ref[d] = (logits.argmax(-1), float(nll), ids[:, 8:])
    for d in (1, 2):
        row = rows[f"fixed {d}"]
        assert row["argmax_agreement"] == pytest.approx(float((ref[d][0] == ref[3][0]).float().mean()))
        assert row["greedy_agreement"] == pytest.approx(float((ref[d][2] == ref[3][2]).float().mean()))
        assert row["ppl_ratio_vs_deepest"] == pytest.approx(math.exp(ref[d][1] - ref[3][1]), rel=1e-4)
    assert rows["fixed 1"]["argmax_agreement"] < 1.0 and rows["fixed 1"]["ppl_ratio_vs_deepest"] != 1.0
    assert len({r["kv_bytes_per_token"] for r in rep["rows"]}) == 1   # independent of the exit
    assert rows["oracle"]["steps_spent_mean"] == 3.0 and rows["oracle"]["greedy_agreement"] is None
    for name in ("halt q>=0.3", "halt q>=0.7"):
        ctrl = rows[rows[name]["random_same_mean"]]   # a random exit (or fixed depth) of its mean depth
        assert abs(ctrl["steps_mean"] - rows[name]["steps_mean"]) < 0.6
        assert rows[name]["beats_random"] == (rows[name]["nll"] < ctrl["nll"])
    assert rep["operating_point"] in rows and set(rep["targets"]) == {
        "ppl_within_1pct_of_deepest", "mean_steps_at_most_half_max", "better_than_random_same_mean_depth"}
    assert rep["_steps"][rep["operating_point"]].numel() == 24


def test_kv_bytes_do_not_grow_with_depth():
    """The measured columns count the values real full-depth decoding wrote into the caches: the
    commit-last cache stores layers x (K, V) x D per token at every depth, the per-step cache
    N_sup times that (so the measurement can see growth), and each matches its formula."""
    rows = kv_bytes_table(tiny_cfg(), tokens=3)
    per_token = 2 * 2 * 32 * 4  # layers x (K, V) x D x fp32
    assert [r["N_sup"] for r in rows] == [1, 3, 8, 16]
    assert [r["commit_last_bytes_measured"] for r in rows] == [per_token] * 4
    assert [r["per_step_cache_bytes_measured"] for r in rows] == [r["N_sup"] * per_token for r in rows]
    assert all(r["commit_last_bytes_per_token"] == r["commit_last_bytes_measured"]
               and r["per_step_cache_bytes_per_token"] == r["per_step_cache_bytes_measured"] for r in rows)


@pytest.mark.parametrize("levels", [0, 2])
def test_decode_bench_gpt2_has_equal_flops(levels):
    """With a cache_levels model the bench times its own per-step decoder: one commit per level
    in the FLOPs (and in the equal-FLOPs GPT-2's layers) and levels x the KV bytes."""
    pytest.importorskip("transformers")
    cfg = tiny_cfg(seq_len=8, cache_levels=levels)
    rep = run_decode_bench(cfg, prefixes=[4, 8], tokens=2, warmup=1, progress=False, rounds=2)
    assert [r["prefix"] for r in rep["rows"]] == [4, 8]
    for r in rep["rows"]:
        assert r["trm_full_ms"] > 0 and r["gpt2_ms"] > 0
        assert math.isclose(r["trm_full_gflops_per_token"], r["gpt2_gflops_per_token"], rel_tol=1e-6)
    assert rep["targets"]["kv_bytes_independent_of_depth"]
    assert rep["gpt2"]["n_layer"] == (3 * 2 + max(levels, 1)) * 2
    assert rep["trm"]["decoder"] == ("per-step" if levels else "commit-last")
    assert rep["trm"]["kv_bytes_per_token"] == max(levels, 1) * 2 * 2 * 32 * 4


def test_gpt2_flops_formula_matches_the_flop_counter():
    pytest.importorskip("transformers")
    from torch.utils.flop_counter import FlopCounterMode

    from trmlm.bench.decode_speed import gpt2_equal_flops

    model, _ = gpt2_equal_flops(tiny_cfg(seq_len=16), 16)
    ids = torch.randint(0, 11, (1, 6))
    with torch.no_grad():
        past = model(input_ids=ids, use_cache=True).past_key_values
        with FlopCounterMode(display=False) as fc:
            model(input_ids=ids[:, :1], past_key_values=past, use_cache=True)
    # the formula counts attention over the 7 keys; the counter may or may not see SDPA on CPU
    no_attn = gpt2_flops_per_token(model, 0)
    assert no_attn <= fc.get_total_flops() <= gpt2_flops_per_token(model, 7) * 1.001


def test_random_control_matches_the_depth_on_the_positions_the_exit_decides():
    """Under refine_on: cached a prompt token before the last keeps one step whatever the exit, so
    a row's mean steps per token is half prompt. The control must draw the learned exit's depth
    on the positions it decides (here twice the excess over 1), not the row's mean."""
    from trmlm.bench.adaptive import add_random_controls, decided_depth

    def fixed(d, mean):
        return {"name": f"fixed {d}", "kind": "fixed", "param": float(d), "steps_mean": mean}

    half = [fixed(1, 1.0), fixed(2, 1.5), fixed(3, 2.0),
            {"name": "halt q>=0.9", "kind": "learned", "param": 0.9, "steps_mean": 1.25},
            {"name": "halt q>=0.99", "kind": "learned", "param": 0.99, "steps_mean": 1.5}]
    drawn = []
    add_random_controls(half, 3, 0, lambda ex: drawn.append(ex))
    assert [ex.name for ex in drawn] == ["random mean 1.50"] and drawn[0].make().mean_depth == pytest.approx(1.5)
    assert half[3]["random_same_mean"] == "random mean 1.50" and half[3]["decided_steps_mean"] == 1.5
    assert half[4]["random_same_mean"] == "fixed 2"            # 1.5 per token = depth 2 where decided
    # every position decided (text, refine_on all): the row's mean is the depth
    every = [fixed(1, 1.0), fixed(3, 3.0), {"name": "halt q>=0.5", "kind": "learned", "param": 0.5, "steps_mean": 1.7}]
    drawn.clear()
    add_random_controls(every, 3, 0, lambda ex: drawn.append(ex))
    assert [ex.name for ex in drawn] == ["random mean 1.70"]
    assert decided_depth([], 3)(1.7) == 1.7                     # no fixed rows: the identity
