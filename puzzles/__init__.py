"""Puzzle tasks for TRM: generators, loaders, augmentations and evaluators (uses trmlm, never cli)."""
