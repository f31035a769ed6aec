"""Is the recommended pair really better? Its paired margins over the pairs a student would weigh against it.

The pick is compared with the next-best feasible pair and with every smaller feasible pair whose points
interval (Wilson bounds, as the frontier table shows them) reaches the pick's: each comparison is a paired
points difference on the questions both pairs were graded on (sweep/paired.py) and a verdict in words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sweep.evidence import DecisionRecord, adapter_outcomes, seeds_outcomes
from sweep.paired import (Difference, PairEvidence, accuracy_difference, aligned, common_questions, nll_difference,
                          points_difference)
from sweep.sizing import MIB
from trainers.grading import points as homework_points

if TYPE_CHECKING:
    import pandas as pd

NEXT_BEST, SMALLER = "next best", "smaller, interval overlaps"


def _points(x: float) -> str:
    """Points to one decimal, or two where one would show a bound that excludes 0 as 0.0."""
    return f"{x:.2f}" if 0 < abs(x) < 0.05 else f"{x:.1f}"


def label(row) -> str:
    return f"SFT {int(row['sft_rank'])} / RFT {int(row['rft_rank'])}"


@dataclass(frozen=True)
class Margin:
    """The pick against one other pair: points difference (pick minus other), answer-NLL difference, cost."""

    pick: str
    other: str
    other_keys: tuple[str, str]  # (sft_key, rft_key)
    relation: str  # NEXT_BEST or SMALLER
    extra_bytes: int  # the pick's zipped size minus the other's
    points: Difference | None  # None: a grade of the four adapters kept no per-question outcomes
    nll: Difference | None  # pair answer NLL, pick minus other (nats per token; negative favours the pick)
    more_questions: int | None = None  # questions that would likely make it decisive (None: decisive, or unknown)
    more_minutes: float | None = None

    @property
    def decisive(self) -> bool:
        return self.points is not None and self.points.decisive

    def sentence(self) -> str:
        """The margin in words a student can act on."""
        size = abs(self.extra_bytes) / MIB
        cost = f"for {size:.1f} MiB {'more' if self.extra_bytes >= 0 else 'less'}"
        if self.points is None:
            return (f"{self.pick} against {self.other}: no paired comparison (a grade of these adapters kept no "
                    "per-question outcomes: graded before ranksweep kept them, or by a homework benchmark that "
                    "reports totals only)")
        d = self.points
        verb = "beats" if d.estimate > 0 else ("ties with" if d.estimate == 0 else "trails")
        by = f" by {abs(d.estimate):.1f} points" if d.estimate else ""
        text = (f"{self.pick} {verb} {self.other}{by} (95% paired interval {_points(d.low)} to {_points(d.high)}, "
                f"{d.questions} questions) {cost}")
        if self.decisive:
            return text + ": decisive"
        why = []
        if not d.excludes_zero:
            why.append("the interval includes 0")
        if d.seed_spread is not None and abs(d.estimate) <= d.seed_spread:
            why.append(f"the difference is within the seed spread ({d.seed_spread:.1f} points)")
        if self.nll is not None and self.nll.excludes_zero and d.estimate == 0:
            side = "lower" if self.nll.estimate < 0 else "higher"
            why.append(f"the pick's answer NLL is {side} by {abs(self.nll.estimate):.3f} nats "
                       f"(95% paired interval {self.nll.low:.3f} to {self.nll.high:.3f}), which breaks the tie")
        if self.more_questions is not None:
            minutes = "" if self.more_minutes is None else (" would take under a minute" if self.more_minutes < 1
                                                            else f" would take about {self.more_minutes:.0f} min")
            why.append(f"grading about {self.more_questions} more questions{minutes}")
        elif d.estimate == 0:
            why.append("more questions may never separate them")
        return text + ": not decisive: " + "; ".join(why)

    def to_dict(self) -> dict:
        return {"pick": self.pick, "other": self.other, "relation": self.relation, "extra_bytes": self.extra_bytes,
                "points": None if self.points is None else self.points.to_dict(),
                "nll": None if self.nll is None else self.nll.to_dict(), "decisive": self.decisive,
                "more_questions": self.more_questions, "more_minutes": self.more_minutes,
                "sentence": self.sentence()}


def evidence_of(row, grading_key: str, record: DecisionRecord) -> PairEvidence:
    """A pair's per-question outcomes (every seed of both adapters) from the adapter cache."""
    return PairEvidence(sft=seeds_outcomes(str(row["sft_dir"]), str(row["sft_key"]), grading_key, record),
                        rft=seeds_outcomes(str(row["rft_dir"]), str(row["rft_key"]), grading_key, record))


