"""Write an adapter whose weights were computed rather than trained (shrunk or sliced from a parent adapter).

Derived weights go through the same path as trained ones: LoRA layers injected from a peft `LoraConfig`,
the weights loaded with peft's `set_peft_model_state_dict`, and the folder written by peft's
`save_pretrained` (trainers/adapter_files.py), so a derived folder is a plain PEFT adapter that
`PeftModel.from_pretrained` loads and `sweep/sizing.py` sizes like any other.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from trainers.adapter_files import NOTES, save_adapter
from trainers.errors import RanksweepError
from trainers.models import LoadedModel
from trainers.training import BaseModelState

@dataclass
class DerivedResult:
    """One derived adapter: where it is, its rank, what it came from; seconds are wall time of the derivation."""

    adapter_dir: Path
    rank: int
    origin: str  # "shrink" | "nested"
    parent_dir: Path
    recover_steps: int = 0
    seconds: float = 0.0
    raw_bytes: int = 0
    rank_pattern: dict[str, int] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)


def read_notes(adapter_dir: str | Path) -> dict:
    """The ranksweep.json notes of an adapter folder trained or derived by ranksweep."""
    path = Path(adapter_dir) / NOTES
    try:
        notes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise RanksweepError(f"'{adapter_dir}' has no readable {NOTES}: derive only from adapters ranksweep trained.")
    if not isinstance(notes, dict):
        raise RanksweepError(f"'{path}' is not a JSON object: derive only from adapters ranksweep trained.")
    return notes


def save_lora_weights(
    loaded: LoadedModel, lora_config, weights: dict, out_dir: Path, adapter_dtype: str, notes: dict
) -> int:
    """Inject `lora_config` into the borrowed model, load `weights` (peft's saved key names), save; return bytes."""
    from peft import get_peft_model

    model = loaded.model
    state = BaseModelState(model)
    # Trainable LoRA parameters, so that save_adapter's fp16 cast (which touches trainable ones) applies.
    lora_config.inference_mode = False
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        peft_model = get_peft_model(model, lora_config)
    try:
        load_exact(peft_model, weights)
        return save_adapter(peft_model, out_dir, adapter_dtype, notes, [])
    finally:
        peft_model.unload()
        state.restore(model)


def load_exact(peft_model, weights: dict) -> None:
    """Load saved-format LoRA weights into an injected model; every tensor must land on a LoRA parameter."""
    from peft import set_peft_model_state_dict

    device = next(peft_model.parameters()).device
    result = set_peft_model_state_dict(peft_model, {k: v.to(device) for k, v in weights.items()})
    if result.unexpected_keys:
        raise RanksweepError(
            f"{len(result.unexpected_keys)} derived tensors match no LoRA layer (first: {result.unexpected_keys[0]}); "
            "the parent adapter was trained on another base model."
        )
    lora_missing = [k for k in result.missing_keys if ".lora_" in k]
    if lora_missing:
        raise RanksweepError(f"{len(lora_missing)} LoRA tensors were not derived (first: {lora_missing[0]}).")


def derived_notes(parent: dict, **changes) -> dict:
    """The parent's notes with the derived adapter's own fields; the parent's training log is not repeated."""
    notes = {k: v for k, v in parent.items() if k not in ("raw_bytes", "final_loss")}
    notes.update(changes)
    return notes


class Stopwatch:
    """Wall seconds since creation."""

    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
