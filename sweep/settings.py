"""The resolved configuration of one study run, built once at the CLI edge and passed inward."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from pathlib import Path

from sweep.space import Effort, SearchSpace
from trainers.data import file_sha256
from trainers.prompts import DEFAULT_PROMPT_TEMPLATE

# Bump when grading changes in a way that changes results, so cached grades are not reused.
GRADER_VERSION = 1


@dataclass(frozen=True)
class StudyConfig:
    """The study's `config` user attr (schema in docs/design.md): what `launch` resolved, stored once per study.

    The only code that spells its keys: `open_study` and `worker` write `to_attrs()`, every reader takes
    `from_attrs()`. A field is None where the stored dict lacks the key (studies of older versions, configs
    written by hand); keys this version does not know are kept in `extra` and written back unchanged."""

    base_model: str | None = None
    train_sha256: str | None = None
    valid_sha256: str | None = None
    rft_sha256: str | None = None
    level: str | None = None
    budget_bytes: int | None = None
    objective: str | None = None
    sft_ranks: list | None = None
    rft_ranks: list | None = None
    alpha_ratios: list | None = None
    lrs: list | None = None
    epochs: list | None = None
    adapter_dtypes: list | None = None
    effort: dict | None = None  # the fields of sweep.space.Effort
    questions: int | None = None
    trials: int | None = None
    seed: int | None = None
    preset: str | None = None
    artifacts: str | None = None
    train_path: str | None = None
    valid_path: str | None = None
    rft_path: str | None = None
    homework: str | None = None
    homework_rest_bytes: int | None = None
    trainer: str | None = None
    strategy: str | None = None
    recover_steps: int | None = None
    prompt_template: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_attrs(self) -> dict[str, Any]:
        """The JSON dict stored as the study's `config` (every field, then the unknown keys)."""
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}, **self.extra}

    @classmethod
    def from_attrs(cls, raw: dict[str, Any]) -> StudyConfig:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in raw.items() if k in known},
                   extra={k: v for k, v in raw.items() if k not in known})


@dataclass(frozen=True)
class StudySettings:
    name: str
    storage: str
    base_model: str
    device: str
    objective: str
    budget_bytes: int
    space: SearchSpace
    effort: Effort
    trials: int
    seed: int
    preset: str
    artifacts: Path
    train_path: Path
    valid_path: Path
    rft_path: Path | None  # the user's rft.json; None: generate it by rejection sampling
    homework: Path | None  # counted in the zipped size when given
    trainer: str = "ranksweep"  # what makes a trial's two adapters (sweep.commands.running.builder_for)
    strategy: str = "independent"  # how the built-in trainer makes them (sweep.trial.build_pair)
    recover_steps: int = 0  # strategy "shrink": training steps at the target rank after the cut (sweep/strategies.py)
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE  # the text adapters are trained and graded on (trainers/prompts.py)
    level: str | None = None  # the built-in data level (trainers/unitgen.py); None: the user's own data

    @property
    def grading_key(self) -> str:
        """Identifies a grading setting: the validation file, how many questions, the grader version."""
        return grading_key(file_hash(self.valid_path), self.effort.questions, self.prompt_template)

    def identity(self) -> dict:
        """What makes results comparable: resuming with other values is refused unless --force."""
        return {
            "base_model": self.base_model,
            "train_sha256": file_hash(self.train_path),
            "valid_sha256": file_hash(self.valid_path),
            "rft_sha256": file_hash(self.rft_path) if self.rft_path else None,
            "level": self.level,
        }

    def study_config(self, homework_rest_bytes: int) -> StudyConfig:
        """The study's stored config for these settings."""
        return StudyConfig(
            **self.identity(),
            budget_bytes=self.budget_bytes,
            objective=self.objective,
            **_space_config(self.space),
            effort=asdict(self.effort),
            questions=self.effort.questions,
            trials=self.trials,
            seed=self.seed,
            preset=self.preset,
            artifacts=str(self.artifacts.resolve()),
            train_path=str(self.train_path.resolve()),
            valid_path=str(self.valid_path.resolve()),
            rft_path=str(self.rft_path.resolve()) if self.rft_path else None,
            homework=str(self.homework.resolve()) if self.homework else None,
            homework_rest_bytes=homework_rest_bytes,
            trainer=self.trainer,
            strategy=self.strategy,
            recover_steps=self.recover_steps,
            prompt_template=self.prompt_template,
        )

    def identity_changes(self, config: StudyConfig) -> list[str]:
        """The identity fields (model, data hashes, level) whose values differ from a stored config's."""
        return [k for k, v in self.identity().items() if getattr(config, k) != v]

    def effort_changes(self, config: StudyConfig) -> list[str]:
        """How this run would train or grade differently from a stored config ("--questions 4, now 6", ...):
        one study's adapters must all be trained and graded alike, so a resume refuses any of these."""
        stored = {**(config.effort or {}), **{k: getattr(config, k) for k in _HOW if getattr(config, k) is not None}}
        wanted = {**asdict(self.effort), **{k: getattr(self, k) for k in _HOW}}
        return [f"{_FLAGS.get(k, k)} {_shown(stored[k])}, now {_shown(v)}" for k, v in wanted.items()
                if k in stored and stored[k] != v]

    def space_changes(self, config: StudyConfig) -> list[str]:
        """The search-space fields (`sft_ranks`, ...) whose values differ from a stored config's."""
        return [k for k, v in _space_config(self.space).items()
                if getattr(config, k) is not None and list(getattr(config, k)) != v]


