"""Per-question outcomes of a grade: which questions an adapter answered, got right, and how surely.

Two adapters graded on the same questions are compared question by question (sweep/paired.py); a grade that
kept only its totals cannot be. A question is identified by its index in the validation file and a short hash
of its text, so outcomes graded on different files, or on a file that changed, never pair by accident.
Standard library only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def question_hash(text: str) -> str:
    """The first 10 hex digits of the SHA-256 of a question's text (as asked, template applied)."""
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class QuestionOutcome:
    """One question of a grade: index in the validation file, text hash, parsed, correct, answer NLL (nats/token)."""

    index: int
    qhash: str
    parsed: bool
    correct: bool
    nll: float | None = None  # None where not measured (homework benchmarks, grades before NLLs)

    def to_dict(self) -> dict:
        row = {"i": self.index, "h": self.qhash, "p": int(self.parsed), "c": int(self.correct)}
        if self.nll is not None:
            row["nll"] = round(self.nll, 6)
        return row

    @classmethod
    def from_dict(cls, row: dict) -> QuestionOutcome:
        nll = row.get("nll")
        return cls(index=int(row["i"]), qhash=str(row["h"]), parsed=bool(row["p"]), correct=bool(row["c"]),
                   nll=None if nll is None else float(nll))

    @property
    def identity(self) -> tuple[int, str]:
        return self.index, self.qhash


def outcomes_to_json(outcomes) -> list[dict] | None:
    """A grade's outcomes as stored in its JSON (short keys: a 2,000-question grade stays small); None stays None."""
    return None if outcomes is None else [o.to_dict() for o in outcomes]


def outcomes_from_json(rows) -> tuple[QuestionOutcome, ...] | None:
    """The outcomes a grade JSON stored, or None for a grade written before they were recorded (or a bad list)."""
    if not isinstance(rows, list):
        return None
    try:
        return tuple(QuestionOutcome.from_dict(row) for row in rows)
    except (KeyError, TypeError, ValueError):
        return None


def merge_outcomes(*groups) -> tuple[QuestionOutcome, ...]:
    """Outcomes from several grades of one adapter (its first grade, then questions added later), one per
    question identity, the first grade winning, sorted by index."""
    seen: dict[tuple[int, str], QuestionOutcome] = {}
    for group in groups:
        for outcome in group or ():
            seen.setdefault(outcome.identity, outcome)
    return tuple(sorted(seen.values(), key=lambda o: o.index))