def pair_nll_difference(first: PairEvidence, second: PairEvidence) -> Difference | None:
    """The pair answer NLL (mean of its adapters', first seed) of `first` minus `second`: per-kind paired
    differences averaged, their standard errors added in quadrature; None where an NLL is missing."""
    parts = []
    for kind in ("sft", "rft"):
        a, b = first.seeds(kind)[0], second.seeds(kind)[0]
        asked = common_questions(a, b)
        a_nll, b_nll = [o.nll for o in aligned(a, asked)], [o.nll for o in aligned(b, asked)]
        if not asked or None in a_nll or None in b_nll:
            return None
        parts.append(nll_difference(a_nll, b_nll))
    estimate = sum(p.estimate for p in parts) / 2
    half = math.sqrt(sum(((p.high - p.low) / 2) ** 2 for p in parts)) / 2
    return Difference(estimate, estimate - half, estimate + half, min(p.questions for p in parts), "paired normal")


def questions_to_decide(diff: Difference) -> int | None:
    """About how many more questions would shrink the interval below the difference (the half-width falls as
    1/sqrt(n)); None when there is no difference to resolve or it is decisive already."""
    if diff.decisive or diff.estimate == 0 or diff.questions == 0 or not math.isfinite(diff.high - diff.low):
        return None
    if diff.seed_spread is not None and abs(diff.estimate) <= diff.seed_spread:
        return None  # more questions do not shrink seed noise
    half = (diff.high - diff.low) / 2
    needed = diff.questions * (half / abs(diff.estimate)) ** 2
    return max(10, int(math.ceil((needed - diff.questions) / 10.0)) * 10)


def compare(best, other, relation: str, grading_key: str, record: DecisionRecord,
            seconds_per_question: dict[str, float] | None = None, *, seed: int = 0) -> Margin:
    """One margin of the pick `best` over `other` (rows of the combined frontier table)."""
    mine, theirs = evidence_of(best, grading_key, record), evidence_of(other, grading_key, record)
    points = nll = None
    if mine.graded and theirs.graded:
        points = points_difference(mine, theirs, seed=seed)
        nll = pair_nll_difference(mine, theirs)
    more = questions_to_decide(points) if points is not None else None
    minutes = None
    if more is not None and seconds_per_question:
        # Every distinct adapter of the two pairs grades the extra questions.
        adapters = {("sft", best["sft_key"]), ("rft", best["rft_key"]), ("sft", other["sft_key"]),
                    ("rft", other["rft_key"])}
        minutes = sum(more * seconds_per_question.get(kind, 0.0) for kind, _ in adapters) / 60
    return Margin(pick=label(best), other=label(other), other_keys=(str(other["sft_key"]), str(other["rft_key"])),
                  relation=relation, extra_bytes=int(best["size_bytes"]) - int(other["size_bytes"]), points=points,
                  nll=nll, more_questions=more, more_minutes=minutes)


def rivals(pairs: pd.DataFrame, best_keys: tuple[str, str], sign: int = 1) -> list[tuple[object, str]]:
    """The pairs the pick is weighed against: the next-best feasible pair by the objective (`sign` -1 when lower
    is better), then every smaller feasible pair whose points interval reaches the pick's (rows, relation)."""
    feasible = pairs[pairs["feasible"].astype(bool) & pairs["objective"].notna()]
    feasible = feasible.assign(quality=sign * feasible["objective"])
    is_best = (feasible["sft_key"] == best_keys[0]) & (feasible["rft_key"] == best_keys[1])
    if not is_best.any():
        return []
    best = feasible[is_best].iloc[0]
    others = feasible[~is_best]
    others = others.sort_values(["quality", "size_bytes"], ascending=[False, True])
    found: list[tuple[object, str]] = []
    if not others.empty:
        found.append((others.iloc[0], NEXT_BEST))
    smaller = others[(others["size_bytes"] < best["size_bytes"]) & (others["points_high"] >= best["points_low"])]
    for _, row in smaller.sort_values("size_bytes").iterrows():
        if not found or (row["sft_key"], row["rft_key"]) != (found[0][0]["sft_key"], found[0][0]["rft_key"]):
            found.append((row, SMALLER))
    return found


def margins(pairs: pd.DataFrame, best_keys: tuple[str, str], grading_key: str | None, record: DecisionRecord,
            seconds_per_question: dict[str, float] | None = None, sign: int = 1) -> list[Margin]:
    """The pick's margin over each of its `rivals`, in that order; empty without a grading key."""
    if grading_key is None:
        return []
    feasible = pairs[(pairs["sft_key"] == best_keys[0]) & (pairs["rft_key"] == best_keys[1])]
    if feasible.empty:
        return []
    best = feasible.iloc[0]
    return [compare(best, row, relation, grading_key, record, seconds_per_question)
            for row, relation in rivals(pairs, best_keys, sign)]


