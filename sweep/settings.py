"""The resolved configuration of one study run, built once at the CLI edge and passed inward."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sweep.space import Effort, SearchSpace
from trainers.data import file_sha256

# Bump when grading changes in a way that changes results, so cached grades are not reused.
GRADER_VERSION = 1


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
    prompt_template: str = "{question}"  # the text adapters are trained and graded on (trainers/prompts.py)
    level: str | None = None  # the built-in data level (trainers/unitgen.py); None: the user's own data

    @property
    def grading_key(self) -> str:
        """Identifies a grading setting: the validation file, how many questions, the grader version."""
        template = [] if self.prompt_template == "{question}" else [self.prompt_template]  # old keys stay valid
        blob = json.dumps([file_hash(self.valid_path), self.effort.questions, GRADER_VERSION, *template])
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def identity(self) -> dict:
        """What makes results comparable: resuming with other values is refused unless --force."""
        return {
            "base_model": self.base_model,
            "train_sha256": file_hash(self.train_path),
            "valid_sha256": file_hash(self.valid_path),
            "rft_sha256": file_hash(self.rft_path) if self.rft_path else None,
            "level": self.level,
        }

    def to_config(self, homework_rest_bytes: int) -> dict:
        """The study's `config` user attr (schema in docs/design.md)."""
        return {
            **self.identity(),
            "budget_bytes": self.budget_bytes,
            "objective": self.objective,
            **_space_config(self.space),
            "effort": asdict(self.effort),
            "questions": self.effort.questions,
            "trials": self.trials,
            "seed": self.seed,
            "preset": self.preset,
            "artifacts": str(self.artifacts.resolve()),
            "train_path": str(self.train_path.resolve()),
            "valid_path": str(self.valid_path.resolve()),
            "rft_path": str(self.rft_path.resolve()) if self.rft_path else None,
            "homework": str(self.homework.resolve()) if self.homework else None,
            "homework_rest_bytes": homework_rest_bytes,
            "trainer": self.trainer,
            "strategy": self.strategy,
            "recover_steps": self.recover_steps,
            "prompt_template": self.prompt_template,
        }

    def effort_changes(self, config: dict) -> list[str]:
        """How this run would train or grade differently from a stored config ("--questions 4, now 6", ...):
        one study's adapters must all be trained and graded alike, so a resume refuses any of these."""
        stored = {**config.get("effort", {}), **{k: config[k] for k in _HOW if k in config}}
        wanted = {**asdict(self.effort), **{k: getattr(self, k) for k in _HOW}}
        return [f"{_FLAGS.get(k, k)} {_shown(stored[k])}, now {_shown(v)}" for k, v in wanted.items()
                if k in stored and stored[k] != v]

    def space_changes(self, config: dict) -> list[str]:
        """The search-space fields (`sft_ranks`, ...) whose values differ from a stored config's."""
        return [k for k, v in _space_config(self.space).items() if k in config and list(config[k]) != v]


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


def file_hash(path: Path) -> str:
    """`trainers.data.file_sha256`, memoised on (path, mtime) because the study asks for it on every trial."""
    memo_key = (str(Path(path).resolve()), Path(path).stat().st_mtime)
    if memo_key not in _hash_memo:
        _hash_memo[memo_key] = file_sha256(path)
    return _hash_memo[memo_key]


def settings_from_config(config: dict, *, name: str, storage: str, device: str, artifacts: Path | None) -> StudySettings:
    """Rebuild a study's settings from its stored config (how `worker` joins a study)."""
    effort = Effort(**{k: v for k, v in config["effort"].items() if k in Effort.__dataclass_fields__})
    space = SearchSpace(
        sft_ranks=tuple(config["sft_ranks"]),
        rft_ranks=tuple(config["rft_ranks"]),
        alpha_ratios=tuple(config["alpha_ratios"]),
        lrs=tuple(config["lrs"]),
        epochs=tuple(config["epochs"]),
        adapter_dtypes=tuple(config["adapter_dtypes"]),
    )
    return StudySettings(
        name=name,
        storage=storage,
        base_model=config["base_model"],
        device=device,
        objective=config["objective"],
        budget_bytes=config["budget_bytes"],
        space=space,
        effort=effort,
        trials=config["trials"],
        seed=config["seed"],
        preset=config["preset"],
        artifacts=artifacts or Path(config["artifacts"]),
        train_path=Path(config["train_path"]),
        valid_path=Path(config["valid_path"]),
        rft_path=Path(config["rft_path"]) if config.get("rft_path") else None,
        homework=Path(config["homework"]) if config.get("homework") else None,
        trainer=config.get("trainer", "ranksweep"),  # configs stored before these two fields: the defaults
        strategy=config.get("strategy", "independent"),
        recover_steps=config.get("recover_steps", 0),
        prompt_template=config.get("prompt_template", "{question}"),
        level=config.get("level"),
    )
