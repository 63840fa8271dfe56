"""The puzzle head: TRM puzzle model, baselines (HRM, direct), ACT carry, training and evaluation."""
