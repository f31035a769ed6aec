"""Train one LoRA adapter (SFT or RFT) on prompt/completion pairs with a plain loop, and save it as PEFT does.

The caller's base model is borrowed, not consumed: LoRA layers are injected for the run and removed
afterwards, so one loaded model serves many trainings and gradings. What keeps a CPU step cheap:
batches padded only to their longest row (rows of similar length batched together), logits computed
only where a label exists, and, where the CPU has native bf16 (always on CUDA), a base model held in
bfloat16 (trainers.models) with float32 LoRA weights and optimizer state, run under bf16 autocast.
"""

from __future__ import annotations

import math
import numbers
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from trainers.adapter_files import save_adapter
from trainers.batching import Batch, IGNORE, TokenRow, collate, schedule, steps_for, tokenize_rows
from trainers.data import QA, RFTRow
from trainers.errors import RanksweepError, TrainingDiverged
from trainers.hardware import use_bf16
from trainers.models import LoadedModel

KINDS = ("sft", "rft")
ADAPTER_DTYPES = ("fp32", "fp16")
# The largest LoRA rank any command accepts (train, size, launch, export): past it a rank is a slip, and its
# adapter would outweigh any model ranksweep sizes.
MAX_RANK = 4096


def is_rank(value) -> bool:
    """Whether `value` is a LoRA rank ranksweep accepts: a whole number from 1 to MAX_RANK (not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and 1 <= value <= MAX_RANK
WARMUP_FRACTION = 0.05
MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides an adapter's weights, besides the base model and the data."""

    kind: str  # "sft" | "rft": recorded in ranksweep.json; training itself only sees prompt/completion pairs
    rank: int
    alpha_ratio: float = 4.0  # lora_alpha = alpha_ratio * rank
    dropout: float = 0.05
    lr: float = 1e-3
    epochs: float = 1.0  # fractional epochs run the first part of the next epoch's schedule
    batch_size: int = 16
    max_examples: int | None = None  # train on the first N rows after a shuffle seeded by `seed`
    seed: int = 0
    target_modules: str = "all-linear"
    adapter_dtype: str = "fp32"  # dtype of the saved adapter_model.safetensors
    max_length: int = 256  # rows longer than this many tokens are dropped (see trainers/batching.py)

    @classmethod
    def from_attrs(cls, source) -> "TrainConfig":
        """The config read from any object that names some of its fields (CLI flags, a cache key);
        the fields it does not name keep their defaults."""
        return cls(**{f.name: getattr(source, f.name) for f in fields(cls) if hasattr(source, f.name)})

    @property
    def alpha(self) -> float:
        return self.alpha_ratio * self.rank


@dataclass(frozen=True)
class TrainExample:
    """A raw question (no chat template) and the text the adapter should complete it with."""

    prompt: str
    completion: str


@dataclass
class TrainResult:
    """What a training run produced; seconds are wall time, raw_bytes the adapter_model.safetensors size."""

    adapter_dir: Path
    steps: int
    examples: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    trainable_params: int = 0
    raw_bytes: int = 0


def format_answer(value: float) -> str:
    """The SFT target for a number: rounded to 3 decimals, no trailing zeros (6000.0 -> <answer>6000</answer>)."""
    text = f"{round(float(value), 3):.3f}".rstrip("0").rstrip(".")
    return f"<answer>{'0' if text == '-0' else text}</answer>"


def sft_examples(rows: list[QA]) -> list[TrainExample]:
    """SFT pairs: the question completed by its answer tag."""
    return [TrainExample(row.question, format_answer(row.answer)) for row in rows]


def rft_examples(rows: list[RFTRow]) -> list[TrainExample]:
    """RFT pairs: the question completed by its reasoning chain (which ends in the answer tag)."""
    return [TrainExample(row.question, row.reasoning) for row in rows]


