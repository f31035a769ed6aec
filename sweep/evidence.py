"""Where evidence gathered after a trial lives, and how it is read back.

Optuna keeps a finished trial's values fixed, so the first grade (in the trial's attrs) is only the first pass:
- per-question outcomes stay with the grades in the adapter cache: `grade-<key>.json` (the study's grading)
  and `grade-<key>+q<start>-<end>.json` (validation questions start..end-1 graded later by the decision phase);
- adapters trained again with another seed are ordinary cache entries (their TrainConfig's seed differs); which
  adapter they repeat, and what the decision phase concluded, is the study's `decision` user attr
  (`DecisionRecord`).
Reports read evidence through this module (Optuna only where the record is loaded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sweep.storage import open_storage
from trainers.outcomes import QuestionOutcome, merge_outcomes, outcomes_from_json

ATTR = "decision"  # the study user attr holding the DecisionRecord


def extra_grading_key(grading_key: str, start: int, end: int) -> str:
    """The grading key of validation questions start..end-1 graded after the trial (a `grade-<key>.json` name)."""
    return f"{grading_key}+q{start}-{end}"


def extra_grade_path(adapter_dir: str | Path, grading_key: str, start: int, end: int) -> Path:
    """Where the outcomes of validation questions start..end-1, graded after the trial, are stored."""
    return Path(adapter_dir) / f"grade-{extra_grading_key(grading_key, start, end)}.json"


def adapter_outcomes(adapter_dir: str | Path, grading_key: str) -> tuple[QuestionOutcome, ...] | None:
    """Every per-question outcome recorded for one adapter under a grading setting (its first grade and the
    questions added later), or None when its grade kept no outcomes (graded before they were recorded)."""
    folder = Path(adapter_dir)
    groups = []
    for path in [folder / f"grade-{grading_key}.json", *sorted(folder.glob(f"grade-{grading_key}+q*.json"))]:
        try:
            found = outcomes_from_json(json.loads(path.read_text()).get("outcomes"))
        except (OSError, ValueError, AttributeError):
            continue
        if found is not None:
            groups.append(found)
    return merge_outcomes(*groups) if groups else None


@dataclass(frozen=True)
class SeedEntry:
    """An adapter trained again with another seed: the seed, its cache key and folder."""

    seed: int
    key: str
    dir: str


@dataclass(frozen=True)
class DecisionRecord:
    """What the decision phase gathered and concluded (study user attr `decision`)."""

    seeds: dict[str, list[SeedEntry]] = field(default_factory=dict)  # first adapter's key -> its other seeds
    rounds: int = 0
    questions: int = 0  # validation questions the contenders have been graded on
    dropped: list[str] = field(default_factory=list)  # "sft=2/rft=4: behind the pick (…)"
    verdict: str | None = None  # the last stop sentence
    seconds: float = 0.0  # wall time spent in the decision phase, all runs together
    pick: tuple[str, str] | None = None  # (sft_key, rft_key) of the pick when the phase last stopped

    def to_attrs(self) -> dict:
        return {"seeds": {k: [vars(e) for e in v] for k, v in self.seeds.items()}, "rounds": self.rounds,
                "questions": self.questions, "dropped": list(self.dropped), "verdict": self.verdict,
                "seconds": round(self.seconds, 3), "pick": list(self.pick) if self.pick else None}

    @classmethod
    def from_attrs(cls, attrs) -> DecisionRecord:
        """The record a study holds; an empty one for a study the decision phase never ran on."""
        if not isinstance(attrs, dict):
            return cls()
        seeds = {k: [SeedEntry(int(e["seed"]), str(e["key"]), str(e["dir"])) for e in v]
                 for k, v in (attrs.get("seeds") or {}).items()}
        return cls(seeds=seeds, rounds=int(attrs.get("rounds") or 0), questions=int(attrs.get("questions") or 0),
                   dropped=list(attrs.get("dropped") or []), verdict=attrs.get("verdict"),
                   seconds=float(attrs.get("seconds") or 0.0),
                   pick=tuple(attrs["pick"]) if attrs.get("pick") else None)

    def seed_dirs(self, key: str) -> list[str]:
        return [e.dir for e in self.seeds.get(key, [])]


def seeds_outcomes(adapter_dir: str, key: str, grading_key: str, record: DecisionRecord
                   ) -> tuple[tuple[QuestionOutcome, ...], ...]:
    """One outcome tuple per seed of an adapter (its first training, then the decision phase's other seeds),
    leaving out any seed graded without outcomes."""
    found = [adapter_outcomes(d, grading_key) for d in [adapter_dir, *record.seed_dirs(key)]]
    return tuple(f for f in found if f)


def load_record(storage, study_name: str) -> DecisionRecord:
    """The study's decision record (empty when the decision phase never ran on it)."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    return DecisionRecord.from_attrs(study.user_attrs.get(ATTR))


def save_record(study, record: DecisionRecord) -> None:
    """Store the record as the study's `decision` user attr (one write)."""
    study.set_user_attr(ATTR, record.to_attrs())
