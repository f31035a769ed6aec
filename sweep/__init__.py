"""The study: search space, size budget, trial runner, artifact cache, CLI and export.

This is the recipe layer: it wires the blocks in `trainers/` into an Optuna search.
"""
