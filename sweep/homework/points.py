"""Read a course grader's output: one `N / M` line per graded case, grouped under SFT and RFT.

A case belongs to the kind its own line names (`SFT`, `RFT`), else to the last heading that named one;
a `total` line is skipped. A case line may print the accuracy it was scored on (`accuracy 0.62`, `acc=62%`);
otherwise the accuracy is read back from the points through the homework's rule (at 0 or full points
that is only a bound, and the bound is what is recorded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trainers.grading import accuracy_for_points

# Spaces around the slash, as graders print a case: a progress bar's "20/20" is not one.
CASE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?) +/ +(\d+(?:\.\d+)?)(?![\w.])")
ACCURACY = re.compile(r"\bacc(?:uracy)?\s*[=:]?\s*(\d+(?:\.\d+)?)\s*(%?)", re.IGNORECASE)
KIND = re.compile(r"\b(sft|rft)\b", re.IGNORECASE)


@dataclass(frozen=True)
class KindScore:
    """One kind's cases: points earned and possible, and the accuracy when the grader printed or implied it."""

    kind: str
    points: float
    max_points: float
    cases: int
    accuracy: float | None


def parse_grader_output(text: str) -> dict[str, KindScore]:
    """Per kind ('sft', 'rft'): the summed `N / M` cases of the grader's output. Kinds with no case are absent."""
    section, found = None, {}
    for line in text.splitlines():
        named = KIND.search(line)
        case = CASE.search(line)
        if case is None or line.strip().lower().startswith("total"):
            if named:
                section = named.group(1).lower()
            continue
        kind = named.group(1).lower() if named else section
        if kind is None:
            continue
        accuracy = ACCURACY.search(line)
        value = None
        if accuracy:
            value = float(accuracy.group(1)) / (100 if accuracy.group(2) or float(accuracy.group(1)) > 1 else 1)
        points, most, cases, seen = found.get(kind, (0.0, 0.0, 0, None))
        found[kind] = (points + float(case.group(1)), most + float(case.group(2)), cases + 1,
                       seen if seen is not None else value)
    return {kind: KindScore(kind, points, most, cases,
                            seen if seen is not None else accuracy_for_points(kind, points))
            for kind, (points, most, cases, seen) in found.items()}
