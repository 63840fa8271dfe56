"""Arithmetic as text: multi-digit addition and multiplication, answers least-significant digit first.

Format (every number zero-padded to a fixed width, so a rung's lines all have one length):
    add-d   "0473+1980=" + reversed(a + b, d + 1 digits) + "\n"      e.g. "0473+1980=35420\n"
    mul-d   "47*19=" + reversed(a * b, 2d digits) + "\n"             e.g. "47*19=3980\n"
The answer is written digit by digit with no scratchpad: each answer digit is produced by one
token's refinement. Reversed (least-significant first) is the usual choice: every digit then
depends only on the operands and on digits already written.

Chain-of-thought variants (`-cot`, the scratchpad baseline) write the intermediate results first:
    add-d-cot  "c" + carries out of each column, LSB first + "|" + the answer
               "0473+1980=c1100|35420\n"  (3+0=3, 7+8=15 carry 1, 4+9+1=14 carry 1, 0+1+1=2)
    mul-d-cot  the partial products a * b_j * 10^j and their running sums, each reversed to 2d
               digits: "P0+P1=S1+P2=S2...", the last running sum being the answer
               "47*19=3240+0740=3980\n"  (47*9=423, 47*10=470, 423+470=893 = 47*19)

Intermediate answers (the plain forms' per-step targets, `step_targets: true`): addition's first
is the column sums without their carries ("0473+1980=35310\n": 3+0, 7+8=15 -> 5, 4+9=13 -> 3, 0+1),
then the answer; d-digit multiplication's are the running sums a * (b mod 10^j) for j = 1..d-1
("47*19=3240\n": 47*9), then the answer. So a TRM can be taught the carry in its second step
and one multiplier digit per step, the work the scratchpad writes out.
"""

from __future__ import annotations

import numpy as np

from trmlm.lm.tasks.base import ANSWER, END, PROMPT, SCRATCH, SEPARATOR, Example, TextTask

DIGITS = "0123456789"


def rev(value: int, width: int) -> str:
    """`value` zero-padded to `width` digits, least-significant digit first."""
    return str(value).zfill(width)[::-1]


def _operands(rng: np.random.Generator, digits: int) -> tuple[int, int]:
    a, b = rng.integers(0, 10 ** digits, size=2)
    return int(a), int(b)


def _example(task: str, prompt: str, scratch: str, answer: str, sep_chars: str = "",
             steps: tuple[str, ...] | None = None) -> Example:
    """prompt (its last char is the separator) + scratch + answer + END, with categories.
    Characters of the scratchpad listed in `sep_chars` count as separators. `steps` (plain
    forms): the intermediate answers, each as long as `answer`, which is appended as the last."""
    cats = [PROMPT] * (len(prompt) - 1) + [SEPARATOR]
    cats += [SEPARATOR if c in sep_chars else SCRATCH for c in scratch]
    cats += [ANSWER] * len(answer) + [SEPARATOR]
    step_targets = () if steps is None else tuple(t + END for t in (*steps, answer))
    return Example(prompt, scratch + answer + END, answer, tuple(cats), task, step_targets)


class Addition(TextTask):
    def __init__(self, digits: int, cot: bool = False) -> None:
        if digits < 1:
            raise ValueError("digits must be >= 1")
        self.digits, self.cot = digits, cot
        self.name = f"add-{digits}" + ("-cot" if cot else "")
        self.alphabet = DIGITS + "+=" + END + ("c|" if cot else "")
        self.max_target = (digits + 1) + 1 + ((digits + 2) if cot else 0)
        self.space = float(10 ** (2 * digits))

    def example(self, rng: np.random.Generator) -> Example:
        d = self.digits
        a, b = _operands(rng, d)
        prompt = f"{a:0{d}d}+{b:0{d}d}="
        answer = rev(a + b, d + 1)
        columns = [(a // 10 ** k) % 10 + (b // 10 ** k) % 10 for k in range(d)]  # digit sums, LSB first
        if not self.cot:
            no_carry = sum(c % 10 * 10 ** k for k, c in enumerate(columns))
            return _example(self.name, prompt, "", answer, steps=(rev(no_carry, d + 1),))
        carries, carry = [], 0
        for c in columns:
            carry = (c + carry) // 10
            carries.append(str(carry))
        return _example(self.name, prompt, "c" + "".join(carries) + "|", answer, sep_chars="c|")

    def extract_answer(self, generated: str) -> str:
        line = generated.split(END, 1)[0]
        return line.rsplit("|", 1)[-1] if self.cot else line


class Multiplication(TextTask):
    def __init__(self, digits: int, cot: bool = False) -> None:
        if digits < 1:
            raise ValueError("digits must be >= 1")
        self.digits, self.cot = digits, cot
        self.name = f"mul-{digits}" + ("-cot" if cot else "")
        self.alphabet = DIGITS + "*=" + END + ("+" if cot else "")
        width = 2 * digits
        groups = 2 * digits - 1 if cot else 1  # P0, then "+P_j=" and S_j for j = 1..d-1
        self.max_target = groups * width + (groups - 1) + 1
        self.space = float(10 ** (2 * digits))

    def example(self, rng: np.random.Generator) -> Example:
        d, width = self.digits, 2 * self.digits
        a, b = _operands(rng, d)
        prompt = f"{a:0{d}d}*{b:0{d}d}="
        answer = rev(a * b, width)
        if not self.cot:
            running = tuple(rev(a * (b % 10 ** j), width) for j in range(1, d))
            return _example(self.name, prompt, "", answer, steps=running)
        if d == 1:
            return _example(self.name, prompt, "", answer)
        parts, running = [], 0
        for j in range(d):
            partial = a * ((b // 10 ** j) % 10) * 10 ** j
            running += partial
            if j == 0:
                parts.append(rev(partial, width))
            else:
                parts.append("+" + rev(partial, width) + "=")
                if j < d - 1:
                    parts.append(rev(running, width))
        return _example(self.name, prompt, "".join(parts), answer, sep_chars="+=")

    def extract_answer(self, generated: str) -> str:
        line = generated.split(END, 1)[0]
        return line.rsplit("=", 1)[-1] if self.cot else line


class Mixture(TextTask):
    """Each example from one of `tasks`, drawn uniformly: one model meets every rung."""

    def __init__(self, name: str, tasks: list[TextTask]) -> None:
        self.name, self.tasks = name, list(tasks)
        self.alphabet = "".join(sorted(set("".join(t.alphabet for t in tasks))))
        self.max_target = max(t.max_target for t in tasks)

    def example(self, rng: np.random.Generator) -> Example:
        return self.tasks[int(rng.integers(len(self.tasks)))].example(rng)

    def member(self, example: Example) -> TextTask:
        """The member task (rung) that wrote `example`."""
        for t in self.tasks:
            if t.name == example.task:
                return t
        raise ValueError(f"no member task {example.task!r} in {self.name}")

    def extract_answer(self, generated: str) -> str:
        raise TypeError("score a mixture's examples with the member task (Mixture.member)")

    def is_correct(self, example: Example, generated: str) -> bool:
        return self.member(example).is_correct(example, generated)
