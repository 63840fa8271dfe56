"""Streaming generation: prompt -> prefill -> decode steps with per-token halting -> text pieces."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator, Literal

import torch

from trmlm.errors import TRMError
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.model import LanguageModel, TRMLanguageModel
from trmlm.lm.sampling import apply_repetition_penalty, sample
from trmlm.lm.stepsync import own_decoder, prefill_into
from trmlm.lm.tokenizer import Tokenizer


MAX_NEW_TOKENS = 1_000_000
MAX_DEPTH_FACTOR = 4  # test-time depth: at most 4 x the trained N_sup (beyond N_sup with a warning)


@dataclass
class GenerationConfig:
    """Decoding options (saved as generation_config.json in a checkpoint)."""

    max_new_tokens: int = 200
    temperature: float = 0.8       # 0 = greedy (argmax)
    top_k: int = 0                 # 0 = off
    top_p: float = 1.0             # 1 = off
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)  # generation ends before the first stop string
    seed: int = 0
    num_samples: int = 1
    halt_threshold: float = 0.5    # per-token halting: stop refining once sigmoid(q) >= this
    min_steps: int = 1
    max_steps: int = 0             # 0 = N_sup
    no_halting: bool = False       # always max_steps (fixed unroll)
    # per-step: stepsync.py (LMConfig.cache_levels or N_sup levels; steps past them read the last)
    cache: Literal["commit-last", "per-step"] = "commit-last"

    def validate(self, n_sup: int) -> HaltPolicy:
        checks = [(self.max_new_tokens >= 1, "--max-new-tokens must be >= 1"),
                  # the sample's text and token history are kept: bound what one call may hold
                  (self.max_new_tokens <= MAX_NEW_TOKENS, f"--max-new-tokens must be <= {MAX_NEW_TOKENS:,}"),
                  (0 <= self.temperature < float("inf"), "--temperature must be a finite number >= 0"),
                  (self.top_k >= 0, "--top-k must be >= 0"),
                  (0 < self.top_p <= 1, "--top-p must lie in (0, 1]"),
                  (self.repetition_penalty > 0, "--repetition-penalty must be > 0"),
                  (self.num_samples >= 1, "--num-samples must be >= 1"),
                  (0 <= self.halt_threshold <= 1, "--halt-threshold must lie in [0, 1]"),
                  (all(self.stop), "stop strings must not be empty")]
        for ok, message in checks:
            if not ok:
                raise TRMError(message)
        max_steps = self.max_steps or n_sup
        if not 1 <= self.min_steps <= max_steps:
            raise TRMError(f"need 1 <= --min-steps ({self.min_steps}) <= --max-steps ({max_steps})")
        if max_steps > MAX_DEPTH_FACTOR * n_sup:
            raise TRMError(f"--max-steps {max_steps} is more than {MAX_DEPTH_FACTOR} x the trained "
                           f"N_sup = {n_sup} (at most {MAX_DEPTH_FACTOR * n_sup})")
        if self.no_halting:
            return HaltPolicy.fixed(max_steps)
        return HaltPolicy(max_steps=max_steps, min_steps=self.min_steps, threshold=self.halt_threshold)

    def depth_warning(self, n_sup: int) -> str | None:
        """Test-time depth beyond training is allowed (the recursion runs any number of
        supervision steps) but untrained: say so."""
        if self.max_steps > n_sup:
            return (f"--max-steps {self.max_steps} exceeds the trained N_sup = {n_sup}: steps "
                    f"{n_sup + 1}..{self.max_steps} were never trained")
        return None


@dataclass
class Piece:
    """Newly printable text of one sample, with the recursion steps of the token behind each char."""

    sample: int
    text: str
    steps: list[int]


@dataclass
class SampleDone:
    sample: int
    text: str            # the whole continuation (stop string excluded)
    tokens: int          # tokens generated
    token_steps: list[int]
    seconds: float
    reason: str          # "length" | "stop"


def _start(model: LanguageModel, per_step: bool, ids: torch.Tensor, policy: HaltPolicy):
    """A fresh cache with the tokens ids (1, P) fed; returns (cache, DecodeOut of the last)."""
    cache = own_decoder(model, per_step)[0](model, 1, None)
    return cache, prefill_into(model, cache, ids, policy)[0]


def _held_back(text: str, stops: list[str]) -> int:
    """Characters at the end of `text` that could be the start of a stop string."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


@torch.no_grad()
def generate(model: LanguageModel, tokenizer: Tokenizer, prompt: str, gcfg: GenerationConfig
             ) -> Iterator[Piece | SampleDone]:
    """Yield text pieces as they become final (stop strings are cut, never printed), then a
    SampleDone per sample. Past the context the window slides: the cache is rebuilt from the
    last context/2 tokens (each token still sees at most `context` tokens)."""
    if not prompt:
        raise TRMError("empty prompt: give at least one character with --prompt")
    policy = gcfg.validate(model.cfg.model.max_sup_steps)
    ids = tokenizer.encode(prompt)
    context = model.cfg.context
    if len(ids) >= context:
        raise TRMError(f"prompt of {len(ids)} tokens does not fit the model's context of "
                       f"{context} tokens (at most {context - 1})")
    per_step = gcfg.cache == "per-step"
    if per_step and not isinstance(model, TRMLanguageModel):
        raise TRMError("--cache per-step needs a TRM checkpoint (the baselines have no recursion)")
    step_fn = own_decoder(model, per_step)[1]
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(gcfg.seed)
    prompt_ids = torch.tensor([ids], device=device)
    for j in range(gcfg.num_samples):
        t0 = time.perf_counter()
        cache, out = _start(model, per_step, prompt_ids, policy)
        history = prompt_ids
        new_ids: list[int] = []
        token_steps: list[int] = []
        char_steps: list[int] = []
        text, emitted, reason = "", 0, "length"
        while True:
            logits = apply_repetition_penalty(out.logits, history, gcfg.repetition_penalty)
            token = sample(logits, gcfg.temperature, gcfg.top_k, gcfg.top_p, generator)  # (1,)
            new_ids.append(int(token))
            history = torch.cat([history, token[:, None]], dim=1)
            full = tokenizer.decode(new_ids)
            full_ok = not full.endswith("\ufffd")  # an incomplete UTF-8 sequence (byte BPE)
            # The steps of a generated token = the supervision steps spent predicting it (the
            # refinement of the position that was fed before it).
            steps_now = int(out.steps[0])
            if full_ok and len(full) > len(text):
                char_steps.extend([steps_now] * (len(full) - len(text)))
                text = full
            token_steps.append(steps_now)
            cut = min((i for i in (text.find(s) for s in gcfg.stop) if i >= 0), default=-1)
            if cut >= 0:
                text, reason = text[:cut], "stop"
            safe = len(text) if reason == "stop" else len(text) - _held_back(text, gcfg.stop)
            if safe > emitted:
                yield Piece(j, text[emitted:safe], char_steps[emitted:safe])
                emitted = safe
            if reason == "stop" or len(new_ids) >= gcfg.max_new_tokens:
                break
            if cache.free < 1:
                # Context full: slide the window, re-prefilling the last half of the context.
                cache, out = _start(model, per_step, history[:, -(context // 2):], policy)
            else:
                out = step_fn(model, cache, token, policy)
        if reason != "stop" and emitted < len(text):
            yield Piece(j, text[emitted:], char_steps[emitted:len(text)])
        yield SampleDone(j, text, len(new_ids), token_steps, time.perf_counter() - t0, reason)
