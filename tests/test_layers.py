"""The floors of docs/design.md ("Layers"), as the import contracts in pyproject.toml state them: imports run
down only (CLI, reports, sweep, trainers), trainers never import Optuna, the study loop never imports homework
mode, and no package has an import cycle among its modules."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    run = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_every_module_of_sweep_stands_on_a_floor():
    """A new module of sweep must be placed in the layers contract, or the contract would not check it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}
    modules = {f"sweep.{m.name}" for m in pkgutil.iter_modules([str(ROOT / "sweep")])}
    assert modules - named == set()
