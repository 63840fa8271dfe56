"""Reasoning-text tasks: generators, categories, the exact-answer scorer, CoT formats, training options
(Sudoku as text: tests/test_lm_sudoku_text.py)."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from trmlm.cli.main import app
from trmlm.errors import TRMError
from trmlm.lm.config import LMConfig
from trmlm.lm.model import TransformerLM, build_model
from trmlm.lm.parallel import final_sweep_states, supervision_sweep
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.tasks import HOPS_LADDER, get_task, rungs
from trmlm.lm.tasks.base import ANSWER, PROMPT, SCRATCH, SEPARATOR
from trmlm.lm.tasks.hops import parse_prompt
from trmlm.lm.tasks.batches import TaskBatches, disjoint_rungs
from trmlm.lm.tasks.score import score_task
from trmlm.lm.tokenizer import CharTokenizer


def _operands(prompt: str) -> tuple[int, str, int]:
    a, op, b = re.fullmatch(r"(\d+)([+*])(\d+)=", prompt).groups()
    return int(a), op, int(b)


@pytest.mark.parametrize("name", ["add-1", "add-4", "add-9", "mul-1", "mul-2", "mul-4", "add-3-cot", "mul-3-cot"])
def test_arithmetic_answers_are_right_and_seeded(name):
    task = get_task(name)
    first = task.examples(50, seed=3)
    assert first == task.examples(50, seed=3)            # same seed, same problems
    assert first != task.examples(50, seed=4)
    assert task.examples(20, seed=3) == first[:20]       # a smaller n is a prefix
    for ex in first:
        a, op, b = _operands(ex.prompt)
        d = task.digits
        value, width = (a + b, d + 1) if op == "+" else (a * b, 2 * d)
        assert ex.answer == str(value).zfill(width)[::-1]  # least-significant digit first
        assert ex.target.endswith(ex.answer + "\n")
        assert task.is_correct(ex, ex.target) and task.is_correct(ex, ex.target + "junk")
        assert not task.is_correct(ex, ex.target[:-2] + "\n")
        assert len(ex.target) <= task.max_target and set(ex.text) <= set(task.alphabet)


def test_categories_of_a_hand_made_line():
    ex = get_task("add-2").example(np.random.default_rng(0))
    a, _, b = _operands(ex.prompt)
    assert ex.text == f"{a:02d}+{b:02d}=" + str(a + b).zfill(3)[::-1] + "\n"
    assert ex.categories == (PROMPT,) * 5 + (SEPARATOR,) + (ANSWER,) * 3 + (SEPARATOR,)
    cot = get_task("add-2-cot").example(np.random.default_rng(0))
    assert cot.categories == ((PROMPT,) * 5 + (SEPARATOR,) + (SEPARATOR, SCRATCH, SCRATCH, SEPARATOR)
                              + (ANSWER,) * 3 + (SEPARATOR,))


def test_cot_scratchpads_parse_and_add_up():
    """add-D-cot carries and mul-D-cot partial products / running sums are what they claim."""
    for ex in get_task("add-4-cot").examples(30, seed=1):
        a, _, b = _operands(ex.prompt)
        carries = ex.target[1:ex.target.index("|")]
        for k, c in enumerate(carries):
            low = a % 10 ** (k + 1) + b % 10 ** (k + 1)
            assert int(c) == low // 10 ** (k + 1)        # carry out of column k
    task = get_task("mul-3-cot")
    for ex in task.examples(30, seed=1):
        a, _, b = _operands(ex.prompt)
        groups = re.split(r"[+=]", ex.target.rstrip("\n"))
        values = [int(g[::-1]) for g in groups]
        partials = [values[0]] + values[1::2]
        sums = values[2::2]
        assert partials == [a * ((b // 10 ** j) % 10) * 10 ** j for j in range(3)]
        assert sums == [sum(partials[:j + 1]) for j in range(1, 3)]
        assert task.extract_answer(ex.target) == ex.answer == groups[-1]



@pytest.mark.parametrize("name", ["hops-1", "hops-3", "hops-6", "hops-7", "hops-4-cot", "hops"])
def test_hops_answers_follow_the_cycle_and_are_seeded(name):
    task = get_task(name)
    first = task.examples(40, seed=3)
    assert first == task.examples(40, seed=3) and first != task.examples(40, seed=4)
    assert task.examples(10, seed=3) == first[:10]
    for ex in first:
        succ, start, k = parse_prompt(ex.prompt)
        assert sorted(succ) == sorted(succ.values()) == list("abcdefgh")    # a permutation of a..h
        node, seen = start, []
        for _ in range(8):                                                    # ... that is one cycle
            node = succ[node]
            seen.append(node)
        assert node == start and len(set(seen)) == 8
        path = [start]
        for _ in range(k):
            path.append(succ[path[-1]])
        assert ex.answer == path[-1] and ex.task == f"hops-{k}" + ("-cot" if "cot" in name else "")
        assert task.is_correct(ex, ex.target) and not task.is_correct(ex, path[-2] + "\n")
        assert len(ex.target) <= task.max_target and set(ex.text) <= set(task.alphabet)
        if "cot" in name:
            assert ex.target == "".join(path[1:-1]) + ">" + path[-1] + "\n"
            assert task.extract_answer(ex.target) == ex.answer
    if name == "hops":
        assert {ex.task for ex in first} == set(HOPS_LADDER)


def test_hops_categories_of_a_hand_made_line():
    ex = get_task("hops-2").example(np.random.default_rng(0))
    assert len(ex.prompt) == 8 + 4 and ex.prompt[8] == "|" and ex.prompt.endswith("2=")
    assert sorted(ex.prompt[:8]) == list("abcdefgh")
    assert ex.categories == (PROMPT,) * 11 + (SEPARATOR, ANSWER, SEPARATOR)
    cot = get_task("hops-3-cot").example(np.random.default_rng(0))
    assert cot.categories == (PROMPT,) * 11 + (SEPARATOR, SCRATCH, SCRATCH, SEPARATOR, ANSWER, SEPARATOR)
    with pytest.raises(TRMError, match="hops must be in 1..7"):
        get_task("hops-8")

def test_unknown_task_is_a_one_line_error():
    with pytest.raises(TRMError, match="unknown task 'add'"):
        get_task("add")
    with pytest.raises(TRMError, match="1 to 12 digits"):
        get_task("add-13")


def test_heldout_problems_stay_out_of_training_where_possible():
    task = get_task("arith")
    held = task.examples(120, seed=9)
    disjoint = disjoint_rungs(task, held)
    assert "mul-1" not in disjoint and {"add-4", "mul-3"} <= disjoint   # mul-1 has 100 problems only
    tok = CharTokenizer(sorted(set(task.alphabet)))
    batches = TaskBatches(task, tok, 64, held, loss_on="target")
    ids, mask = batches.draw(np.random.default_rng(0), 64)
    text = "".join(tok.decode(r.tolist()) for r in ids)
    lines = [ln for row in ids for ln in tok.decode(row.tolist()).split("\n")[:-1]]
    excluded = {ex.prompt for ex in held if ex.task in disjoint}
    assert not any(ln[:ln.index("=") + 1] in excluded for ln in lines if "=" in ln)
    # the loss mask keeps exactly the positions whose next character belongs to an answer line
    row = tok.decode(ids[0].tolist())
    first = row.index("=")
    assert mask[0, :first].sum() == 0 and bool(mask[0, first]) and len(text) == 64 * 65


class _Oracle(TransformerLM):
    """A transformer stub that writes the reference answer of the problem it is fed (or a wrong
    digit when `wrong`: True, or the set of prompts to get wrong), to test the scorer end to end."""

    def __init__(self, cfg, tok, examples, wrong=False):
        super().__init__(cfg)
        self.tok, self.wrong = tok, wrong
        self.lines = {ex.prompt: ex.text for ex in examples}
        self.fed: list[list[int]] = []

    def forward(self, tokens, positions=None, prefix=None):
        B, L = tokens.shape
        if prefix is None or prefix[0][0].shape[2] == 0:
            self.fed = tokens.tolist()
        else:
            for row, t in zip(self.fed, tokens[:, 0].tolist()):
                row.append(t)
        logits, kvs = super().forward(tokens, positions, prefix)
        logits = torch.full_like(logits, -1e4)
        for b, row in enumerate(self.fed):
            text = self.tok.decode(row)
            # a line this text is a prefix of (teacher forcing), else the one whose prompt it has
            line = next((v for v in self.lines.values() if v.startswith(text)), None) or \
                next(v for k, v in self.lines.items() if text.startswith(k))
            nxt = line[len(row)] if len(row) < len(line) else "\n"
            wrong = self.wrong if isinstance(self.wrong, bool) else any(text.startswith(k) for k in self.wrong)
            if wrong and nxt.isdigit():
                nxt = str((int(nxt) + 1) % 10)
            logits[b, -1, self.tok.encode(nxt)[0]] = 0.0
        return logits, kvs


@pytest.mark.parametrize("wrong", [False, True])
def test_exact_answer_scorer_on_an_oracle(wrong):
    task = get_task("arith")
    examples = task.examples(24, seed=5)
    tok = CharTokenizer(sorted(set(task.alphabet)))
    net = dataclasses.replace(LMConfig().model, vocab_size=tok.vocab_size, seq_len=32, d_model=16,
                              n_heads=2, n_layers=1, swiglu_multiple=16)
    model = _Oracle(LMConfig(arch="transformer", model=net), tok, examples, wrong=wrong).eval()
    report = score_task(model, tok, task, examples, HaltPolicy.fixed(1), batch=4)
    assert report["exact_acc"] == (0.0 if wrong else 1.0)
    assert set(report["per_rung"]) == {ex.task for ex in examples}
    for name, r in report["per_rung"].items():
        rung = next(t for t in rungs(task) if t.name == name)
        assert r["tokens_per_answer"] == rung.max_target      # answer digits + the newline
    assert report["token_acc"]["answer"] == (0.0 if wrong else 1.0)
    assert report["token_acc"]["separator"] > 0.4
    assert report["solved"] == [not wrong] * len(examples)


def test_scorer_reports_each_problem_in_the_order_given():
    """`solved` follows the examples as given although scoring groups them by rung (interleaved
    here), and the exact interval brackets the accuracy."""
    task = get_task("arith")
    examples = task.examples(24, seed=5)
    assert len({ex.task for ex in examples[:6]}) > 2          # the rungs interleave
    missed = {ex.prompt for ex in examples[1::3]}
    tok = CharTokenizer(sorted(set(task.alphabet)))
    net = dataclasses.replace(LMConfig().model, vocab_size=tok.vocab_size, seq_len=32, d_model=16,
                              n_heads=2, n_layers=1, swiglu_multiple=16)
    model = _Oracle(LMConfig(arch="transformer", model=net), tok, examples, wrong=missed).eval()
    report = score_task(model, tok, task, examples, HaltPolicy.fixed(1), batch=4, teacher_forced=False)
    assert report["solved"] == [ex.prompt not in missed for ex in examples]
    assert report["exact_acc"] == 16 / 24
    lo, hi = report["exact_ci95"]
    assert lo < 16 / 24 < hi and (lo, hi) == (pytest.approx(0.4671, abs=1e-4), pytest.approx(0.8203, abs=1e-4))


def _tiny_trm(**over) -> tuple:
    net = dataclasses.replace(LMConfig().model, vocab_size=16, seq_len=16, d_model=32, n_heads=4,
                              n_layers=2, n_latent=1, n_cycles=1, max_sup_steps=3, swiglu_multiple=16)
    cfg = dataclasses.replace(LMConfig(model=net), **over)
    torch.manual_seed(0)
    return build_model(cfg), cfg


def test_cross_grad_keeps_values_and_moves_gradient_into_earlier_states():
    """Straight-through: the step-2 loss is the same number with and without cross_grad, but only
    with it does the gradient reach the step-1 graph (and so earlier tokens' states)."""
    model, _ = _tiny_trm()
    tokens = torch.randint(0, 16, (2, 12))
    results = {}
    for cross in (False, True):
        model.zero_grad()
        x = model.embed_tokens(tokens)
        s1 = supervision_sweep(model, model.initial_state(2, 12), x, cross_grad=cross)
        s2 = supervision_sweep(model, s1 if cross else s1.detach(), x, cross_grad=cross)
        loss = model.logits(s2.y)[:, -1].square().mean()
        loss.backward()
        results[cross] = (float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-6)
    diff = sum(float((a - b).abs().sum()) for a, b in zip(results[True][1], results[False][1]))
    assert diff > 1e-6


def test_cache_halting_stops_tokens_in_the_final_sweep_pass():
    model, _ = _tiny_trm()
    x = model.embed_tokens(torch.randint(0, 16, (2, 10)))
    with torch.no_grad():
        model.q_head.bias.fill_(10.0)                          # every token halts at once
    one = final_sweep_states(model, x, 1)
    halted = final_sweep_states(model, x, 3, HaltPolicy(max_steps=3, threshold=0.5))
    torch.testing.assert_close(halted.y, one.y)
    full = final_sweep_states(model, x, 3)
    assert not torch.allclose(full.y, one.y)


def test_task_end_to_end_and_depth_beyond_training(tmp_path):
    """train-lm --task on lm-tiny, eval-lm --task (JSON report), and test-time depth 2x N_sup."""
    runner = CliRunner()
    out = tmp_path / "add"
    res = runner.invoke(app, ["train-lm", "--preset", "lm-tiny", "--task", "add-2", "--out", str(out),
                              "--quiet", "--set", "train.train_steps=6", "--set", "data.task_eval_problems=20",
                              "--set", "updates=per_batch", "--set", "cross_grad=true",
                              "--set", "halt.target=final"])
    assert res.exit_code == 0, res.output
    assert "held-out exact answers" in res.output
    meta = json.loads((out / "meta.json").read_text())
    assert "exact_acc" in meta["metrics"]
    res = runner.invoke(app, ["eval-lm", "--checkpoint", str(out), "--problems", "12", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["task"] == "add-2" and report["problems"] == 12
    assert set(report["steps_per_category"]) >= {"prompt", "answer", "separator"}
    n_sup = report["max_steps"]
    res = runner.invoke(app, ["eval-lm", "--checkpoint", str(out), "--problems", "8", "--json",
                              "--max-steps", str(2 * n_sup), "--no-halting"])
    assert res.exit_code == 0, res.output
    deep = json.loads(res.stdout)
    assert deep["max_steps"] == 2 * n_sup and deep["steps_mean"] == 2 * n_sup
    assert "never trained" in res.stderr
    res = runner.invoke(app, ["generate", "--checkpoint", str(out), "--prompt", "12+34=",
                              "--max-steps", str(2 * n_sup), "--temperature", "0", "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    # `--stop "\n"` typed on a command line is a newline: the answer line ends there
    res = runner.invoke(app, ["generate", "--checkpoint", str(out), "--prompt", "12+34=", "--temperature", "0",
                              "--max-new-tokens", "30", "--stop", "\\n", "--json"])
    assert res.exit_code == 0, res.output
    sample = json.loads(res.stdout)["samples"][0]
    assert "\n" not in sample["text"] and (sample["stop_reason"] == "stop" or len(sample["text"]) == 30)


def test_step_weights():
    from trmlm.lm.objective import step_weights

    assert step_weights("equal", 3) == [1.0, 1.0, 1.0]
    assert step_weights("linear", 3) == pytest.approx([0.5, 1.0, 1.5])
    assert step_weights("last", 3) == [0.0, 0.0, 3.0]


@pytest.mark.parametrize("kind,updates", [("last", 1), ("linear", 2)])  # lm-tiny: N_sup = 2
def test_step_weights_in_training(tmp_path, kind, updates):
    """step_weights=last trains only the last supervision step: one optimizer step per batch."""
    from trmlm.lm.train import train_from_config
    from trmlm.lm.config import load_lm_config
    from trmlm.cli.common import configs_dir

    cfg = load_lm_config("lm-tiny", [], ["data.task=add-2", "data.task_eval_problems=20", "train.train_steps=6",
                                         f"step_weights={kind}", "halt.target=final", "train.eval_every=1000"],
                         configs_dir())
    trainer, _ = train_from_config(cfg, None)
    assert trainer.tokens_seen == 6 // updates * cfg.train.batch_size * cfg.context


def test_the_prompt_may_take_its_own_exit_in_greedy_decoding():
    from trmlm.lm.tasks.score import greedy_batch

    task = get_task("add-2")
    tok = CharTokenizer(sorted(set(task.alphabet)))
    net = dataclasses.replace(LMConfig().model, vocab_size=tok.vocab_size, seq_len=16, d_model=32, n_heads=4,
                              n_layers=2, n_latent=1, n_cycles=1, max_sup_steps=3, swiglu_multiple=16)
    torch.manual_seed(0)
    model = build_model(LMConfig(model=net))
    prompts = [ex.prompt for ex in task.examples(4, seed=3)]
    P = len(prompts[0])
    same = greedy_batch(model.eval(), tok, prompts, 3, HaltPolicy.fixed(1))
    split = greedy_batch(model, tok, prompts, 3, HaltPolicy.fixed(1), prompt_policy=HaltPolicy.fixed(3))
    assert torch.all(same.steps == 1)
    assert torch.all(split.steps[:, :P] == 3) and torch.all(split.steps[:, P:] == 1)


def test_token_cache_scores_its_refined_tokens_only():
    """commit_input "x": greedy decoding refines only the last prompt token and the generated
    ones (the other prompt tokens report 0 steps), and steps_mean averages the refined tokens,
    so a fixed depth d reads d (the prompt's zeros would pull it below d)."""
    from trmlm.lm.tasks.score import greedy_batch

    task = get_task("add-2")
    tok = CharTokenizer(sorted(set(task.alphabet)))
    net = dataclasses.replace(LMConfig().model, vocab_size=tok.vocab_size, seq_len=16, d_model=32, n_heads=4,
                              n_layers=2, n_latent=1, n_cycles=1, max_sup_steps=3, swiglu_multiple=16)
    torch.manual_seed(0)
    model = build_model(LMConfig(model=net, commit_input="x")).eval()
    examples = task.examples(6, seed=3)
    P = len(examples[0].prompt)
    g = greedy_batch(model, tok, [ex.prompt for ex in examples], 3, HaltPolicy.fixed(2))
    assert torch.all(g.steps[:, :P - 1] == 0) and torch.all(g.steps[:, P - 1:] == 2)
    report = score_task(model, tok, task, examples, HaltPolicy.fixed(2), batch=3)
    assert report["steps_mean"] == 2.0 and all(r["steps_mean"] == 2.0 for r in report["per_rung"].values())
    # teacher-forced, every position is refined; decoding spent nothing on the prompt positions
    assert report["steps_per_category"][PROMPT] == 2.0 and report["steps_easy"] == 2.0
    assert report["steps_per_category_decode"][PROMPT] == 0.0 and report["steps_easy_decode"] == 0.0
    assert report["steps_per_category_decode"][SEPARATOR] > 0 and report["steps_hard_decode"] == 2.0


def test_decoded_steps_are_charged_to_the_reference_categories():
    from trmlm.lm.tasks.base import Example
    from trmlm.lm.tasks.score import _charge

    ex = Example(prompt="1+2=", target="3\n", answer="3", task="add-1",
                 categories=(PROMPT,) * 3 + (SEPARATOR, ANSWER, SEPARATOR))
    sums, counts = {PROMPT: 0.0, SEPARATOR: 0.0, ANSWER: 0.0}, {PROMPT: 0.0, SEPARATOR: 0.0, ANSWER: 0.0}
    # position i predicts token i + 1; a greedy line longer than the reference is cut at its end
    _charge(ex, torch.tensor([0, 0, 2, 3, 1, 7, 7]), sums, counts)
    assert counts == {PROMPT: 2.0, SEPARATOR: 2.0, ANSWER: 1.0}
    assert sums == {PROMPT: 0.0, SEPARATOR: 3.0, ANSWER: 3.0}
