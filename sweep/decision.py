"""The decision phase: after the search, spend compute only where the recommendation is still open.

While the pick is not decisive over its rivals (sweep/verdict.py) and the budget lasts:
1. grade every live contender on the next round of validation questions (the same questions for all, so the
   comparisons stay paired), then drop each rival the pick beats decisively, or make a rival that beats the
   pick decisively the new pick (racing, as F-race does);
2. when the validation pool is spent, or a gap is within the seed spread, train the live adapters again with
   another seed (an ordinary cache entry: TrainConfig.seed differs) and grade it on every question so far.
It stops when the pick is decisive over every rival, when the pool and the seeds are spent (saying what more
would take), or at the time budget. Each grade lands in the adapter cache before the study's `decision`
record (sweep/evidence.py) counts it, and a rerun skips what is on disk: a kill loses at most the running grade.

The work is done through a `Grader` (grade a question range, train another seed), so the logic runs on planted
grades in tests; `CacheGrader` is the real one, on the study's own model, data and cache.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from sweep.cache import AdapterSpec, ArtifactCache, Manifest
from sweep.evidence import ATTR, DecisionRecord, SeedEntry, extra_grade_path, save_record
from sweep.settings import StudySettings
from sweep.trial import TrialContext, ensure_adapter
from sweep.verdict import Margin, compare, label, rivals
from trainers.data import write_json_atomic
from trainers.grading import grade_model
from trainers.training import TrainConfig

if TYPE_CHECKING:
    import pandas as pd

# The default budget of `decide` and of the phase that `launch` runs after its trials (docs/design.md).
DEFAULT_MINUTES = 30.0
# `launch` runs the phase after its trials for this share of the search's wall time unless --decide-minutes says,
# when that share comes to a minute at least (a search of 7 min or more): below it a round can barely finish.
LAUNCH_SHARE = 0.15
LAUNCH_MIN_MINUTES = 1.0
ROUND_QUESTIONS = 50  # validation questions added per round
MAX_SEEDS = 3  # seeds per adapter, the first training included


@dataclass(frozen=True)
class AdapterRef:
    """One adapter the phase grades: its kind, cache key and folder."""

    kind: str
    key: str
    dir: str


class Grader(Protocol):
    pool: int  # validation questions there are

    def grade(self, adapter: AdapterRef, start: int, end: int) -> None:
        """Grade validation questions start..end-1 and store the grade at `extra_grade_path` (atomically)."""

    def train_seed(self, adapter: AdapterRef, seed: int, graded_to: int) -> SeedEntry:
        """Train the adapter again with `seed` (or reuse the cached one) and grade it on questions 0..graded_to-1."""

    def cannot_reseed(self, adapter: AdapterRef) -> str | None:
        """Why this adapter cannot be trained with another seed, or None."""


@dataclass(frozen=True)
class Outcome:
    """How the phase ended: the pick, its margins, why it stopped, and the record it saved."""

    pick: str
    pick_keys: tuple[str, str]
    margins: list[Margin]
    stopped: str  # one sentence
    record: DecisionRecord


def decide(pairs: pd.DataFrame, best_keys: tuple[str, str], grading_key: str, record: DecisionRecord,
           grader: Grader, *, first_questions: int, minutes: float = DEFAULT_MINUTES,
           round_questions: int = ROUND_QUESTIONS, max_seeds: int = MAX_SEEDS, base_seed: int = 0,
           save: Callable[[DecisionRecord], None] = lambda record: None, sign: int = 1,
           clock: Callable[[], float] = time.monotonic, progress: bool = True) -> Outcome:
    """Run the phase on a study's combined frontier `pairs` from the pick `best_keys`; `first_questions`: the
    questions every adapter was graded on in its trial. `save(record)` is called after every step."""
    from tqdm.auto import tqdm

    start, earlier = clock(), record.seconds
    rows = {(r["sft_key"], r["rft_key"]): r for _, r in pairs.iterrows()}
    pick = rows[best_keys]
    live = rivals(pairs, best_keys, sign)
    graded_to = max(record.questions, first_questions)
    bar = tqdm(desc="deciding", unit="q", total=max(0, grader.pool - graded_to), disable=not progress, leave=False)

    def saved(new: DecisionRecord) -> DecisionRecord:
        new = replace(new, seconds=earlier + clock() - start)
        save(new)
        return new

    stopped = ""
    try:
        while True:
            found = [compare(pick, row, relation, grading_key, record) for row, relation in live]
            # Racing: a rival the pick beats decisively is out; one that beats the pick decisively takes its place.
            beaten = {m.other_keys: m for m in found if m.decisive and m.points.estimate > 0}
            winner = next((m for m in found if m.decisive and m.points.estimate < 0), None)
            if beaten or winner:
                dropped = [f"{m.other}: behind {m.pick} by {m.points.estimate:.1f} points" for m in beaten.values()]
                live = [(r, rel) for r, rel in live if (r["sft_key"], r["rft_key"]) not in beaten]
                if winner is not None:
                    dropped.append(f"{label(pick)}: behind {winner.other} by {-winner.points.estimate:.1f} points")
                    live = [(pick, "former pick"), *((r, rel) for r, rel in live
                                                     if (r["sft_key"], r["rft_key"]) != winner.other_keys)]
                    pick = rows[winner.other_keys]
                record = saved(replace(record, dropped=[*record.dropped, *dropped]))
                continue
            if not live:
                stopped = f"{label(pick)} is decisive over every rival."
                break
            if clock() - start >= minutes * 60:
                stopped = f"stopped at the {minutes:g}-minute budget with {len(live)} rival(s) still open."
                break
            adapters = contenders(pick, live, record)
            seed_noise = any(m.points is not None and m.points.excludes_zero and not m.decisive for m in found)
            if graded_to < grader.pool and not seed_noise:
                end = min(grader.pool, graded_to + round_questions)
                bar.set_postfix(rivals=len(live), adapters=len(adapters))
                for adapter in adapters:
                    if not extra_grade_path(adapter.dir, grading_key, graded_to, end).is_file():  # not before a kill
                        grader.grade(adapter, graded_to, end)
                bar.update(end - graded_to)
                graded_to = end
                record = saved(replace(record, rounds=record.rounds + 1, questions=end))
                continue
            todo = [(a, n) for a in first_seeds(pick, live) if grader.cannot_reseed(a) is None
                    and (n := 1 + len(record.seeds.get(a.key, []))) < max_seeds]
            if not todo:
                why = {grader.cannot_reseed(a) for a in first_seeds(pick, live)} - {None}
                more = sorted({m.more_questions for m in found if m.more_questions is not None})
                if more:
                    need = f"about {more[-1]} more validation questions than the pool holds"
                elif all(m.points is not None and m.points.estimate == 0 for m in found):
                    need = ("a difference that is not there: the pairs score the same points on every question "
                            "graded, so more questions or seeds may never separate them")
                else:
                    need = "more seeds: the gaps are within the seed spread"
                stopped = (f"the validation pool ({grader.pool} questions) and the seeds "
                           f"({max_seeds} per adapter) are spent with {len(live)} rival(s) still open; it would "
                           f"take {need}" + (f" ({'; '.join(sorted(why))})" if why else "") + ".")
                break
            adapter, n = todo[0]
            bar.set_postfix(training=f"{adapter.kind} seed {base_seed + n}")
            entry = grader.train_seed(adapter, base_seed + n, graded_to)
            seeds = {**record.seeds, adapter.key: [*record.seeds.get(adapter.key, []), entry]}
            record = saved(replace(record, seeds=seeds))
    finally:
        bar.close()
    record = saved(replace(record, verdict=stopped, pick=(str(pick["sft_key"]), str(pick["rft_key"]))))
    found = [compare(pick, row, relation, grading_key, record) for row, relation in live]
    return Outcome(label(pick), (pick["sft_key"], pick["rft_key"]), found, stopped, record)


def first_seeds(pick, live) -> list[AdapterRef]:
    """Each distinct adapter of the pick and its live rivals (first seed), in a stable order."""
    seen: dict[str, AdapterRef] = {}
    for row in [pick, *(r for r, _ in live)]:
        for kind in ("sft", "rft"):
            seen.setdefault(row[f"{kind}_key"], AdapterRef(kind, str(row[f"{kind}_key"]), str(row[f"{kind}_dir"])))
    return list(seen.values())


def contenders(pick, live, record: DecisionRecord) -> list[AdapterRef]:
    """Every adapter that grades the next round: each first seed and its other seeds."""
    found = []
    for adapter in first_seeds(pick, live):
        found.append(adapter)
        found += [AdapterRef(adapter.kind, e.key, e.dir) for e in record.seeds.get(adapter.key, [])]
    return found


def after_launch_minutes(study, settings: StudySettings, asked: float | None, search_seconds: float) -> float:
    """The minutes `launch` gives the phase: `asked` (--decide-minutes), else LAUNCH_SHARE of its search time when
    that is LAUNCH_MIN_MINUTES or more; 0 while trials still run elsewhere, or where the trainer is the homework's
    own (its grades keep no outcomes)."""
    from optuna.trial import TrialState

    if settings.trainer != "ranksweep" or asked == 0:
        return 0.0
    if any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
        return 0.0
    if asked is not None:
        return asked
    share = LAUNCH_SHARE * search_seconds / 60
    return share if share >= LAUNCH_MIN_MINUTES else 0.0


def run_decision(study, settings: StudySettings, pairs: pd.DataFrame, best_keys: tuple[str, str], *,
                 minutes: float = DEFAULT_MINUTES, round_questions: int = ROUND_QUESTIONS,
                 max_seeds: int = MAX_SEEDS, sign: int = 1, progress: bool = True) -> Outcome:
    """The phase on a real study: its own model, data and cache; the record saved in its `decision` attr, and
    continued from there (a pick the phase changed earlier stays the starting pick)."""
    record = DecisionRecord.from_attrs(study.user_attrs.get(ATTR))
    grader = CacheGrader(settings, progress=progress)
    keys = {(r["sft_key"], r["rft_key"]) for _, r in pairs.iterrows()}
    start = record.pick if record.pick in keys else best_keys
    first = settings.effort.questions if settings.effort.questions is not None else grader.pool
    return decide(pairs, start, settings.grading_key, record, grader, first_questions=first, minutes=minutes,
                  round_questions=round_questions, max_seeds=max_seeds, base_seed=settings.seed,
                  save=lambda r: save_record(study, r), sign=sign, progress=progress)


class CacheGrader:
    """The real grader: the study's base model and validation file, adapters in its artifact cache."""

    def __init__(self, settings: StudySettings, progress: bool = True):
        self.settings = settings
        self.ctx = TrialContext(settings=settings, cache=ArtifactCache(settings.artifacts), progress=progress)
        self.progress = progress

    @property
    def pool(self) -> int:
        return len(self.ctx.valid_rows())

    def grade(self, adapter: AdapterRef, start: int, end: int) -> None:
        path = extra_grade_path(adapter.dir, self.settings.grading_key, start, end)
        rows = self.ctx.valid_rows()[start:end]
        grade = grade_model(self.ctx.loaded, rows, kind=adapter.kind, adapter_dir=adapter.dir, questions=None,
                            progress=self.progress, first_index=start)
        write_json_atomic(path, grade.to_json())

    def cannot_reseed(self, adapter: AdapterRef) -> str | None:
        if self.settings.trainer != "ranksweep":
            return "adapters made by the homework's own trainer are not retrained here"
        if self.settings.strategy != "independent":
            return f"adapters derived by the '{self.settings.strategy}' strategy are not retrained with other seeds"
        if not (Path(adapter.dir) / "manifest.json").is_file():
            return f"{adapter.dir} is no longer in the cache"
        return None

    def train_seed(self, adapter: AdapterRef, seed: int, graded_to: int) -> SeedEntry:
        recorded = Manifest.from_json(json.loads((Path(adapter.dir) / "manifest.json").read_text())).spec
        config = TrainConfig(**{k: v for k, v in recorded.items() if k in TrainConfig.__dataclass_fields__})
        spec = AdapterSpec(config=replace(config, seed=seed), base_model=recorded["base_model"],
                           data_sha256=recorded["data_sha256"])
        made = ensure_adapter(self.ctx, spec, progress=self.progress)  # trains it and grades the first questions
        entry = SeedEntry(seed, spec.key, made.dir)
        first = made.questions or 0
        if graded_to > first:
            self.grade(AdapterRef(adapter.kind, spec.key, made.dir), first, graded_to)
        return entry
