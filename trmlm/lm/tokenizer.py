"""Tokenizers: characters (the bits-per-character default), HF byte-level BPE, sentencepiece; save/load.

The char and BPE tokenizers are saved as Hugging Face `tokenizers` files (tokenizer.json), so
`tokenizers.Tokenizer.from_file` reads every tokenizer.json this project writes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator, Protocol

from trmlm.errors import TRMError

JSON_FILE = "tokenizer.json"    # char and BPE tokenizers
SP_FILE = "tokenizer.model"     # sentencepiece


class Tokenizer(Protocol):
    kind: str
    file_name: str

    @property
    def vocab_size(self) -> int: ...
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def to_bytes(self) -> bytes: ...


class CharTokenizer:
    """One id per character of a fixed alphabet; characters outside it are a TRMError."""

    kind = "char"
    file_name = JSON_FILE

    def __init__(self, chars: list[str]) -> None:
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[c] for c in text]
        except KeyError as exc:
            c = exc.args[0]
            raise TRMError(f"character {c!r} (U+{ord(c):04X}) is not in the tokenizer's "
                           f"{len(self.chars)}-character alphabet") from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_bytes(self) -> bytes:
        """A Hugging Face `tokenizers` file: a BPE model whose vocabulary is the alphabet and which
        has no merges (so every character is one token) and a Fuse decoder (ids -> the characters,
        joined without spaces). Encoding stays here: it refuses characters outside the alphabet,
        where the HF model would drop them silently."""
        from tokenizers import Tokenizer as HFTokenizer, decoders, models

        tok = HFTokenizer(models.BPE(vocab=dict(self.index), merges=[], unk_token=None, fuse_unk=False))
        tok.decoder = decoders.Fuse()
        return tok.to_str().encode()

    @staticmethod
    def chars_of_hf_json(obj: dict) -> list[str] | None:
        """The alphabet of a tokenizer.json written by to_bytes (BPE, no merges, one character per
        token, Fuse decoder); None for any other tokenizer file."""
        model, decoder = obj.get("model"), obj.get("decoder")
        if not (isinstance(model, dict) and model.get("type") == "BPE" and model.get("merges") == []
                and isinstance(decoder, dict) and decoder.get("type") == "Fuse"):
            return None
        vocab = model.get("vocab")
        if not isinstance(vocab, dict) or not all(isinstance(c, str) and len(c) == 1 for c in vocab):
            return None
        ids = sorted(vocab.values())
        if ids != list(range(len(ids))):
            return None
        return sorted(vocab, key=vocab.__getitem__)


class BPETokenizer:
    """HF `tokenizers` byte-level BPE: every string is encodable (bytes are the base alphabet)."""

    kind = "bpe"
    file_name = JSON_FILE

    def __init__(self, tok) -> None:
        self.tok = tok

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(_chunks(text), trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)

    def to_bytes(self) -> bytes:
        return self.tok.to_str().encode()


class SentencePieceTokenizer:
    """sentencepiece with identity normalisation and byte fallback, so decode(encode(s)) == s."""

    kind = "sentencepiece"
    file_name = SP_FILE

    def __init__(self, proto: bytes) -> None:
        import sentencepiece as spm

        self.proto = proto
        self.sp = spm.SentencePieceProcessor()
        self.sp.LoadFromSerializedProto(proto)

    @classmethod
    def train(cls, text: str, vocab_size: int, model_type: str = "unigram") -> SentencePieceTokenizer:
        import sentencepiece as spm

        model = io.BytesIO()
        # sentencepiece's defaults collapse whitespace and drop newlines; these settings round-trip.
        try:
            _train_sp(spm, text, model, vocab_size, model_type)
        except RuntimeError as exc:  # e.g. vocab smaller than the 256 byte pieces + alphabet
            raise TRMError(f"sentencepiece training failed: {str(exc).splitlines()[0][-160:]}") from None
        return cls(model.getvalue())

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def to_bytes(self) -> bytes:
        return self.proto


def _train_sp(spm, text: str, writer, vocab_size: int, model_type: str) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines(keepends=True)), model_writer=writer,
        vocab_size=vocab_size, model_type=model_type, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=False, byte_fallback=True,
        hard_vocab_limit=False, character_coverage=1.0, minloglevel=2,
        allow_whitespace_only_pieces=True, split_by_whitespace=True)


def _chunks(text: str, size: int = 1 << 16) -> Iterator[str]:
    for i in range(0, len(text), size):
        yield text[i:i + size]


def missing_chars(tok: Tokenizer, chars: str) -> str:
    """The characters of `chars` that no token of `tok` decodes to, sorted (e.g. a task's
    alphabet against a checkpoint's char tokenizer)."""
    have = set(tok.decode(list(range(tok.vocab_size))))
    return "".join(sorted(set(chars) - have))


def train_tokenizer(kind: str, text: str, vocab_size: int = 2000) -> Tokenizer:
    if not text:
        raise TRMError("cannot train a tokenizer on empty text")
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size)
    if kind == "sentencepiece":
        return SentencePieceTokenizer.train(text, vocab_size)
    raise TRMError(f"unknown tokenizer {kind!r} (use char, bpe or sentencepiece)")


def save_tokenizer(tok: Tokenizer, directory: str | Path) -> Path:
    path = Path(directory) / tok.file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tok.to_bytes())
    return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer file (tokenizer.json / tokenizer.model) or a directory holding one."""
    path = Path(path)
    if path.is_dir():
        for name in (JSON_FILE, SP_FILE):
            if (path / name).is_file():
                return load_tokenizer(path / name)
        raise TRMError(f"no {JSON_FILE} or {SP_FILE} in {path}")
    if not path.is_file():
        raise TRMError(f"tokenizer file not found: {path}")
    data = path.read_bytes()
    if path.suffix == ".model":
        try:
            return SentencePieceTokenizer(data)
        except (RuntimeError, OSError, TypeError) as exc:
            raise TRMError(f"corrupt sentencepiece tokenizer {path}: {str(exc).splitlines()[0]}") from None
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TRMError(f"corrupt tokenizer file {path}: not valid JSON") from None
    if isinstance(obj, dict) and obj.get("trmlm_tokenizer") == "char":
        # The earlier char format ({"trmlm_tokenizer": "char", "chars": [...]}): still read, so
        # checkpoints written before the HF format keep loading; written back in the HF format.
        chars = obj.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise TRMError(f"corrupt tokenizer file {path}: bad character list")
        return CharTokenizer(chars)
    chars = CharTokenizer.chars_of_hf_json(obj) if isinstance(obj, dict) else None
    if chars is not None:
        return CharTokenizer(chars)
    from tokenizers import Tokenizer as HFTokenizer

    try:
        return BPETokenizer(HFTokenizer.from_str(data.decode()))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise TRMError(f"corrupt tokenizer file {path}: {str(exc).splitlines()[0][:120]}") from None