def validate(config: TrainConfig, examples: list[TrainExample] | None, out_dir: Path) -> None:
    """Raise RanksweepError for a config, data or destination no run could succeed with.

    Pass examples=None to check everything else before the data exists (e.g. before RFT data is generated).
    """
    checks = [
        (config.kind in KINDS, f"Training kind '{config.kind}' is unknown: use one of {', '.join(KINDS)}."),
        (
            is_rank(config.rank),
            f"LoRA rank must be a whole number from 1 to {MAX_RANK}, not {config.rank!r}.",
        ),
        (
            config.adapter_dtype in ADAPTER_DTYPES,
            f"Adapter dtype '{config.adapter_dtype}' is unknown: use one of {', '.join(ADAPTER_DTYPES)}.",
        ),
        (examples is None or len(examples) > 0, "There are no training examples: pass a data file with rows."),
        (0 < config.alpha_ratio < math.inf, f"alpha_ratio must be a number greater than 0, not {config.alpha_ratio}."),
        (0 <= config.dropout < 1, f"LoRA dropout must be in [0, 1), not {config.dropout}."),
        (0 < config.lr < math.inf, f"The learning rate must be a number greater than 0, not {config.lr}."),
        (0 < config.epochs < math.inf, f"epochs must be a number greater than 0, not {config.epochs}."),
        (config.batch_size >= 1, f"batch_size must be 1 or more, not {config.batch_size}."),
        (config.max_examples is None or config.max_examples >= 1, "max_examples must be 1 or more when given."),
        (config.max_length >= 2, f"max_length must be 2 tokens or more, not {config.max_length}."),
        (out_dir.is_dir() or not out_dir.exists(), f"'{out_dir}' is a file: choose a folder for the adapter."),
    ]
    for ok, message in checks:
        if not ok:
            raise RanksweepError(message)


# Config fields of models whose logits are more than lm_head(hidden): those take the full forward pass.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def head_is_plain(core) -> bool:
    return all(getattr(core.config, name, None) in (None, 1, 1.0) for name in LOGIT_TRANSFORMS)


def batch_loss(core, batch: Batch, *, labelled_only: bool = True):
    """Mean cross-entropy over the labelled tokens of a batch (`core` is the transformers causal LM)."""
    import torch.nn.functional as F

    targets = batch.labels[:, 1:]
    decoder, head = core.get_decoder(), core.get_output_embeddings()
    if labelled_only and decoder is not core and head is not None and head_is_plain(core):
        hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        keep = targets != IGNORE
        # Only the positions whose next token is labelled reach the LM head: prompt and padding never do.
        logits = head(hidden.last_hidden_state[:, :-1][keep])
        return F.cross_entropy(logits.float(), targets[keep])
    logits = core(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


def _lr_factor(step: int, steps: int) -> float:
    """Linear warmup over the first 5% of steps (at least one), then cosine decay towards 0."""
    warmup = max(1, round(WARMUP_FRACTION * steps))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def _pick_rows(examples: list[TrainExample], config: TrainConfig) -> list[TrainExample]:
    if config.max_examples is None or config.max_examples >= len(examples):
        return list(examples)
    import torch

    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(config.seed)).tolist()
    return [examples[i] for i in order[: config.max_examples]]


def _fit(peft_model, rows: list[TokenRow], plan: list[list[int]], config: TrainConfig, loaded, progress: bool):
    """The training loop; returns one (step, loss, lr, seconds) tuple per step."""
    import torch
    from tqdm import tqdm

    core = peft_model.get_base_model()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, len(plan)))
    device_type = "cuda" if loaded.device.startswith("cuda") else "cpu"
    autocast = use_bf16(loaded.device)
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    log = []
    start = time.perf_counter()
    peft_model.train()
    bar = tqdm(plan, desc=f"{config.kind} r={config.rank}", unit="step", file=sys.stderr, disable=not progress)
    for step, indices in enumerate(bar):
        batch = collate([rows[i] for i in indices], pad_id).to(loaded.device)
        lr = scheduler.get_last_lr()[0]
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=autocast):
            loss = batch_loss(core, batch)
        value = loss.item()
        if not math.isfinite(value):
            # One NaN step poisons every weight after it: stop here, before anything is saved or cached.
            raise TrainingDiverged(
                f"Training the {config.kind.upper()} adapter (rank {config.rank}) diverged: its loss was {value} at "
                f"step {step + 1} of {len(plan)}; nothing was saved: lower the learning rate (it peaks at {config.lr:g}).")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        log.append((step + 1, value, lr, time.perf_counter() - start))
        bar.set_postfix(loss=f"{log[-1][1]:.4f}")
    bar.close()
    return log


