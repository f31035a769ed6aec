"""How a study makes the adapters of a rank it asks for: train each rank (independent), or derive every rank
from one training per kind and setting (shrink, nested).

- independent: one training per distinct adapter (sweep.trial.ensure_adapter).
- shrink: one training at the largest rank of the kind's search space; each smaller rank is cut from it by
  peft's conversion (trainers/shrink.py), then `recover_steps` training steps at that rank.
- nested: one DyLoRA-style training at the largest rank whose prefixes at every rank of the space work
  (trainers/nested.py); each rank is its prefix, saved as a plain PEFT folder.

A derived adapter is cached under a key made of its parent's key, its origin, its rank and its recovery
steps, so a second study (or worker) with the same parent reuses both; it is graded like any other.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

from sweep.cache import AdapterSpec, ArtifactCache
from trainers.errors import RanksweepError
from trainers.nested import prefix_adapter, train_nested
from trainers.shrink import shrink_adapter
from trainers.training import train_adapter

STRATEGIES = ("independent", "shrink", "nested")
DERIVE_VERSION = 1  # bump when a derivation changes in a way that changes its adapters
# `auto` follows the rule: the cheapest strategy whose accuracy at every rank lies inside the independent adapters'
# 95% interval or above it. In bench/one_training.py (docs/benchmarks.md section 8: embedded, metric-prefix SFT,
# ranks 1-16 from R = 32, 200 questions) only shrink with 25 recovery steps passed (27-34% against independent's
# 28-32%); shrink+0 fell to 10.5% at rank 1, shrink+50 to 20.5% at rank 16, nested to 0% at rank 1. Its 5x5 study
# was estimated 1.46x cheaper than independent: short of the 4x the strategies were meant to reach.
DEFAULT_RECOVER_STEPS = 25
# The cut itself (peft's conversion and the write) took 10-12 s there, while a training step took 1.8 s: charged
# as this many steps when `auto` weighs a derivation against a training.
CUT_STEPS = 6
# Past this many recovery steps (hours of training per derived adapter) a number is a slip, as an epoch count
# past sweep.commands.common.MAX_EPOCHS is.
MAX_RECOVER_STEPS = 100_000


def check_recover_steps(recover_steps) -> int:
    """`recover_steps` when it is a whole number from 0 to MAX_RECOVER_STEPS, else a RanksweepError."""
    if isinstance(recover_steps, bool) or not isinstance(recover_steps, int) or \
            not 0 <= recover_steps <= MAX_RECOVER_STEPS:
        raise RanksweepError(f"--recover-steps must be a whole number from 0 to {MAX_RECOVER_STEPS}, not "
                             f"{recover_steps!r}.")
    return recover_steps


def check_strategy(strategy: str, recover_steps: int | None) -> None:
    """Raise RanksweepError for an unknown strategy or recovery steps it cannot use."""
    if strategy not in (*STRATEGIES, "auto"):
        raise RanksweepError(f"Unknown strategy '{strategy}': choose auto or one of {', '.join(STRATEGIES)}.")
    if recover_steps is None:
        return
    check_recover_steps(recover_steps)
    if recover_steps and strategy not in ("shrink", "auto"):
        raise RanksweepError("--recover-steps applies to --strategy shrink only; drop it or choose shrink.")


def resolve_strategy(strategy: str, recover_steps: int | None, shortest_training_steps: int) -> tuple[str, int]:
    """The (strategy, recovery steps) a study runs with; `auto` picks shrink with recovery where it is cheaper.

    The parent is the space's largest rank, itself one of the study's adapters, so shrink costs one training of
    T steps plus (recover_steps + CUT_STEPS) per other rank, and independent T per rank: shrink is cheaper
    exactly when T > recover_steps + CUT_STEPS. `auto` takes it then, else independent (a CPU-sized study of a
    few steps per training stays independent).
    """
    if strategy == "auto":
        steps = DEFAULT_RECOVER_STEPS if recover_steps is None else recover_steps
        return ("shrink", steps) if shortest_training_steps > steps + CUT_STEPS else ("independent", 0)
    if strategy == "shrink":
        return strategy, DEFAULT_RECOVER_STEPS if recover_steps is None else recover_steps
    return strategy, recover_steps or 0


def _hash(blob: dict) -> str:
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class NestedParentSpec(AdapterSpec):
    """A nested training at `config.rank` whose prefixes at `ranks` are trained too (never graded itself)."""

    ranks: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        return _hash({"trained": AdapterSpec.key.fget(self), "nested_ranks": list(self.ranks)})


@dataclass(frozen=True)
class DerivedSpec(AdapterSpec):
    """An adapter computed from `parent` at `config.rank` (the parent's config with the rank changed)."""

    parent: AdapterSpec | None = None
    origin: str = "shrink"  # "shrink" | "nested"
    recover_steps: int = 0

    @property
    def key(self) -> str:
        return _hash({"parent": self.parent.key, "origin": self.origin, "rank": self.config.rank,
                      "recover_steps": self.recover_steps, "derive_version": DERIVE_VERSION})

    @property
    def derived(self) -> bool:
        return True

    @property
    def alpha(self) -> float:
        # A nested prefix keeps the parent's lora_alpha (its scaling is alpha/rank, as it was trained).
        return self.parent.config.alpha if self.origin == "nested" else self.config.alpha


def parent_rank(ranks) -> int:
    """The rank a strategy trains once per kind and setting: the largest one the study may ask for."""
    return max(ranks)


def spec_for(strategy: str, trained: AdapterSpec, space_ranks, recover_steps: int = 0) -> AdapterSpec:
    """The cache spec of the adapter a strategy makes for `trained` (the spec an independent training would have)."""
    if strategy == "independent":
        return trained
    top = parent_rank(space_ranks)
    parent_config = replace(trained.config, rank=top)
    if strategy == "shrink":
        parent = AdapterSpec(parent_config, trained.base_model, trained.data_sha256)
        if trained.rank == top:
            return parent  # the parent itself, shared with an independent study of the same space
        return DerivedSpec(trained.config, trained.base_model, trained.data_sha256, parent=parent,
                           origin="shrink", recover_steps=recover_steps)
    ranks = tuple(sorted(set(space_ranks)))
    parent = NestedParentSpec(parent_config, trained.base_model, trained.data_sha256, ranks=ranks)
    return DerivedSpec(trained.config, trained.base_model, trained.data_sha256, parent=parent, origin="nested")


def ensure_parent(cache: ArtifactCache, spec: AdapterSpec, loaded, examples, *, progress: bool) -> float:
    """Train a derivation's parent unless the cache holds it; return the seconds spent training (0 if cached).

    `loaded` is called only when a training is needed (a study whose parents are cached never loads the model).
    """
    def train(folder) -> None:
        metadata = {"key": spec.key, "data_sha256": spec.data_sha256}
        if isinstance(spec, NestedParentSpec):
            train_nested(loaded(), examples, spec.config, folder, spec.ranks, progress=progress, metadata=metadata)
        else:
            train_adapter(loaded(), examples, spec.config, folder, progress=progress, metadata=metadata)

    return cache.ensure(spec, train).seconds


def derive(spec: DerivedSpec, parent_dir, out_dir, loaded, examples, *, progress: bool) -> None:
    """Write the derived adapter `spec` from the parent folder into out_dir."""
    metadata = {"key": spec.key, "parent_key": spec.parent.key, "data_sha256": spec.data_sha256}
    if spec.origin == "nested":
        prefix_adapter(loaded, parent_dir, spec.rank, out_dir, metadata=metadata)
    else:
        shrink_adapter(loaded, parent_dir, spec.rank, out_dir, recover_steps=spec.recover_steps,
                       examples=examples if spec.recover_steps else None, progress=progress, metadata=metadata)
