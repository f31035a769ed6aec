"""Shared fixtures: the CLI as a user runs it, and the tiny model loaded once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: str | Path | None = None, env: dict | None = None, timeout: float = 600):
    """Run `python -m sweep ARGS` in a subprocess and return the CompletedProcess (text mode)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sweep", *map(str, args)],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def cli():
    return run_cli


@pytest.fixture(scope="session")
def tiny():
    """The `tiny` model on CPU (random weights, real SmolLM2 tokenizer)."""
    from trainers.models import load_model

    return load_model("tiny", "cpu")
