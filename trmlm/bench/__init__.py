"""Benchmarks behind `trm bench`: adaptive compute, decode speed (trmlm.bench.*) and plots."""
