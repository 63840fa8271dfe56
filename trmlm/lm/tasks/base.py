"""Reasoning-text tasks: seeded generators of (prompt, target) lines with per-character categories."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from trmlm.errors import TRMError

# Per-character categories. A token's category is that of the character it *predicts*, so the
# steps a position spends are charged to the token it produces (as `trm generate` shows them).
PROMPT, SEPARATOR, ANSWER, SCRATCH, GIVEN, BLANK = "prompt", "separator", "answer", "scratch", "given", "blank"
CATEGORIES = (PROMPT, SEPARATOR, ANSWER, SCRATCH, GIVEN, BLANK)
HARD = (ANSWER, BLANK)     # tokens that need computation: answer digits, blank Sudoku cells
EASY = (PROMPT, GIVEN)     # tokens that need none (random operands) or only a copy (given cells)
END = "\n"                 # every target ends with a newline: the generation stop


@dataclass(frozen=True)
class Example:
    """One problem as text: `prompt` (ends with the separator), `target` (what the model writes
    after it, ending with END), `answer` (the exact answer inside the target), one category per
    character of prompt + target, and the name of the task (rung) that wrote it. `step_targets`
    (tasks that have them): the target after 1, 2, ... units of work, each as long as `target`
    (`hops`: the letter after 1, 2, ... hops), the per-step targets of LMConfig.step_targets."""

    prompt: str
    target: str
    answer: str
    categories: tuple[str, ...]
    task: str
    step_targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.categories) != len(self.prompt) + len(self.target):
            raise ValueError("one category per character of prompt + target")
        if not self.target.endswith(END):
            raise ValueError("a target ends with a newline")
        if any(len(t) != len(self.target) or not t.endswith(END) for t in self.step_targets):
            raise ValueError("every step target is as long as the target and ends with a newline")

    def target_at(self, step: int, steps: int) -> str:
        """What supervision step `step` of `steps` (1-based) is trained toward: the last step the
        target, an earlier one the intermediate answer after that many units of work (the last
        intermediate answer past them), the target where the task has none."""
        if step >= steps or not self.step_targets:
            return self.target
        return self.step_targets[min(step, len(self.step_targets)) - 1]

    @property
    def text(self) -> str:
        return self.prompt + self.target


class TextTask:
    """A generator of examples, unlimited and seeded, with an exact-answer scorer.

    Subclasses set `name`, `alphabet` (every character a line may contain, END included) and
    `max_target` (the longest target, END included), and implement `example(rng)`."""

    name: str = ""
    alphabet: str = ""
    max_target: int = 0
    space: float = float("inf")   # number of distinct prompts (held-out problems stay out of
                                  # training when this is large enough)

    def example(self, rng: np.random.Generator) -> Example:
        raise NotImplementedError

    def examples(self, n: int, seed: int) -> list[Example]:
        """n examples; example i depends only on (seed, i), so a smaller n gives a prefix."""
        return [self.example(np.random.default_rng([seed, i])) for i in range(n)]

    def extract_answer(self, generated: str) -> str:
        """The answer inside a generated continuation (END and anything after it removed).
        Scratchpad formats override this to drop the scratchpad."""
        return generated.split(END, 1)[0]

    def is_correct(self, example: Example, generated: str) -> bool:
        return self.extract_answer(generated) == example.answer

    def check_fits(self, examples: list[Example], context: int) -> None:
        """A one-line TRMError unless every prompt of `examples` with the longest answer greedy
        decoding may write (max_target) fits in `context` positions."""
        need = max(len(ex.prompt) for ex in examples) + self.max_target
        if need > context:
            raise TRMError(f"task {self.name}: a prompt and its answer take up to {need} tokens, more than "
                           f"the model's context of {context}; it needs model.seq_len >= {need}")


@dataclass
class Packed:
    """Rows of packed examples: text, per-character category, and whether the character belongs
    to a target (what the model writes after a prompt) rather than to a prompt."""

    texts: list[str]
    categories: list[list[str]]
    in_target: list[list[bool]]
    step_texts: list[list[str]] = field(default_factory=list)  # [step s - 1][row], with steps


def pack_rows(task: TextTask, rng: np.random.Generator, rows: int, length: int,
              keep: Callable[[Example], bool] | None = None, steps: int = 0) -> Packed:
    """`rows` strings of exactly `length` characters, each whole examples back to back from a
    line start (the last one cut at the edge). Examples failing `keep` are drawn again. With
    `steps`, also the same rows as supervision step 1..steps is trained toward them
    (Example.target_at: the intermediate answers in place of the targets)."""
    out = Packed([], [], [], [[] for _ in range(steps)])
    for _ in range(rows):
        # the last step is trained toward the targets themselves: only steps 1..steps-1 are built
        text, cat, tgt, early = "", [], [], [""] * max(steps - 1, 0)
        while len(text) < length:
            ex = task.example(rng)
            if keep is not None and not keep(ex):
                continue
            text += ex.text
            cat += ex.categories
            tgt += [False] * len(ex.prompt) + [True] * len(ex.target)
            early = [t + ex.prompt + ex.target_at(s + 1, steps) for s, t in enumerate(early)]
        out.texts.append(text[:length])
        out.categories.append(cat[:length])
        out.in_target.append(tgt[:length])
        for s, t in enumerate([*early, text][:steps]):
            out.step_texts[s].append(t[:length])
    return out
