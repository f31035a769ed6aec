"""Rejection-sampling fine-tuning: teach the model a short reasoning chain that ends in the answer tag."""

import json
import sys
from pathlib import Path

from .data import DATA_DIR, Dataset, benchmark
from .sft import load as load_adapter
from .sft import train_lora

RFT_LORA_RANK = 16
MODEL_NAME = "rft_model"


def load():
    return load_adapter(MODEL_NAME)


def train_model(output_dir: str = MODEL_NAME, **kwargs):
    with (DATA_DIR / "rft.json").open() as f:
        rows = json.load(f)
    train_lora([(question, reasoning) for question, _, reasoning in rows], RFT_LORA_RANK, output_dir, **kwargs)


def test_model():
    result = benchmark(load(), Dataset("valid"), 100)
    print(f"accuracy={result.accuracy} answer_rate={result.answer_rate}")


if __name__ == "__main__":
    commands = {"train": train_model, "test": test_model}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: python -m homework.rft {{{','.join(commands)}}}")
    commands[sys.argv[1]]()
