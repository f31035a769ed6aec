"""The floors of docs/design.md ("Layers"), as the import contracts in pyproject.toml state them: imports run
down only (CLI, reports, sweep, trainers), trainers never import Optuna, the study loop never imports homework
mode, and no package has an import cycle among its modules."""

from __future__ import annotations

import pytest

import ast
import os
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

pytestmark = pytest.mark.fast  # reads the source and the import graph; no model

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
    unplaced = modules - named
    assert not unplaced, (f"{sorted(unplaced)} stand on no floor: name each in the layers contract of pyproject.toml "
                          "([tool.importlinter], the sweep floor for decisions and records, the CLI floor for commands)")


# Imported inside the functions that need them, so that `ranksweep --help`, `status` and the reports start without
# loading a deep-learning or dataframe stack; every other import sits at the top of its module.
HEAVY = {"torch", "transformers", "peft", "safetensors", "huggingface_hub", "optuna", "optuna_dashboard", "sqlalchemy",
         "pandas", "numpy", "matplotlib", "tqdm"}
PROJECT = {"sweep", "trainers", "reports"}


def _modules():
    for package in sorted(PROJECT):
        yield from sorted((ROOT / package).rglob("*.py"))


def _imported(node) -> list[tuple[str, list[str]]]:
    if isinstance(node, ast.Import):
        return [(alias.name, [alias.name]) for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0:
        return [(node.module or "", [alias.name for alias in node.names])]
    return []


def test_function_local_imports_are_heavy_libraries_only():
    """A function-local import of a project module hides an import cycle from the contracts above."""
    local = []
    for path in _modules():
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    for module, _ in _imported(node):
                        if module.split(".")[0] not in HEAVY:
                            local.append(f"{path.relative_to(ROOT)}:{node.lineno} {module}")
    assert local == []


def test_no_module_imports_another_modules_private_names():
    private = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            for module, names in _imported(node):
                if module.split(".")[0] in PROJECT:
                    private += [f"{path.relative_to(ROOT)}:{node.lineno} {module}.{n}" for n in names
                                if n.startswith("_")]
    assert private == []


def test_every_command_is_in_the_independence_contract():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    independent = next(c for c in config["contracts"] if c["type"] == "independence")["modules"]
    helpers = {"__init__", "common", "running"}
    commands = {f"sweep.commands.{m.name}" for m in pkgutil.iter_modules([str(ROOT / "sweep" / "commands")])
                if m.name not in helpers}
    assert commands - set(independent) == set(), "name each new command in the independence contract"
