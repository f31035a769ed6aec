"""Shrink: derive a lower-rank adapter from a trained one with peft's conversion, then optionally recover.

peft's `convert_to_lora` replaces each module's update (B·A times its scaling) by the best approximation of
rank r, from the update's SVD, and returns factors with the scaling baked into B (lora_alpha = r). Here B
is divided by the parent's alpha/r ratio and lora_alpha set to that ratio times r: the same function in
the project's convention, so that recovery steps run at the scaling, hence the effective learning rate,
that an adapter trained at that rank has. Recovery is N optimizer steps of the ordinary training loop at
the target rank, starting from the shrunk weights, on the first N batches of the parent's seeded schedule.
A float rank is peft's energy threshold: each module keeps the fewest singular values holding that
fraction of its update's energy, written as a `rank_pattern`.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

from trainers.derived import DerivedResult, Stopwatch, derived_notes, load_exact, read_notes, save_lora_weights
from trainers.errors import RanksweepError
from trainers.models import LoadedModel
from trainers.training import TrainConfig, TrainExample, BaseModelState, train_adapter


@dataclass
class Shrunk:
    """A converted adapter not yet written: its peft LoraConfig and weights under peft's saved key names."""

    lora_config: object
    weights: dict
    rank: int | float  # what was asked: a whole rank, or an energy threshold in (0, 1)
    parent_rank: int
    alpha_ratio: float
    rank_pattern: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def uniform_rank(self) -> int | None:
        """The rank every module has, or None when the threshold gave modules different ranks."""
        ranks = set(self.rank_pattern.values()) if self.rank_pattern else {self.lora_config.r}
        return ranks.pop() if len(ranks) == 1 else None


def _check_target(rank, parent_rank: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, (int, float)):
        raise RanksweepError(f"Shrink rank {rank!r} is not valid: give a whole rank or an energy fraction in (0, 1].")
    if isinstance(rank, int) and not 1 <= rank <= parent_rank:
        raise RanksweepError(f"Cannot shrink a rank-{parent_rank} adapter to rank {rank}: choose 1 to {parent_rank}.")
    if isinstance(rank, float) and not 0 < rank <= 1:
        raise RanksweepError(f"Energy threshold {rank} is not valid: give a fraction in (0, 1].")


@contextmanager
def attached_adapter(loaded: LoadedModel, adapter_dir: Path):
    """The borrowed model with an adapter folder loaded, handed back as lent afterwards."""
    from peft import PeftModel

    model = loaded.model
    state = BaseModelState(model)
    had_config = hasattr(model, "peft_config")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        peft_model = PeftModel.from_pretrained(model, adapter_dir)
    try:
        yield peft_model
    finally:
        peft_model.unload()
        if not had_config and hasattr(model, "peft_config"):
            del model.peft_config  # or the next adapter loaded onto this model would stack on a stale config
        state.restore(model)


def convert(loaded: LoadedModel, parent_dir: str | Path, rank: int | float) -> Shrunk:
    """The parent adapter cut to `rank` (or to an energy threshold) with peft's convert_to_lora; nothing written."""
    from peft import LoraConfig, convert_to_lora

    watch = Stopwatch()
    parent_dir = Path(parent_dir)
    parent_config = LoraConfig.from_pretrained(parent_dir)
    _check_target(rank, parent_config.r)
    ratio = parent_config.lora_alpha / parent_config.r
    with attached_adapter(loaded, parent_dir) as peft_model, warnings.catch_warnings():
        # peft notes that converting a LoRA to a LoRA is unusual; lowering the rank is the point here.
        warnings.filterwarnings("ignore", message=".*already a LoRA adapter.*")
        lora_config, weights = convert_to_lora(peft_model, rank)
    weights = {k: (v / ratio if ".lora_B." in k else v).contiguous() for k, v in weights.items()}
    lora_config.lora_alpha = ratio * lora_config.r
    lora_config.alpha_pattern = {k: ratio * v for k, v in lora_config.alpha_pattern.items()}
    lora_config.lora_dropout = parent_config.lora_dropout
    lora_config.task_type = parent_config.task_type
    return Shrunk(
        lora_config=lora_config,
        weights=weights,
        rank=rank,
        parent_rank=parent_config.r,
        alpha_ratio=ratio,
        rank_pattern=dict(lora_config.rank_pattern),
        seconds=watch.seconds,
    )


@contextmanager
def _starting_from(peft_model, weights: dict):
    load_exact(peft_model, weights)
    yield


def write_shrunk(
    loaded: LoadedModel,
    shrunk: Shrunk,
    parent_dir: str | Path,
    out_dir: str | Path,
    *,
    recover_steps: int = 0,
    examples: list[TrainExample] | None = None,
    progress: bool = False,
    metadata: dict | None = None,
) -> DerivedResult:
    """Write a converted adapter to out_dir, after `recover_steps` training steps at its rank when asked."""
    watch = Stopwatch()
    parent_dir, out_dir = Path(parent_dir), Path(out_dir)
    parent = read_notes(parent_dir)
    rank = shrunk.uniform_rank
    if isinstance(recover_steps, bool) or not isinstance(recover_steps, int) or recover_steps < 0:
        raise RanksweepError(f"Recovery steps must be a whole number of 0 or more, not {recover_steps!r}.")
    own = {
        "origin": "shrink",
        "parent_dir": str(parent_dir),
        "parent_rank": shrunk.parent_rank,
        "recover_steps": recover_steps,
        "shrink_target": shrunk.rank,
        "rank_pattern": shrunk.rank_pattern,
        **(metadata or {}),
    }
    if recover_steps == 0:
        notes = derived_notes(
            parent, **own, rank=rank if rank is not None else shrunk.lora_config.r,
            alpha=shrunk.lora_config.lora_alpha, steps=0, seconds=round(shrunk.seconds + watch.seconds, 3),
        )
        raw = save_lora_weights(loaded, shrunk.lora_config, shrunk.weights, out_dir, parent["adapter_dtype"], notes)
        return DerivedResult(out_dir, notes["rank"], "shrink", parent_dir, 0, shrunk.seconds + watch.seconds, raw,
                             shrunk.rank_pattern)
    if rank is None or shrunk.rank_pattern:
        raise RanksweepError("Recovery steps need one rank for every module: shrink to a whole rank to recover.")
    if not examples:
        raise RanksweepError("Recovery steps need the training examples the parent adapter was trained on.")
    config = replace(TrainConfig.from_attrs(SimpleNamespace(**parent)), rank=rank)
    result = train_adapter(
        loaded, examples, config, out_dir, progress=progress, metadata=own, steps=recover_steps,
        during=lambda peft_model: _starting_from(peft_model, shrunk.weights),
    )
    return DerivedResult(out_dir, rank, "shrink", parent_dir, recover_steps, shrunk.seconds + watch.seconds,
                         result.raw_bytes, losses=result.losses)


def shrink_adapter(
    loaded: LoadedModel,
    parent_dir: str | Path,
    rank: int | float,
    out_dir: str | Path,
    *,
    recover_steps: int = 0,
    examples: list[TrainExample] | None = None,
    progress: bool = False,
    metadata: dict | None = None,
) -> DerivedResult:
    """Cut the adapter in parent_dir to `rank`, recover for `recover_steps` steps, and save it to out_dir."""
    shrunk = convert(loaded, parent_dir, rank)
    return write_shrunk(loaded, shrunk, parent_dir, out_dir, recover_steps=recover_steps, examples=examples,
                        progress=progress, metadata=metadata)
