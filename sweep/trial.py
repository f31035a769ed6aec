"""One trial: make sure both adapters of a pair are trained and graded (from the cache when possible),
then measure the pair's zipped size and compute its objective."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sweep import bundle
from sweep.cache import AdapterSpec, ArtifactCache, file_lock
from sweep.settings import StudySettings, _sha256
from trainers.errors import RanksweepError


@dataclass
class AdapterOutcome:
    """What one adapter of a trial cost and scored."""

    spec: AdapterSpec
    folder: Path
    grade: dict  # trainers.grading.Grade.to_json()
    train_seconds: float
    grade_seconds: float
    cache_hit: bool
    raw_bytes: int
    zip_bytes: int


@dataclass
class TrialContext:
    """State shared by all trials of one process: settings, cache, and the lazily loaded base model."""

    settings: StudySettings
    cache: ArtifactCache
    _loaded: object = None
    _rft_path: Path | None = None
    _rows: dict = field(default_factory=dict)

    @property
    def loaded(self):
        # Loaded on first need: a trial whose adapters are all cached never pays for it.
        if self._loaded is None:
            from trainers.models import load_model

            self._loaded = load_model(self.settings.base_model, self.settings.device)
        return self._loaded

    @property
    def device(self) -> str:
        from trainers.models import resolve_device

        return self._loaded.device if self._loaded is not None else resolve_device(self.settings.device)

    def rft_path(self) -> Path:
        """The user's rft.json, or the one rejection sampling makes once for all trials and workers."""
        if self.settings.rft_path is not None:
            return self.settings.rft_path
        if self._rft_path is None:
            from trainers.rft_data import RFTSettings, ensure_rft_data

            effort = self.settings.effort
            rft_settings = RFTSettings(
                questions=effort.rft_questions,
                samples=effort.rft_samples,
                temperature=effort.rft_temperature,
                seed=self.settings.seed,
            )
            lock_spec = self.settings.artifacts / "locks" / "rft-data.lock"
            with file_lock(lock_spec):
                self._rft_path = ensure_rft_data(
                    self.settings.base_model,
                    self.settings.device,
                    self.settings.train_path,
                    rft_settings,
                    cache_root=self.settings.artifacts / "rft",
                )
        return self._rft_path

    def examples(self, kind: str):
        """Training examples for one kind, read once per process."""
        if kind not in self._rows:
            from trainers.data import read_qa, read_rft
            from trainers.training import rft_examples, sft_examples

            if kind == "sft":
                self._rows[kind] = sft_examples(read_qa(self.settings.train_path))
            else:
                self._rows[kind] = rft_examples(read_rft(self.rft_path()))
        return self._rows[kind]

    def valid_rows(self):
        if "valid" not in self._rows:
            from trainers.data import read_qa

            self._rows["valid"] = read_qa(self.settings.valid_path)
        return self._rows["valid"]


def adapter_spec(ctx: TrialContext, kind: str, params: dict) -> AdapterSpec:
    s = ctx.settings
    data = s.train_path if kind == "sft" else ctx.rft_path()
    return AdapterSpec(
        kind=kind,
        rank=params[f"{kind}_rank"],
        alpha_ratio=params["alpha_ratio"],
        lr=params["lr"],
        epochs=params["epochs"],
        adapter_dtype=params["adapter_dtype"],
        batch_size=s.effort.batch_size,
        max_examples=s.effort.max_examples,
        seed=s.seed,
        base_model=s.base_model,
        data_sha256=_sha256(data),
    )


