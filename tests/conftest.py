"""Shared fixtures: the CLI as a user runs it, the tiny model loaded once per session, and the two floors.

A test marked `fast` builds no model (the guard below fails it if it tries) and gets a 30 s timeout; every
other test is marked `integration`. `make test-fast` runs the first floor, `make test` both."""

from __future__ import annotations

import os

import pytest

from cli_runner import run_cli, run_main

FAST_TIMEOUT_S = 30
# Float32 unless a test asks for bfloat16 (RANKSWEEP_CPU_BF16=1): the suite computes the same numbers on CPUs
# with and without native bf16, and the tests of the bf16 paths force it on wherever they run.
os.environ.setdefault("RANKSWEEP_CPU_BF16", "0")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("fast") is None:
            item.add_marker(pytest.mark.integration)
        elif item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(FAST_TIMEOUT_S))


class ModelBuiltInFastTest(AssertionError):
    """A test marked `fast` reached a model loader: it belongs to the integration floor."""


@pytest.fixture(autouse=True)
def _no_model_in_fast_tests(request, monkeypatch):
    """Holds the `fast` marker to its promise: asking for the tiny model or the CLI in a process of its own,
    calling the model loader or constructing a model with weights fails the test. A model on the meta device (a module tree without
    weights, what sweep/sizing.py reads LoRA shapes from) is allowed."""
    if request.node.get_closest_marker("fast") is None:
        return

    def refuse(*args, **kwargs):
        raise ModelBuiltInFastTest(f"{request.node.nodeid} is marked fast but builds a model")

    if "tiny" in request.fixturenames or "cli" in request.fixturenames:  # a process of its own is not guarded
        refuse()
    import sys

    import trainers.models
    from sweep.cli import build_parser

    # Every command module imported now, with the real loader: one first imported under the patch below would keep
    # `refuse` as its `load_model` for the rest of the session (the next test's model then fails as "fast").
    build_parser()
    real = trainers.models.load_model
    for module in list(sys.modules.values()):
        if getattr(module, "load_model", None) is real:
            monkeypatch.setattr(module, "load_model", refuse)
    import torch
    import transformers  # a model built through transformers directly, not through the loader

    construct = transformers.PreTrainedModel.__init__

    def weightless_only(self, *args, **kwargs):
        if torch.get_default_device().type != "meta":
            refuse()
        construct(self, *args, **kwargs)

    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", weightless_only)


@pytest.fixture(scope="session")
def cli():
    return run_cli


@pytest.fixture(scope="session")
def ranksweep():
    """The CLI run in-process (see run_main)."""
    return run_main


@pytest.fixture(scope="session")
def tiny():
    """The `tiny` model on CPU (random weights, real SmolLM2 tokenizer)."""
    from trainers.models import load_model

    return load_model("tiny", "cpu")
