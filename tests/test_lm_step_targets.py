"""step_targets: supervision step s trained toward a task's intermediate answer (hops: the letter
after s hops; arith: the sum without carries, the running products), the last step toward the
answer (docs/language-model.md, "Intermediate answers")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trmlm.cli.common import configs_dir
from trmlm.errors import TRMError
from trmlm.lm.config import load_lm_config
from trmlm.lm.tasks import END, get_task, pack_rows
from trmlm.lm.tasks.hops import parse_prompt
from trmlm.lm.train import build_trainer


def test_hops_intermediate_answers_follow_the_cycle():
    for seed in range(20):
        ex = get_task("hops").example(np.random.default_rng(seed))
        succ, letter, k = parse_prompt(ex.prompt)
        want = []
        for _ in range(k):
            letter = succ[letter]
            want.append(letter + END)
        assert ex.step_targets == tuple(want) and ex.step_targets[-1] == ex.target
    assert get_task("hops-3-cot").example(np.random.default_rng(0)).step_targets == ()


def test_the_target_of_each_step():
    ex = get_task("hops-3").example(np.random.default_rng(4))
    a, b, c = ex.step_targets
    assert [ex.target_at(s, 6) for s in range(1, 7)] == [a, b, c, c, c, ex.target]
    assert [ex.target_at(s, 2) for s in (1, 2)] == [a, ex.target]  # the last step: the answer, not hop 2
    one_digit = get_task("mul-1").example(np.random.default_rng(0))
    assert one_digit.step_targets == (one_digit.target,)  # one unit of work: the answer at every step
    assert [one_digit.target_at(s, 3) for s in (1, 2, 3)] == [one_digit.target] * 3
    cot = get_task("add-2-cot").example(np.random.default_rng(0))
    assert cot.step_targets == () and cot.target_at(1, 3) == cot.target  # none: the target at every step


def _operands(prompt: str, op: str) -> tuple[int, int, int]:
    a, b = prompt[:-1].split(op)
    return int(a), int(b), len(a)


def test_arith_intermediate_answers_are_the_sum_without_carries_then_the_running_products():
    """add-d: column sums mod 10, then the sum; mul-d: a * (b mod 10^j) for j < d, then the product,
    all reversed to the answer's width (checked digit by digit against the operands)."""
    for seed in range(40):
        ex = get_task("add-6").example(np.random.default_rng(seed))
        a, b, d = _operands(ex.prompt, "+")
        no_carry = "".join(str((a // 10 ** k % 10 + b // 10 ** k % 10) % 10) for k in range(d)) + "0"
        assert ex.step_targets == (no_carry + END, ex.target) and int(ex.answer[::-1]) == a + b
        ex = get_task("mul-3").example(np.random.default_rng(seed))
        a, b, d = _operands(ex.prompt, "*")
        running = [str(a * (b % 10 ** j)).zfill(2 * d)[::-1] + END for j in (1, 2)]
        assert ex.step_targets == (*running, ex.target) and int(ex.answer[::-1]) == a * b
        assert [ex.target_at(s, 4) for s in (1, 2, 3, 4)] == [*running, ex.target, ex.target]
    ex = get_task("mul-3").example(np.random.default_rng(7))
    assert len({*ex.step_targets}) >= 2  # the running sums differ from the product on most draws
    for rung in ("add-2-cot", "mul-3-cot", "mul-1-cot"):
        assert get_task(rung).example(np.random.default_rng(0)).step_targets == ()


def test_packed_step_rows_differ_from_the_rows_only_at_the_answers():
    task, steps = get_task("hops"), 4
    packed = pack_rows(task, np.random.default_rng(1), 6, 65, steps=steps)
    assert packed.step_texts[-1] == packed.texts  # the last step is trained toward the real rows
    changed = 0
    for s in range(steps - 1):
        for row, (real, stepped) in enumerate(zip(packed.texts, packed.step_texts[s])):
            assert len(stepped) == len(real)
            for i, (u, v) in enumerate(zip(real, stepped)):
                if u != v:
                    assert packed.categories[row][i] == "answer"
                    changed += 1
    assert changed > 0
    # the same rng gives the same rows with or without the step rows
    assert pack_rows(task, np.random.default_rng(1), 6, 65).texts == packed.texts


def _cfg(*extra: str):
    return load_lm_config("lm-tiny", [], ["data.task=hops", "data.task_eval_problems=20", "commit_input=x",
                                          "data.loss_on=target", "model.max_sup_steps=3", "step_weights=equal",
                                          "train.eval_every=1000", "train.warmup_steps=0", *extra], configs_dir())


@pytest.mark.parametrize("refine_on,updates", [("all", "per_step"), ("loss", "per_batch")])
def test_each_step_is_scored_against_its_own_targets(monkeypatch, refine_on, updates):
    """The cross-entropy of step s reads step s's windows; the halting head's reads the answers."""
    import trmlm.lm.trm_batch as trm_batch

    trainer = build_trainer(_cfg("step_targets=true", f"refine_on={refine_on}", f"updates={updates}"))
    batch, mask, step_batch = trainer._draw(4)
    assert step_batch is not None and step_batch.shape == (3, *batch.shape)
    assert torch.equal(step_batch[-1], batch) and not torch.equal(step_batch[0], batch)
    seen: list[torch.Tensor] = []
    real = trm_batch.token_cross_entropy
    monkeypatch.setattr(trm_batch, "token_cross_entropy", lambda logits, t, kind: seen.append(t) or real(logits, t, kind))
    trainer.train_batch(batch, mask, step_batch)
    assert len(seen) == 6  # per step: the trained loss, then the halting head's against the answers
    if refine_on == "all":
        want = [step_batch[s, :, 1:] for s in range(3)]
        final = batch[:, 1:]
    else:
        from trmlm.lm.parallel import loss_positions

        index, _ = loss_positions(mask)
        want = [step_batch[s, :, 1:].gather(1, index) for s in range(3)]
        final = batch[:, 1:].gather(1, index)
    for s in range(3):
        assert torch.equal(seen[2 * s], want[s]) and torch.equal(seen[2 * s + 1], final)


def test_without_step_targets_no_step_windows_are_drawn():
    trainer = build_trainer(_cfg())
    assert trainer._draw(2)[2] is None


def test_a_task_without_intermediate_answers_is_refused():
    with pytest.raises(TRMError, match="task add-2-cot writes no intermediate answers"):
        build_trainer(_cfg("step_targets=true", "data.task=add-2-cot"))


def test_a_text_run_is_refused_before_its_text_is_read():
    cfg = load_lm_config("lm-tiny", [], ["step_targets=true", "data.files=[\"/nonexistent.txt\"]"], configs_dir())
    with pytest.raises(TRMError, match="step_targets needs a --task"):
        build_trainer(cfg)


def test_transformers_ignore_step_targets_like_every_trm_only_key():
    """A preset with step_targets also trains its transformer baselines: they have no steps."""
    trainer = build_trainer(_cfg("step_targets=true", "arch=transformer"))
    batch, mask, step_batch = trainer._draw(2)
    assert step_batch is None and len(trainer.train_batch(batch, mask, step_batch)) == 1


def test_step_targets_need_trained_early_steps():
    with pytest.raises(TRMError, match="step_targets needs updates per_step or per_batch and step_weights"):
        _cfg("step_targets=true", "step_weights=last")


def test_train_lm_with_step_targets_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from trmlm.cli.main import app

    out = tmp_path / "hops"
    res = CliRunner().invoke(app, ["train-lm", "--preset", "lm-tiny", "--task", "hops", "--out", str(out), "--quiet",
                                   "--set", "train.train_steps=4", "--set", "data.task_eval_problems=12",
                                   "--set", "step_targets=true", "--set", "commit_input=x",
                                   "--set", "data.loss_on=target", "--set", "refine_on=loss",
                                   "--set", "updates=per_batch"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["train-lm", "--preset", "lm-tiny", "--task", "add-2-cot", "--out", str(tmp_path / "x"),
                                   "--quiet", "--set", "step_targets=true"])
    assert res.exit_code == 2 and "writes no intermediate answers" in res.output
