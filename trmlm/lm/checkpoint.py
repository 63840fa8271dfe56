"""LM checkpoint directories: model.safetensors, config.json, tokenizer file, generation_config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from trmlm.checkpoint import load_checkpoint, load_weights_into, read_json, refuse_wrong_kind, save_checkpoint
from trmlm.configtools import from_dict, to_dict
from trmlm.errors import TRMError
from trmlm.lm.config import LMConfig, lm_config_from_dict
from trmlm.lm.generate import GenerationConfig
from trmlm.lm.model import LanguageModel, build_model
from trmlm.lm.tokenizer import Tokenizer, load_tokenizer, missing_chars

GENERATION_CONFIG = "generation_config.json"


@dataclass
class LoadedLM:
    model: LanguageModel
    tokenizer: Tokenizer
    cfg: LMConfig
    generation: GenerationConfig
    meta: dict[str, Any]
    path: Path | None = None  # the directory it was loaded from


def default_generation(cfg: LMConfig) -> GenerationConfig:
    return GenerationConfig(halt_threshold=cfg.halt.threshold, min_steps=cfg.halt.min_steps,
                            max_steps=cfg.halt.max_steps,
                            cache="per-step" if cfg.decodes_per_step else "commit-last")


def save_lm(path: str | Path, weights: dict[str, Tensor], cfg: LMConfig, tokenizer: Tokenizer,
            meta: dict[str, Any], generation: GenerationConfig | None = None) -> Path:
    """generation: the decoding defaults to store (default: the config's halting settings)."""
    gen = generation or default_generation(cfg)
    extra = {tokenizer.file_name: tokenizer.to_bytes(),
             GENERATION_CONFIG: (json.dumps(to_dict(gen), indent=2) + "\n").encode()}
    return save_checkpoint(path, weights, to_dict(cfg), meta, extra=extra)


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints written before 2026-12-01 call the network section `net` and have no
    `commit_input` key: they committed the answer state alone ("y")."""
    config = dict(config)
    if "net" in config and "model" not in config:
        config["model"] = config.pop("net")
    config.setdefault("commit_input", "y")
    return config


def load_lm(path: str | Path) -> LoadedLM:
    """Every problem (missing files, corrupt JSON/weights/tokenizer, mismatch) is a TRMError."""
    ckpt = load_checkpoint(path)
    refuse_wrong_kind(ckpt, "lm")
    try:
        cfg = lm_config_from_dict(upgrade_config(ckpt.config))
    except TRMError as exc:
        raise TRMError(f"checkpoint {ckpt.path} has an invalid config: {exc}") from None
    model = build_model(cfg)
    load_weights_into(model, ckpt.weights, ckpt.path)
    tokenizer = load_tokenizer(ckpt.path)
    if tokenizer.vocab_size != cfg.model.vocab_size:
        raise TRMError(f"tokenizer in {ckpt.path} has {tokenizer.vocab_size} tokens, the model "
                       f"{cfg.model.vocab_size}")
    gen_file = ckpt.path / GENERATION_CONFIG
    generation = default_generation(cfg)
    if gen_file.exists():
        generation = from_dict(GenerationConfig, read_json(gen_file, "generation config"),
                               "generation_config")
    return LoadedLM(model.eval(), tokenizer, cfg, generation, ckpt.meta, ckpt.path)


# model.* keys not compared: training-only knobs, and the vocabulary (the run takes the
# checkpoint's tokenizer). Every other key changes what the weights compute.
_TRAINING_ONLY = ("grad", "halt_exploration", "vocab_size")


def load_init(path: str | Path, cfg: LMConfig, task: Any = None) -> LoadedLM:
    """The checkpoint a run starts from (`train-lm --init-from`): its weights and tokenizer,
    after checking that its network is the one `cfg` builds (a one-line error naming the first
    key that differs, and the --set that would match it) and that its tokenizer can write the
    run's reasoning-text `task` (a TextTask), if any."""
    init = load_lm(path)
    if task is not None:
        if missing := missing_chars(init.tokenizer, task.alphabet):
            raise TRMError(f"--init-from {path}: its tokenizer has no {missing!r}, "
                           f"characters of task {task.name}")
    mine, theirs = to_dict(cfg), to_dict(init.cfg)
    pairs = [(key, theirs[key], mine[key]) for key in ("arch", "commit_input", "iso_layers")]
    pairs += [(f"model.{key}", value, mine["model"][key]) for key, value in theirs["model"].items()
              if key not in _TRAINING_ONLY]
    for key, value, own in pairs:
        if value != own:
            raise TRMError(f"--init-from {path}: its {key} is {value!r}, this run's {own!r} "
                           f"(add --set {key}={value})")
    return init
