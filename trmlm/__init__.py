"""trmlm: Tiny Recursive Models for puzzles and autoregressive language modelling."""

__version__ = "0.1.0"