# How a study's adapters are made, beside its Effort; the flag that sets each (Effort fields without a flag are
# named by field: a preset sets them).
_HOW = ("trainer", "strategy", "recover_steps", "prompt_template")
_FLAGS = {"max_examples": "--max-examples", "questions": "--questions", "batch_size": "--batch-size",
          "rft_questions": "--rft-questions", "rft_samples": "--rft-samples", "trainer": "--trainer",
          "strategy": "--strategy", "recover_steps": "--recover-steps", "prompt_template": "--prompt-template"}


def _shown(value) -> str:
    return "all" if value is None else repr(value) if isinstance(value, str) else str(value)


def _space_config(space: SearchSpace) -> dict:
    return {"sft_ranks": list(space.sft_ranks), "rft_ranks": list(space.rft_ranks),
            "alpha_ratios": list(space.alpha_ratios), "lrs": list(space.lrs), "epochs": list(space.epochs),
            "adapter_dtypes": list(space.adapter_dtypes)}


_hash_memo: dict[tuple[str, float], str] = {}


def grading_key(valid_sha256: str, questions: int | None, prompt_template: str = DEFAULT_PROMPT_TEMPLATE) -> str:
    """The cache name of a grading setting (`grade-<key>.json`): validation file hash, questions, grader version,
    and the prompt template where it is not the plain question (so old keys stay valid)."""
    template = [] if prompt_template == DEFAULT_PROMPT_TEMPLATE else [prompt_template]
    blob = json.dumps([valid_sha256, questions, GRADER_VERSION, *template])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def config_grading_key(config: StudyConfig) -> str | None:
    """The grading key of a study from its config; None for a config without the validation file's hash."""
    if not config.valid_sha256:
        return None
    return grading_key(config.valid_sha256, config.questions, config.prompt_template or DEFAULT_PROMPT_TEMPLATE)


def file_hash(path: Path) -> str:
    """`trainers.data.file_sha256`, memoised on (path, mtime) because the study asks for it on every trial."""
    memo_key = (str(Path(path).resolve()), Path(path).stat().st_mtime)
    if memo_key not in _hash_memo:
        _hash_memo[memo_key] = file_sha256(path)
    return _hash_memo[memo_key]


def settings_from_config(config: StudyConfig, *, name: str, storage: str, device: str,
                         artifacts: Path | None) -> StudySettings:
    """Rebuild a study's settings from its stored config (how `worker` joins a study)."""
    effort = Effort(**{k: v for k, v in config.effort.items() if k in Effort.__dataclass_fields__})
    space = SearchSpace(
        sft_ranks=tuple(config.sft_ranks),
        rft_ranks=tuple(config.rft_ranks),
        alpha_ratios=tuple(config.alpha_ratios),
        lrs=tuple(config.lrs),
        epochs=tuple(config.epochs),
        adapter_dtypes=tuple(config.adapter_dtypes),
    )
    defaults = StudySettings.__dataclass_fields__  # configs stored before these fields: the defaults
    return StudySettings(
        name=name,
        storage=storage,
        base_model=config.base_model,
        device=device,
        objective=config.objective,
        budget_bytes=config.budget_bytes,
        space=space,
        effort=effort,
        trials=config.trials,
        seed=config.seed,
        preset=config.preset,
        artifacts=artifacts or Path(config.artifacts),
        train_path=Path(config.train_path),
        valid_path=Path(config.valid_path),
        rft_path=Path(config.rft_path) if config.rft_path else None,
        homework=Path(config.homework) if config.homework else None,
        **{k: getattr(config, k) if getattr(config, k) is not None else defaults[k].default
           for k in ("trainer", "strategy", "recover_steps", "prompt_template", "level")},
    )
