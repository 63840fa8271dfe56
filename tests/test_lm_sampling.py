"""Sampling and generation: greedy == argmax, top-k/top-p masks, seeds, stop strings, tokenizers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from trmlm.errors import TRMError
from trmlm.lm.config import LMConfig
from trmlm.lm.decode import reference_logits
from trmlm.lm.generate import GenerationConfig, Piece, SampleDone, generate
from trmlm.lm.halting import HaltPolicy
from trmlm.lm.model import build_model
from trmlm.lm.sampling import apply_repetition_penalty, sample, top_k_mask, top_p_mask
from trmlm.lm.tokenizer import CharTokenizer, load_tokenizer, save_tokenizer, train_tokenizer

torch.set_num_threads(1)

TEXT = "the quick brown fox jumps over the lazy dog.\nROMEO: hello there!\n"


def test_temperature_zero_is_argmax():
    logits = torch.randn(5, 30, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample(logits, temperature=0.0), logits.argmax(-1))


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5]])
    masked = top_k_mask(logits, 2)
    assert torch.isfinite(masked).tolist() == [[False, True, False, True, False]]
    g = torch.Generator().manual_seed(0)
    draws = {int(sample(logits, 1.0, top_k=2, generator=g)) for _ in range(200)}
    assert draws == {1, 3}


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert torch.isfinite(top_p_mask(logits, 0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_mask(logits, 0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(top_p_mask(logits, 0.81)).tolist() == [[True, True, True, False]]
    g = torch.Generator().manual_seed(0)
    draws = {int(sample(logits, 1.0, top_p=0.7, generator=g)) for _ in range(200)}
    assert draws == {0, 1}


def test_repetition_penalty_lowers_seen_tokens():
    logits = torch.tensor([[2.0, -1.0, 1.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 1.0]]


def tiny_model():
    torch.manual_seed(0)
    tok = CharTokenizer.train(TEXT)
    net = dataclasses.replace(LMConfig().model, vocab_size=tok.vocab_size, seq_len=64, d_model=32,
                              n_heads=4, n_layers=2, n_latent=1, n_cycles=1, max_sup_steps=2,
                              swiglu_multiple=16)
    return build_model(LMConfig(model=net)).eval(), tok


def run(model, tok, prompt, **kw) -> tuple[list[Piece], list[SampleDone]]:
    events = list(generate(model, tok, prompt, GenerationConfig(**kw)))
    return ([e for e in events if isinstance(e, Piece)], [e for e in events if isinstance(e, SampleDone)])


def test_same_seed_same_text_and_greedy_is_deterministic():
    model, tok = tiny_model()
    a = run(model, tok, "the", max_new_tokens=20, temperature=1.0, seed=3, num_samples=2)[1]
    b = run(model, tok, "the", max_new_tokens=20, temperature=1.0, seed=3, num_samples=2)[1]
    c = run(model, tok, "the", max_new_tokens=20, temperature=1.0, seed=4, num_samples=2)[1]
    assert [d.text for d in a] == [d.text for d in b]
    assert [d.text for d in a] != [d.text for d in c]
    assert len(a) == 2 and all(d.tokens == 20 for d in a)
    # greedy (temperature 0): the seed is irrelevant, every sample is the same text, and it is
    # the argmax continuation of the slow no-cache reference, token by token
    g3 = run(model, tok, "the", max_new_tokens=20, temperature=0.0, seed=3, num_samples=2)[1]
    g4 = run(model, tok, "the", max_new_tokens=20, temperature=0.0, seed=4, num_samples=1)[1]
    policy = HaltPolicy(max_steps=2, min_steps=1, threshold=0.5)  # generate's defaults at N_sup 2
    ids = tok.encode("the")
    for _ in range(20):
        logits, _ = reference_logits(model, torch.tensor([ids]), policy)
        ids.append(int(logits[0, -1].argmax()))
    greedy = tok.decode(ids[3:])
    assert [d.text for d in g3 + g4] == [greedy] * 3
    assert greedy not in [d.text for d in a + c]  # sampling at temperature 1 is not greedy here


def test_stop_string_cuts_output_and_is_never_printed():
    model, tok = tiny_model()
    _, done = run(model, tok, "the", max_new_tokens=30, temperature=1.0, seed=1)
    full = done[0].text
    stop = full[10:13]  # a string the unconstrained sample contains
    first = full.find(stop)
    pieces, done = run(model, tok, "the", max_new_tokens=30, temperature=1.0, seed=1,
                       stop=[stop, "@@never@@"])
    streamed = "".join(p.text for p in pieces)
    assert done[0].reason == "stop"
    assert streamed == done[0].text == full[:first]
    assert stop not in streamed
    assert all(len(p.steps) == len(p.text) for p in pieces)


def test_streamed_pieces_join_to_text_and_carry_steps():
    model, tok = tiny_model()
    pieces, done = run(model, tok, "ROMEO:", max_new_tokens=15, temperature=0.0)
    assert "".join(p.text for p in pieces) == done[0].text
    assert len(done[0].token_steps) == 15
    assert all(1 <= s <= 2 for s in done[0].token_steps)


def test_generation_slides_past_the_context():
    model, tok = tiny_model()
    pieces, done = run(model, tok, "the quick", max_new_tokens=150, temperature=1.0)
    assert done[0].reason == "length" and done[0].tokens == 150
    assert len("".join(p.text for p in pieces)) == 150


@pytest.mark.parametrize("prompt,kw,message", [
    ("", {}, "empty prompt"),
    ("x" * 64, {}, "does not fit"),
    ("héllo", {}, "not in the tokenizer"),
    ("the", {"top_p": 0.0}, "top-p"),
    ("the", {"min_steps": 3}, "min-steps"),
])
def test_bad_generation_input_is_a_one_line_error(prompt, kw, message):
    model, tok = tiny_model()
    with pytest.raises(TRMError, match=message) as info:
        run(model, tok, prompt, **kw)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["char", "bpe", "sentencepiece"])
def test_tokenizers_round_trip_and_reload(kind, tmp_path):
    text = TEXT * 20
    tok = train_tokenizer(kind, text, vocab_size=320)  # sentencepiece: 256 byte pieces + alphabet
    assert tok.decode(tok.encode(TEXT)) == TEXT
    save_tokenizer(tok, tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.kind == kind and again.encode(TEXT) == tok.encode(TEXT)


def test_corrupt_tokenizer_is_a_trm_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TRMError, match="corrupt tokenizer"):
        load_tokenizer(tmp_path)
    with pytest.raises(TRMError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")
