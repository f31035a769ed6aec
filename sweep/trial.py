"""ranksweep's own trainer behind the runner's `PairBuilder` interface (sweep/builder.py): make the pair's two
adapters in this process (trained and graded, or reused from the cache), the way `settings.strategy` says."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from sweep.builder import PairOutcome, adapter_result, adapter_zip_bytes
from sweep.cache import AdapterSpec, ArtifactCache, file_lock
from sweep.records import AdapterResult, Pair
from sweep.settings import StudySettings, file_hash
from sweep.strategies import DerivedSpec, derive, ensure_parent, spec_for
from trainers.data import QA, read_qa, read_rft
from trainers.errors import RanksweepError
from trainers.grading import grade_model
from trainers.models import load_model, resolve_device
from trainers.prompts import DEFAULT_PROMPT_TEMPLATE, render_prompt, templated
from trainers.rft_data import RFTSettings, ensure_rft_data
from trainers.training import TrainConfig, rft_examples, sft_examples, train_adapter


@dataclass
class TrialContext:
    """State shared by all trials of one process: settings, cache, and the lazily loaded base model."""

    settings: StudySettings
    cache: ArtifactCache
    progress: bool = True  # per-training and grading progress bars
    _loaded: object = None
    _rft_path: Path | None = None
    _rows: dict = field(default_factory=dict)

    @property
    def loaded(self):
        # Loaded on first need: a trial whose adapters are all cached never pays for it.
        if self._loaded is None:
            self._loaded = load_model(self.settings.base_model, self.settings.device)
        return self._loaded

    @property
    def device(self) -> str:
        return self._loaded.device if self._loaded is not None else resolve_device(self.settings.device)

    def rft_path(self) -> Path:
        """The user's rft.json, or the one rejection sampling makes once for all trials and workers."""
        if self.settings.rft_path is not None:
            return self.settings.rft_path
        if self._rft_path is None:
            effort = self.settings.effort
            rft_settings = RFTSettings(
                questions=effort.rft_questions,
                samples=effort.rft_samples,
                temperature=effort.rft_temperature,
                max_new_tokens=effort.rft_max_new_tokens,
                seed=self.settings.seed,
                # The few-shot prompt written for the built-in level; the homework-like one for the user's data.
                prompt=self.settings.level or "homework",
            )
            lock_spec = self.settings.artifacts / "locks" / "rft-data.lock"
            with file_lock(lock_spec):
                self._rft_path = ensure_rft_data(
                    self.settings.base_model,
                    self.settings.device,
                    self.settings.train_path,
                    rft_settings,
                    cache_root=self.settings.artifacts / "rft",
                    progress=self.progress,
                    loaded=self._loaded,  # the trainers' model when this process has loaded it: no second copy
                )
        return self._rft_path

    def examples(self, kind: str):
        """Training examples for one kind, read once per process."""
        if kind not in self._rows:
            if kind == "sft":
                rows = sft_examples(read_qa(self.settings.train_path))
            else:
                rows = rft_examples(read_rft(self.rft_path()))
            self._rows[kind] = templated(rows, self.settings.prompt_template)
        return self._rows[kind]

    def valid_rows(self):
        if "valid" not in self._rows:
            template = self.settings.prompt_template
            self._rows["valid"] = [QA(render_prompt(template, r.question), r.answer)
                                   for r in read_qa(self.settings.valid_path)]
        return self._rows["valid"]


def adapter_spec(ctx: TrialContext, kind: str, pair: Pair) -> AdapterSpec:
    """The cache identity of one adapter of a pair: its TrainConfig, the base model and its data's hash."""
    s = ctx.settings
    data = s.train_path if kind == "sft" else ctx.rft_path()
    config = TrainConfig(kind=kind, rank=pair.rank(kind), alpha_ratio=pair.alpha_ratio, lr=pair.lr,
                         epochs=pair.epochs, adapter_dtype=pair.adapter_dtype,
                         batch_size=s.effort.batch_size, max_examples=s.effort.max_examples, seed=s.seed)
    data_sha256 = file_hash(data)
    if s.prompt_template != DEFAULT_PROMPT_TEMPLATE:  # the training text is the data put through the template
        data_sha256 = hashlib.sha256(f"{data_sha256}\0{s.prompt_template}".encode()).hexdigest()
    return AdapterSpec(config=config, base_model=s.base_model, data_sha256=data_sha256)


