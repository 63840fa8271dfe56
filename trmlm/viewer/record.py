"""Per-step data of a generation without touching the decode loop: a recording exit rule.

`trm generate` runs `trmlm.lm.generate.generate` unchanged; the recorder only wraps what that
function is handed. The exit-rule protocol (trmlm/lm/halting.py: begin / halt(step, y, model) /
finish) shows a wrapper policy every supervision step's answer state y, from which it reads the
model's own heads: the top-5 next-token predictions (model.logits) and the halt probability
(model.halt_logit). A thin tokenizer wrapper sees the generated ids (generate decodes the whole
continuation after every token), so every record can be tied to the token it predicted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from trmlm.errors import TRMError
from trmlm.lm.generate import GenerationConfig, SampleDone


@dataclass
class StepRecord:
    """One supervision step of one token (batch row 0, last position)."""

    top_ids: list[int]
    top_probs: list[float]
    halt_prob: float


@dataclass
class TokenRecord:
    """Every supervision step of one refined token (begin .. finish)."""

    steps: list[StepRecord] = field(default_factory=list)
    used: int = 0          # steps reported by finish (what generate counts for the token)


class RecordingPolicy:
    """Wraps an exit rule: delegates every decision to it, records each step on the way."""

    def __init__(self, inner: Any, records: list[TokenRecord], top: int = 5) -> None:
        self.inner, self.records, self.top = inner, records, top

    def __getattr__(self, name: str) -> Any:  # max_steps, min_steps, threshold, ...
        return getattr(self.inner, name)

    def begin(self, batch: int, device: torch.device, length: int = 1) -> None:
        self.records.append(TokenRecord())
        self.inner.begin(batch, device, length)

    def halt(self, step: int, y: Tensor, model) -> Tensor | None:
        """Record step `step` of y (B, L, D) (batch row 0, last position: L = 1 when decoding),
        then let the wrapped rule decide."""
        with torch.no_grad():
            last = y[:1, -1:]                                        # (1, 1, D)
            probs = model.logits(last)[0, 0].float().softmax(-1)    # (V,)
            top = probs.topk(min(self.top, probs.shape[-1]))
            halt_prob = float(torch.sigmoid(model.halt_logit(last).reshape(-1)[0]))
        self.records[-1].steps.append(StepRecord([int(i) for i in top.indices],
                                                 [float(p) for p in top.values], halt_prob))
        return self.inner.halt(step, y, model)

    def finish(self, y: Tensor, steps: Tensor):
        y, steps = self.inner.finish(y, steps)
        self.records[-1].used = int(steps[0, -1])                   # steps (B, L)
        return y, steps


class RecordingTokenizer:
    """Delegates to a tokenizer; remembers the ids of the latest decode call of every sample."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.samples: list[list[int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)

    def decode(self, ids: list[int]) -> str:
        ids = list(ids)
        if len(ids) == 1 or not self.samples:   # generate decodes the growing continuation
            self.samples.append(ids)
        else:
            self.samples[-1] = ids
        return self.inner.decode(ids)


class _RecordingConfig(GenerationConfig):
    """The caller's GenerationConfig whose halting policy records (generate calls validate once)."""

    recorder: TextRecorder

    def validate(self, n_sup: int):
        return RecordingPolicy(super().validate(n_sup), self.recorder.records, self.recorder.top)


class TextRecorder:
    """Hand `tokenizer` and `gcfg` to generate(); afterwards `page_data` has every token's steps."""

    def __init__(self, tokenizer: Any, gcfg: GenerationConfig, top: int = 5) -> None:
        self.records: list[TokenRecord] = []
        self.top = top
        self.tokenizer = RecordingTokenizer(tokenizer)
        cfg = _RecordingConfig(**{f.name: getattr(gcfg, f.name) for f in dataclasses.fields(gcfg)})
        cfg.recorder = self
        self.gcfg: GenerationConfig = cfg

    def _predicting_records(self, prompt_len: int, n_tokens: int, context: int, start: int) -> tuple[list[int], int]:
        """Indices of the records whose refinement predicted each generated token of one sample
        (generate's schedule: prefill the prompt; then one fed token per step, or, with the
        context full, a re-prefill of the last context/2 tokens); and the next sample's start."""
        nxt = start + prompt_len
        chosen, pos = [nxt - 1], prompt_len
        for _ in range(1, n_tokens):
            if pos >= context:
                nxt += context // 2
                pos = context // 2
            else:
                nxt += 1
                pos += 1
            chosen.append(nxt - 1)
        return chosen, nxt

    def page_data(self, prompt: str, samples: list[SampleDone], context: int, max_steps: int,
                  threshold: float | None, title: str = "") -> dict[str, Any]:
        """The viewer's "text" document: per sample, every generated token with its steps, its
        per-step top-5 predictions and halt probabilities."""
        tok = self.tokenizer.inner
        prompt_len = len(tok.encode(prompt))
        if len(self.tokenizer.samples) != len(samples):
            raise TRMError("the recorded generation does not match its samples")
        out, start = [], 0
        for sample, ids in zip(samples, self.tokenizer.samples):
            chosen, start = self._predicting_records(prompt_len, len(ids), context, start)
            if chosen and chosen[-1] >= len(self.records):
                raise TRMError("the recorded generation has fewer steps than its tokens")
            tokens, shown = [], 0
            for j, (token_id, r) in enumerate(zip(ids, chosen)):
                rec = self.records[r]
                if rec.used != sample.token_steps[j]:
                    raise TRMError("the recorded steps do not line up with the generated tokens")
                text_upto = tok.decode(ids[:j + 1])
                piece = tok.decode([token_id])
                tokens.append({
                    "id": token_id, "text": piece, "steps": rec.used,
                    "cut": shown >= len(sample.text),   # at or after a stop string: not printed
                    "per_step": [{"halt_prob": round(s.halt_prob, 5),
                                  "top": [[tok.decode([i]), round(p, 5), i] for i, p in zip(s.top_ids, s.top_probs)]}
                                 for s in rec.steps],
                })
                shown = len(text_upto)
            out.append({"text": sample.text, "stop_reason": sample.reason, "tokens": tokens,
                        "mean_steps": sum(sample.token_steps) / max(len(sample.token_steps), 1)})
        if start != len(self.records):
            raise TRMError("the recorded generation has more steps than its tokens")
        return {"kind": "text", "title": title or "trm generate", "prompt": prompt,
                "max_steps": max_steps, "threshold": threshold, "samples": out}
