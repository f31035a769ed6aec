"""Nested ranks (DyLoRA-style): one training at rank R whose every listed prefix is a working adapter.

Each optimizer step draws a prefix rank b from the listed ranks (uniformly, seeded) and runs the step with
only the first b rank components: the first b rows of every lora_A and columns of every lora_B, scaled
alpha/b where alpha is the rank-R adapter's lora_alpha. That is done by a forward hook on each lora_A that
zeroes components past b and multiplies the rest by R/b (peft already applies alpha/R), so the loop itself
is the ordinary one in trainers/training.py. Prefix b is then saved as a plain PEFT folder with r = b and
the same lora_alpha, which keeps its scaling alpha/b.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from pathlib import Path

from trainers.derived import DerivedResult, Stopwatch, derived_notes, read_notes, save_lora_weights
from trainers.errors import RanksweepError
from trainers.models import LoadedModel
from trainers.training import TrainConfig, TrainExample, TrainResult, train_adapter


def prefix_ranks(ranks, full_rank: int) -> tuple[int, ...]:
    """The prefixes a nested run trains: the given ranks plus the full rank, sorted, each in 1..full_rank."""
    chosen = sorted({int(r) for r in ranks} | {full_rank})
    if chosen[0] < 1 or chosen[-1] > full_rank:
        raise RanksweepError(f"Nested ranks must lie in 1..{full_rank} (the trained rank), not {chosen}.")
    return tuple(chosen)


@contextmanager
def sampled_prefixes(peft_model, ranks: tuple[int, ...], full_rank: int, seed: int, draws: list[int] | None = None):
    """While active, every training forward pass uses a prefix drawn from `ranks` (appended to `draws`)."""
    import torch
    from peft.tuners.lora import LoraLayer

    rng = random.Random(seed)
    masks = {}
    for b in ranks:
        mask = torch.zeros(full_rank)
        mask[:b] = full_rank / b
        masks[b] = mask
    current = {"mask": masks[max(ranks)]}  # outside training (eval), the largest listed prefix

    def draw(module, args):
        if module.training:  # one decoder pass per optimizer step
            b = rng.choice(ranks)
            current["mask"] = masks[b]
            if draws is not None:
                draws.append(b)

    def apply(module, args, output):
        return output * current["mask"].to(device=output.device, dtype=output.dtype)

    adapter = peft_model.active_adapter
    hooks = [peft_model.get_base_model().get_decoder().register_forward_pre_hook(draw)]
    hooks += [
        module.lora_A[adapter].register_forward_hook(apply)
        for module in peft_model.modules()
        if isinstance(module, LoraLayer) and adapter in module.lora_A
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def train_nested(
    loaded: LoadedModel,
    examples: list[TrainExample],
    config: TrainConfig,
    out_dir: str | Path,
    ranks,
    *,
    progress: bool = True,
    metadata: dict | None = None,
) -> TrainResult:
    """Train one rank-`config.rank` adapter whose prefixes at `ranks` all work; saved as a normal PEFT folder."""
    chosen = prefix_ranks(ranks, config.rank)
    return train_adapter(
        loaded, examples, config, out_dir, progress=progress,
        metadata={"strategy": "nested", "nested_ranks": list(chosen), **(metadata or {})},
        during=lambda peft_model: sampled_prefixes(peft_model, chosen, config.rank, config.seed),
    )


def prefix_adapter(
    loaded: LoadedModel, parent_dir: str | Path, rank: int, out_dir: str | Path, *, metadata: dict | None = None
) -> DerivedResult:
    """Save the first `rank` components of a nested adapter as a PEFT folder with the parent's lora_alpha."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    watch = Stopwatch()
    parent_dir, out_dir = Path(parent_dir), Path(out_dir)
    parent = read_notes(parent_dir)
    lora_config = LoraConfig.from_pretrained(parent_dir)
    full = lora_config.r
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= full:
        raise RanksweepError(f"A prefix of a rank-{full} nested adapter must have a rank in 1..{full}, not {rank!r}.")
    trained = parent.get("nested_ranks") or []
    if rank not in trained:
        raise RanksweepError(
            f"Rank {rank} was not among the prefixes this adapter was trained for ({trained}): train it nested with it."
        )
    weights = {}
    for key, tensor in load_file(parent_dir / "adapter_model.safetensors").items():
        # Loaded into float32 layers, as peft does when it loads a float16 file; saved back in the parent's dtype.
        part = tensor[:rank] if ".lora_A." in key else tensor[:, :rank]
        weights[key] = part.float().contiguous()
    lora_config.r = rank  # lora_alpha stays: the prefix keeps the scaling alpha/rank it was trained with
    notes = derived_notes(
        parent, origin="nested", parent_dir=str(parent_dir), parent_rank=full, recover_steps=0, rank=rank,
        alpha=lora_config.lora_alpha, alpha_ratio=lora_config.lora_alpha / rank, steps=0,
        seconds=round(watch.seconds, 3), **(metadata or {}),
    )
    raw = save_lora_weights(loaded, lora_config, weights, out_dir, parent["adapter_dtype"], notes)
    return DerivedResult(out_dir, rank, "nested", parent_dir, 0, watch.seconds, raw)