def ensure_adapter(ctx: TrialContext, spec: AdapterSpec, *, progress: bool = True, make=None) -> AdapterResult:
    """Train and grade one adapter unless a verified cache entry (and its grade) already exists.

    `make(folder)` writes the adapter instead of training it (a derived adapter, sweep/strategies.py).
    """
    cache = ctx.cache

    def train(folder: Path) -> None:
        train_adapter(ctx.loaded, ctx.examples(spec.kind), spec.config, folder, progress=progress,
                      metadata={"key": spec.key, "data_sha256": spec.data_sha256})

    # Zipped once when sealed, not in every trial that reuses the adapter (a second for a 40 MB one).
    entry = cache.ensure(spec, make or train, facts=lambda folder: {"zip_bytes": adapter_zip_bytes(spec.kind, folder)})
    folder = cache.adapter_dir(spec)
    grade_seconds = 0.0
    with cache.lock(spec):
        grade = cache.load_grade(spec, ctx.settings.grading_key)
        if grade is None:
            start = time.perf_counter()
            result = grade_model(ctx.loaded, ctx.valid_rows(), kind=spec.kind, adapter_dir=folder,
                                 questions=ctx.settings.effort.questions, progress=progress)
            grade_seconds = time.perf_counter() - start
            grade = result.to_json()
            cache.save_grade(spec, ctx.settings.grading_key, grade)
    return adapter_result(spec, folder, entry, grade, ctx.settings.base_model, grade_seconds=grade_seconds)


def build_pair(ctx: TrialContext, pair: Pair) -> tuple[AdapterResult, AdapterResult]:
    """The pair's SFT and RFT adapters, made the way `settings.strategy` says."""
    if ctx.settings.strategy == "independent":  # each adapter trained on its own, at its own rank
        return (ensure_adapter(ctx, adapter_spec(ctx, "sft", pair), progress=ctx.progress),
                ensure_adapter(ctx, adapter_spec(ctx, "rft", pair), progress=ctx.progress))
    if ctx.settings.strategy in ("shrink", "nested"):  # every rank derived from one training per kind and setting
        return ensure_strategy_adapter(ctx, "sft", pair), ensure_strategy_adapter(ctx, "rft", pair)
    raise RanksweepError(f"Unknown adapter strategy '{ctx.settings.strategy}'.")


def ensure_strategy_adapter(ctx: TrialContext, kind: str, pair: Pair) -> AdapterResult:
    """The AdapterResult of one adapter of a pair, made the way `ctx.settings.strategy` says."""
    settings = ctx.settings
    ranks = settings.space.sft_ranks if kind == "sft" else settings.space.rft_ranks
    spec = spec_for(settings.strategy, adapter_spec(ctx, kind, pair), ranks, settings.recover_steps)
    if not isinstance(spec, DerivedSpec):
        return ensure_adapter(ctx, spec, progress=ctx.progress)
    examples = ctx.examples(kind)
    parent_seconds = ensure_parent(ctx.cache, spec.parent, lambda: ctx.loaded, examples, progress=ctx.progress)
    parent_dir = ctx.cache.adapter_dir(spec.parent)
    result = ensure_adapter(
        ctx, spec, progress=ctx.progress,
        make=lambda folder: derive(spec, parent_dir, folder, ctx.loaded, examples, progress=ctx.progress),
    )
    # train_seconds: the parent's training when this trial ran it; derive_seconds: cutting (and recovering) it.
    return replace(result, origin=spec.origin, parent_key=spec.parent.key, train_seconds=round(parent_seconds, 3),
                   derive_seconds=result.train_seconds)


class RanksweepBuilder:
    """ranksweep's own trainer as the runner's `PairBuilder`: trains (or reuses from the cache) and grades both
    adapters in this process."""

    def __init__(self, settings: StudySettings, *, progress: bool = True):
        self.ctx = TrialContext(settings, ArtifactCache(settings.artifacts), progress=progress)

    def build(self, pair: Pair) -> PairOutcome:
        sft, rft = build_pair(self.ctx, pair)
        return PairOutcome(sft, rft, device=self.ctx.device)
