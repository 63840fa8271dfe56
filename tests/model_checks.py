"""Checks shared by the tests: every parameter learns; a checkpoint's accuracy recomputed by hand."""

import numpy as np
import torch

from trmlm.puzzles.run import get_task, load_model


def assert_every_parameter_learns(model: torch.nn.Module) -> None:
    """After backward: every parameter has a finite gradient that is not all zero. A finite loss
    alone says nothing: a head the loss never reaches, or a recursion run entirely without grad,
    still gives one."""
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient"
        assert bool(torch.isfinite(p.grad).all()), f"{name}: non-finite gradient"
        assert bool(p.grad.abs().sum() > 0), f"{name}: gradient all zero"


@torch.no_grad()
def final_predictions(model, inputs: np.ndarray, puzzle_ids: np.ndarray | None = None) -> np.ndarray:
    """argmax after N_sup supervision steps from the initial state, by hand (no trmlm.puzzle.eval)."""
    x = torch.as_tensor(np.asarray(inputs, np.int64))
    ids = None if puzzle_ids is None else torch.as_tensor(np.asarray(puzzle_ids, np.int64))
    state = model.initial_state(x.shape[0])
    for _ in range(model.cfg.max_sup_steps):
        out = model(state, x, ids, grad="none")
        state = out.state
    return out.logits.argmax(-1).numpy()


def held_out_accuracy(checkpoint, task: str, n: int) -> dict:
    """The saved weights on the first n held-out puzzles: predictions, the label-equality exact and
    cell accuracy, and the task's own solved test (Maze: a valid shortest path) per puzzle."""
    model, run, _ = load_model(checkpoint, task)
    mod = get_task(task)
    held = mod.build_data(run.data).eval
    inputs, labels = np.asarray(held["inputs"][:n], np.int64), np.asarray(held["labels"][:n], np.int64)
    pred = final_predictions(model, inputs, held["puzzle_ids"][:n] if "puzzle_ids" in held else None)
    solved = mod.score(inputs, pred, labels) if hasattr(mod, "score") else (pred == labels).all(-1)
    return {"predictions": pred, "exact_acc": float(np.mean(solved)),
            "cell_acc": float((pred == labels).mean()), "n": len(inputs)}


class DigitChars:
    """A tokenizer of the digit tasks' characters as ids 0..16 (for models with vocab_size 17)."""

    alphabet = "0123456789+=\n*c|x"

    def encode(self, text):
        return [self.alphabet.index(c) for c in text]

    def decode(self, ids):
        return "".join(self.alphabet[i] for i in ids)


def tiny_levels_lm(levels: int, n_sup: int = 3, commit_input: str = "x+y+z", refine_on: str = "all"):
    """A tiny TRM LM (vocab 17, context 12) with `levels` cache levels, in float64 (the
    decoder / parallel-pass equalities hold to rounding), eval mode, seeded."""
    import dataclasses

    from trmlm.lm.config import DataConfig, LMConfig
    from trmlm.lm.model import build_model

    torch.manual_seed(0)
    net = dataclasses.replace(LMConfig().model, vocab_size=17, seq_len=12, d_model=32, n_heads=4, n_layers=2,
                              n_latent=1, n_cycles=1, max_sup_steps=n_sup, puzzle_emb_len=0, swiglu_multiple=16)
    data = DataConfig(loss_on="all" if refine_on == "all" else "target")
    cfg = LMConfig(model=net, commit_input=commit_input, cache_levels=levels, refine_on=refine_on, data=data)
    return build_model(cfg).eval().double()


LEVELS_FLAGS = ["--set", "commit_input=x+y+z", "--set", "cross_grad=true", "--set", "train_cache=previous_step",
                "--set", "cache_levels=2", "--set", "model.max_sup_steps=3", "--set", "step_weights=linear",
                "--set", "updates=per_batch"]


def train_levels_lm(out, refine_on: str) -> str:
    """Train lm-tiny with a two-level state cache and N_sup 3 (step 3 reads the last level) into
    `out`, 6 optimizer steps: every position refined on text (refine_on "all"), or only the
    answers of 2-digit sums in full ("loss": the operands not at all; "cached": for one step).
    Returns a prompt in its alphabet."""
    from typer.testing import CliRunner

    from trmlm.cli.main import app

    extra = ["--set", "refine_on=all"] if refine_on == "all" else \
        ["--task", "add-2", "--set", f"refine_on={refine_on}", "--set", "data.loss_on=target"]
    res = CliRunner().invoke(app, ["train-lm", "--preset", "lm-tiny", "--out", str(out), "--quiet",
                                   *LEVELS_FLAGS, *extra])
    assert res.exit_code == 0, res.output
    return "ROMEO:" if refine_on == "all" else "12+34="