def seconds_per_question(trials: pd.DataFrame) -> dict[str, float]:
    """Mean grading seconds per question of each kind, from the trials that graded an adapter (not reused)."""
    import pandas as pd

    found = {}
    for kind in ("sft", "rft"):
        seconds = pd.to_numeric(trials.get(f"{kind}_grade_seconds"), errors="coerce")
        questions = pd.to_numeric(trials.get(f"{kind}_questions"), errors="coerce")
        graded = (seconds > 0) & (questions > 0)
        if graded.any():
            found[kind] = float(seconds[graded].sum() / questions[graded].sum())
    return found


def seed_spreads(pairs: pd.DataFrame, grading_key: str | None, record: DecisionRecord) -> list[str]:
    """One line per adapter trained with several seeds: its accuracy at each seed on the questions all its
    seeds were graded on, and the standard deviation of its points over them."""
    lines = []
    if grading_key is None:
        return lines
    for key, entries in record.seeds.items():
        for kind in ("sft", "rft"):
            rows = pairs[pairs[f"{kind}_key"] == key]
            if rows.empty:
                continue
            row = rows.iloc[0]
            seeds = seeds_outcomes(str(row[f"{kind}_dir"]), key, grading_key, record)
            asked = set(common_questions(*seeds))
            if len(seeds) < 2 or not asked:
                continue
            accuracies = [sum(o.correct for o in seed if o.identity in asked) / len(asked) for seed in seeds]
            values = [homework_points(kind, a) for a in accuracies]
            mean = sum(values) / len(values)
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            shown = ", ".join(f"{a:.0%}" for a in accuracies)
            lines.append(f"{kind.upper()} rank {int(row[f'{kind}_rank'])}: accuracy {shown} over {len(seeds)} seeds "
                         f"({len(asked)} questions); points {mean:.1f} ± {sd:.1f} (seed SD)")
            break
    return lines


@dataclass(frozen=True)
class RankStep:
    """Two adapters of one kind at neighbouring ranks (other settings equal), paired on the same questions:
    accuracy (fractions) and answer NLL (nats per token) of the larger rank minus the smaller."""

    kind: str
    low_rank: int
    high_rank: int
    accuracy: Difference
    nll: Difference | None
    low_dir: str = ""  # the two adapters' cache folders
    high_dir: str = ""

    def sentence(self) -> str:
        a = self.accuracy
        text = (f"{self.kind.upper()} rank {self.high_rank} against rank {self.low_rank}: accuracy "
                f"{a.estimate * 100:+.1f} points (95% exact McNemar interval {a.low * 100:+.1f} to "
                f"{a.high * 100:+.1f}, {a.questions} questions)")
        if self.nll is not None:
            text += f", answer NLL {self.nll.estimate:+.3f} ({self.nll.low:+.3f} to {self.nll.high:+.3f})"
        return text + (": decisive" if a.decisive else ": not decisive")


def rank_steps(adapters: pd.DataFrame, grading_key: str | None) -> list[RankStep]:
    """Each kind's neighbouring ranks among adapters that differ in rank alone, compared on the questions both
    were graded on (first seed); adapters graded without outcomes are left out."""
    steps: list[RankStep] = []
    if grading_key is None or adapters.empty:
        return steps
    same = ["kind", "alpha_ratio", "lr", "epochs", "adapter_dtype"]
    table = adapters.assign(alpha_ratio=adapters["alpha"] / adapters["rank"])
    for _, group in table.groupby([c for c in same if c in table], dropna=False, sort=True):
        group = group.sort_values("rank")
        rows = [(r, adapter_outcomes(r["dir"], grading_key)) for _, r in group.iterrows()]
        rows = [(r, o) for r, o in rows if o]
        for (small, a), (large, b) in zip(rows, rows[1:]):
            asked = common_questions(a, b)
            if not asked:
                continue
            a, b = aligned(a, asked), aligned(b, asked)
            accuracy = accuracy_difference([o.correct for o in b], [o.correct for o in a])
            nll = None
            if None not in [o.nll for o in a + b]:
                nll = nll_difference([o.nll for o in b], [o.nll for o in a])
            steps.append(RankStep(str(large["kind"]), int(small["rank"]), int(large["rank"]), accuracy, nll,
                                  str(small["dir"]), str(large["dir"])))
    return steps
