"""Pointer chasing as text: iterate a random cyclic permutation k times, the answer written directly.

Format (`hops-k`, `nodes` letters, 8 by default: a..h):
    "cadbehgf|a3=" + answer + "\n"      a -> c -> d -> b: "cadbehgf|a3=b\n"
The prompt is a permutation f of the first `nodes` letters in one-line notation (the i-th
character is f of the i-th letter; f is one random cycle through all of them, so no walk returns
early), then "|", a start letter x, the number of hops k (one digit) and "=". The answer is
f^k(x), one letter.

Why this task: one hop is one lookup (the character at the position the current letter names),
so the work per answer token grows with k while the answer stays one token. A model that runs
its blocks once has a fixed number of lookups per token; the TRM refines the answer token's
state against the cached prompt as often as its depth allows. The permutation is random, so
prompt tokens carry no computation beyond being remembered.

Chain-of-thought variant (`hops-k-cot`, the scratchpad baseline) writes the k - 1 intermediate
letters first, then ">" and the answer:  "cadbehgf|a3=cd>b\n". The same letters are the plain
form's per-step targets (`step_targets: true` trains supervision step s toward the letter after
s hops, the last step toward the answer), so a TRM can be taught one hop per step.
"""

from __future__ import annotations

import math
import string

import numpy as np

from trmlm.lm.tasks.base import ANSWER, END, PROMPT, SCRATCH, SEPARATOR, Example, TextTask

LETTERS = string.ascii_lowercase


class Hops(TextTask):
    def __init__(self, hops: int, nodes: int = 8, cot: bool = False) -> None:
        if not 2 <= nodes <= len(LETTERS):
            raise ValueError(f"nodes must be in 2..{len(LETTERS)}")
        if not 1 <= hops <= min(9, nodes - 1):
            raise ValueError(f"hops must be in 1..{min(9, nodes - 1)} for {nodes} nodes (one digit, no wrap-around)")
        self.hops, self.nodes, self.cot = hops, nodes, cot
        self.name = f"hops-{hops}" + ("-cot" if cot else "")
        self.alphabet = LETTERS[:nodes] + "0123456789|=" + END + (">" if cot else "")
        self.max_target = (hops if cot else 0) + 1 + 1
        self.space = float(math.factorial(nodes - 1) * nodes)  # cycles x starts

    def example(self, rng: np.random.Generator) -> Example:
        m, k = self.nodes, self.hops
        order = [LETTERS[i] for i in rng.permutation(m)]          # the cycle, as a visiting order
        succ = {order[j]: order[(j + 1) % m] for j in range(m)}
        start = order[int(rng.integers(m))]
        path = [start]
        for _ in range(k):
            path.append(succ[path[-1]])
        prompt = "".join(succ[c] for c in LETTERS[:m]) + f"|{start}{k}="
        cats = [PROMPT] * (len(prompt) - 1) + [SEPARATOR]
        scratch = ""
        if self.cot:
            scratch = "".join(path[1:-1]) + ">"
            cats += [SCRATCH] * (k - 1) + [SEPARATOR]
        cats += [ANSWER, SEPARATOR]
        steps = () if self.cot else tuple(letter + END for letter in path[1:])  # after 1, 2, ... hops
        return Example(prompt, scratch + path[-1] + END, path[-1], tuple(cats), self.name, steps)

    def extract_answer(self, generated: str) -> str:
        line = generated.split(END, 1)[0]
        return line.rsplit(">", 1)[-1] if self.cot else line


def parse_prompt(prompt: str) -> tuple[dict[str, str], str, int]:
    """(successor map, start, hops) of a `hops-k` prompt: the inverse of Hops.example."""
    perm, query = prompt.split("|", 1)
    return dict(zip(LETTERS, perm)), query[0], int(query[1:-1])
