"""The lucidrains `tiny-recursive-model` (PyPI, optional `bench` extra) as a timing peer.

Only its training step is used: one supervision step (T cycles of n latent + 1 answer refinement,
the last with grad) forward + backward + AdamW on a Sudoku-shaped batch, the shape of a trmlm
preset. Nothing here is imported unless the package is installed.
"""

from __future__ import annotations

import importlib.metadata
from typing import Callable

import torch

from trmlm.config import TRMConfig

PEER_PACKAGE = "tiny-recursive-model"


def peer_version() -> str | None:
    """The installed peer's version, or None when it is not installed."""
    try:
        return importlib.metadata.version(PEER_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


def peer_step(cfg: TRMConfig, batch: int, seed: int = 0) -> tuple[Callable[[], int], int]:
    """(step, params): `step()` takes one peer optimizer step on a persistent random batch and
    returns 1. The network is the peer's own MLPMixer1D of `cfg.n_layers` blocks at width D (its
    README's Sudoku network), with T = cfg.n_cycles and n = cfg.n_latent, carrying its detached
    (outputs, latents) from step to step as its Trainer does; AdamW as its Trainer uses for a
    non-transformer network."""
    from tiny_recursive_model import MLPMixer1D, TinyRecursiveModel

    torch.manual_seed(seed)
    model = TinyRecursiveModel(
        dim=cfg.d_model, num_tokens=cfg.vocab_size,
        network=MLPMixer1D(dim=cfg.d_model, depth=cfg.n_layers, seq_len=cfg.seq_len),
        num_refinement_blocks=cfg.n_cycles, num_latent_refinements=cfg.n_latent).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1.0)
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len), generator=g)     # (B, L)
    labels = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len), generator=g)  # (B, L)
    outputs, latents = (t.detach().expand(batch, cfg.seq_len, cfg.d_model) for t in model.get_initial())
    state = [outputs, latents]

    def step() -> int:
        loss, _, state[0], state[1], _, _ = model(seq, state[0], state[1], labels=labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return 1

    return step, sum(p.numel() for p in model.parameters())
