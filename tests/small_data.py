"""The small homework-format data that study tests and the sweep benchmark run on: 40 training rows,
8 validation rows and 24 RFT rows, enough for real trainings on `tiny` that take seconds."""

from __future__ import annotations

from pathlib import Path

from trainers.data import write_json_atomic


def write_small_data(root: Path) -> Path:
    """Write train.json, valid.json and rft.json into `root` and return it."""
    train = [[f"How many gram are there per {n} kg?", n * 1000.0] for n in range(1, 41)]
    valid = [[f"How many meter are there per {n} km?", n * 1000.0] for n in range(1, 9)]
    rft = [[q, a, f"1 kg = 1000 g, so {q.split()[-2]} kg = {a:g} g. <answer>{a:g}</answer>"] for q, a in train[:24]]
    write_json_atomic(root / "train.json", train)
    write_json_atomic(root / "valid.json", valid)
    write_json_atomic(root / "rft.json", rft)
    return root