def ensure_adapter(ctx: TrialContext, spec: AdapterSpec, *, progress: bool = True) -> AdapterOutcome:
    """Train and grade one adapter unless a verified cache entry (and its grade) already exists."""
    from trainers.grading import grade_model
    from trainers.training import TrainConfig, train_adapter

    cache = ctx.cache
    folder = cache.adapter_dir(spec)
    train_seconds = grade_seconds = 0.0
    with cache.lock(spec):
        manifest = cache.verify(spec)
        cache_hit = manifest is not None
        if not cache_hit:
            config = TrainConfig.from_attrs(spec)
            start = time.perf_counter()
            train_adapter(ctx.loaded, ctx.examples(spec.kind), config, folder, progress=progress,
                          metadata={"key": spec.key, "data_sha256": spec.data_sha256})
            train_seconds = time.perf_counter() - start
            # Zipped once here, not in every trial that reuses the adapter (a second for a 40 MB one).
            manifest = cache.seal(spec, zip_bytes=_zip_bytes(spec.kind, folder))
        grade = cache.load_grade(spec, ctx.settings.grading_key)
        if grade is None:
            start = time.perf_counter()
            result = grade_model(ctx.loaded, ctx.valid_rows(), kind=spec.kind, adapter_dir=folder,
                                 questions=ctx.settings.effort.questions, progress=progress)
            grade_seconds = time.perf_counter() - start
            grade = result.to_json()
            cache.save_grade(spec, ctx.settings.grading_key, grade)
    raw_bytes = (folder / "adapter_model.safetensors").stat().st_size
    zip_bytes = manifest.get("zip_bytes") or _zip_bytes(spec.kind, folder)  # entries sealed without it
    return AdapterOutcome(spec, folder, grade, train_seconds, grade_seconds, cache_hit, raw_bytes, zip_bytes)


def _zip_bytes(kind: str, folder: Path) -> int:
    """The adapter folder zipped alone, under the arcnames it has in the submission (homework/<kind>_model/)."""
    return bundle.submission_bytes(None, **{f"{kind}_dir": folder})


def objective_value(objective: str, sft: dict, rft: dict) -> float:
    """The value a study maximises; points are tie-broken by mean accuracy (they are flat at 0 below
    40% SFT / 60% RFT accuracy, and a study must still climb there)."""
    mean_accuracy = (sft["accuracy"] + rft["accuracy"]) / 2
    if objective == "points":
        return sft["points"] + rft["points"] + mean_accuracy / 100
    if objective == "sft-accuracy":
        return sft["accuracy"]
    if objective == "rft-accuracy":
        return rft["accuracy"]
    if objective == "mean-accuracy":
        return mean_accuracy
    raise RanksweepError(f"Unknown objective '{objective}'.")


def trial_attrs(ctx: TrialContext, sft: AdapterOutcome, rft: AdapterOutcome, predicted) -> tuple[dict, float, int]:
    """The pair's zipped size (measured parts: the homework's rest, then each adapter) and the trial's user
    attrs (schema in docs/design.md)."""
    settings = ctx.settings
    size_bytes = bundle.combined_bytes(predicted.rest_bytes, sft.zip_bytes, rft.zip_bytes)
    score = objective_value(settings.objective, sft.grade, rft.grade)
    attrs = {
        "adapter_dtype": sft.spec.adapter_dtype,
        "size_bytes_predicted": predicted.total_compressed_bytes,
        "size_bytes": size_bytes,
        "budget_bytes": settings.budget_bytes,
        "feasible": size_bytes <= settings.budget_bytes,
        "points": sft.grade["points"] + rft.grade["points"],
        "mean_accuracy": (sft.grade["accuracy"] + rft.grade["accuracy"]) / 2,
        "score": score,
        "device": ctx.device,
    }
    for kind, outcome, size in (("sft", sft, predicted.sft), ("rft", rft, predicted.rft)):
        g = outcome.grade
        attrs.update({
            f"{kind}_rank": outcome.spec.rank,
            f"{kind}_alpha": outcome.spec.alpha,
            f"{kind}_lr": outcome.spec.lr,
            f"{kind}_epochs": outcome.spec.epochs,
            f"{kind}_params": size.params,
            f"{kind}_raw_bytes_predicted": size.raw_bytes,
            f"{kind}_raw_bytes": outcome.raw_bytes,
            f"{kind}_zip_bytes": outcome.zip_bytes,
            f"{kind}_accuracy": g["accuracy"],
            f"{kind}_ci_low": g["ci_low"],
            f"{kind}_ci_high": g["ci_high"],
            f"{kind}_answer_rate": g["answer_rate"],
            f"{kind}_questions": g["questions"],
            f"{kind}_points": g["points"],
            f"{kind}_train_seconds": round(outcome.train_seconds, 3),
            f"{kind}_grade_seconds": round(outcome.grade_seconds, 3),
            f"{kind}_cache_hit": outcome.cache_hit,
            f"{kind}_key": outcome.spec.key,
            f"{kind}_dir": str(outcome.folder.resolve()),
        })
    return attrs, score, size_bytes
