"""Building blocks: model loading, data, LoRA training, RFT data generation and grading.

Nothing here knows about Optuna or studies; `sweep/` wires these blocks into a search.
"""