class BaseModelState:
    """What LoRA injection touches on the borrowed model, so it can be handed back as lent (in eval mode)."""

    def __init__(self, model):
        self.requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}

    def restore(self, model) -> None:
        for name, param in model.named_parameters():
            param.requires_grad_(self.requires_grad.get(name, param.requires_grad))
        # Eval mode whatever it was lent in: the next user grades or generates, where dropout must be off.
        model.eval()


def train_adapter(
    loaded: LoadedModel,
    examples: list[TrainExample],
    config: TrainConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    metadata: dict | None = None,
    steps: int | None = None,
    during=None,
    replace: bool = True,
) -> TrainResult:
    """Train a LoRA adapter on `loaded.model` and save it to out_dir; the base model is handed back unchanged.

    The base model's weights and requires_grad flags are restored and it is left in eval mode.
    `steps` replaces the epoch count with an exact number of optimizer steps; `during(peft_model)`, a context
    manager entered around the loop, lets a strategy start from given weights or act on each step
    (trainers/shrink.py, trainers/nested.py). `replace=False` keeps an out_dir another process filled meanwhile
    (trainers/adapter_files.py).
    Seconds are wall time; raw_bytes is the size of the saved adapter_model.safetensors.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    started = time.perf_counter()
    out_dir = Path(out_dir)
    validate(config, examples, out_dir)
    chosen = _pick_rows(examples, config)
    rows, dropped = tokenize_rows(loaded.tokenizer, [(e.prompt, e.completion) for e in chosen], config.max_length)
    if not rows:
        raise RanksweepError(
            f"All {len(chosen)} training rows are longer than max_length={config.max_length} tokens: raise max_length."
        )
    steps = steps or steps_for(len(rows), config.batch_size, config.epochs)
    plan = schedule([len(r.ids) for r in rows], config.batch_size, steps, config.seed)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = loaded.model
    state = BaseModelState(model)
    cuda = [torch.device(loaded.device).index or 0] if loaded.device.startswith("cuda") else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(config.seed)  # LoRA init and dropout masks, without disturbing the caller's RNG
        with warnings.catch_warnings():
            # peft probes a transformers attribute that transformers 5 deprecates; nothing for the user to act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(model, lora)
        try:
            trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
            with during(peft_model) if during is not None else nullcontext():
                log = _fit(peft_model, rows, plan, config, loaded, progress)
            notes = {
                **asdict(config),
                "alpha": config.alpha,
                "base_model": loaded.name,
                "device": loaded.device,
                "bf16_autocast": use_bf16(loaded.device),
                "base_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                "examples": len(rows),
                "dropped_examples": dropped,
                "steps": len(log),
                "final_loss": log[-1][1],
                "trainable_params": trainable,
                "seconds": round(time.perf_counter() - started, 3),
                **(metadata or {}),
            }
            raw_bytes = save_adapter(peft_model, out_dir, config.adapter_dtype, notes, log, replace=replace)
        finally:
            peft_model.unload()
            state.restore(model)
    return TrainResult(
        adapter_dir=out_dir,
        steps=len(log),
        examples=len(rows),
        losses=[loss for _, loss, _, _ in log],
        seconds=time.perf_counter() - started,
        trainable_params=trainable,
        raw_bytes=raw_bytes,
    )
