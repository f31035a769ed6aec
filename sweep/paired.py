"""Paired comparisons of adapters and pairs graded on the same questions (pure statistics: no model, no Optuna).

Two adapters of one kind answer the same validation questions, so their grades are paired: on most questions
they agree, and only the questions where they disagree say which is better. Comparing them as two independent
samples (two Wilson intervals) throws that away and calls many real differences noise.

- Accuracy difference: the exact conditional (McNemar) interval. Of the m questions where the two adapters
  disagree, b went to the first; given m, b is Binomial(m, π) and the difference is (b − c)/n = (m/n)(2π − 1).
  The Clopper-Pearson 95% interval of π, mapped through that line, is the difference's interval. Chosen over a
  bootstrap because it is exact for the verdict: the interval excludes 0 exactly when the exact two-sided
  McNemar test rejects at 5%, with no resampling noise on 10-question margins. It is conditional on m: when
  the two adapters agree on every question the interval is 0 to 0 and the verdict is "not decisive".
- Answer NLL difference: the mean of the per-question differences ± 1.96 standard errors of that mean
  (a normal interval: the grade has tens to thousands of questions, and NLLs are continuous).
- Points difference of two pairs: the homework's points are a clipped, non-linear function of two accuracies,
  so no closed form; a paired percentile bootstrap over questions, seeded. Each resample draws the SFT
  questions (and the RFT questions) once and applies the same draw to both pairs' adapters of that kind; when
  both kinds were graded on the very same questions one draw serves both, as they were graded.
- Seeds: an adapter trained with several seeds scores the mean of its seeds' points, and the spread of those
  points (sample standard deviation) is the seed noise; a difference smaller than it is not decisive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sweep.frontier import Z95
from trainers.grading import points as homework_points
from trainers.outcomes import QuestionOutcome

RESAMPLES = 2000


@dataclass(frozen=True)
class Difference:
    """A paired difference (first minus second) with its 95% interval, the questions it rests on and how."""

    estimate: float
    low: float
    high: float
    questions: int
    method: str
    seed_spread: float | None = None  # the larger pair's seed standard deviation, in the same unit; None: one seed

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def decisive(self) -> bool:
        """The interval excludes 0 and the difference is larger than the seed spread (where one was measured)."""
        if not self.excludes_zero:
            return False
        return self.seed_spread is None or abs(self.estimate) > self.seed_spread

    def to_dict(self) -> dict:
        """JSON-ready; an unbounded end (no questions to pair) reads null."""
        def finite(x):
            return x if x is None or math.isfinite(x) else None

        return {"estimate": self.estimate, "low": finite(self.low), "high": finite(self.high),
                "questions": self.questions, "method": self.method, "seed_spread": self.seed_spread,
                "decisive": self.decisive}


def common_questions(*groups: tuple[QuestionOutcome, ...]) -> list[tuple[int, str]]:
    """The question identities (index, text hash) every group of outcomes holds, by index."""
    if not groups:
        return []
    shared = set.intersection(*({o.identity for o in group} for group in groups))
    return sorted(shared)


def aligned(outcomes: tuple[QuestionOutcome, ...], questions: list[tuple[int, str]]) -> list[QuestionOutcome]:
    """`outcomes` in the order of `questions` (each of which it must hold)."""
    by_id = {o.identity: o for o in outcomes}
    return [by_id[q] for q in questions]


def _log_binom_pmf(k: int, m: int, p: float) -> float:
    if p <= 0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1:
        return 0.0 if k == m else -math.inf
    return (math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1)
            + k * math.log(p) + (m - k) * math.log1p(-p))


def binomial_cdf(k: int, m: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(m, p)."""
    if k < 0:
        return 0.0
    if k >= m:
        return 1.0
    return min(1.0, sum(math.exp(_log_binom_pmf(i, m, p)) for i in range(k + 1)))


def clopper_pearson(k: int, m: int, alpha: float = 0.05) -> tuple[float, float]:
    """The exact (Clopper-Pearson) 1 − alpha interval of a binomial proportion k/m; (0, 1) when m is 0."""
    if m == 0:
        return 0.0, 1.0

    def solve(f, target) -> float:  # f grows with p from f(0) to f(1); the p where it crosses target
        lo, hi = 0.0, 1.0
        for _ in range(80):
            mid = (lo + hi) / 2
            if f(mid) < target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    # Lower: P(X >= k | p) = alpha/2; upper: P(X <= k | p) = alpha/2.
    low = 0.0 if k == 0 else solve(lambda p: 1 - binomial_cdf(k - 1, m, p), alpha / 2)
    high = 1.0 if k == m else solve(lambda p: -binomial_cdf(k, m, p), -alpha / 2)
    return low, high


def accuracy_difference(first: list[bool], second: list[bool]) -> Difference:
    """Accuracy of `first` minus `second` (fractions) on the same questions, with the exact conditional
    McNemar 95% interval (module docstring)."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} outcomes against {len(second)}: pair them on common questions first")
    n = len(first)
    if n == 0:
        return Difference(0.0, -1.0, 1.0, 0, "exact McNemar (conditional Clopper-Pearson)")
    b = sum(1 for x, y in zip(first, second) if x and not y)
    c = sum(1 for x, y in zip(first, second) if y and not x)
    m = b + c
    low, high = clopper_pearson(b, m)
    scale = m / n
    return Difference((b - c) / n, scale * (2 * low - 1), scale * (2 * high - 1), n,
                      "exact McNemar (conditional Clopper-Pearson)")


def nll_difference(first: list[float], second: list[float]) -> Difference:
    """Mean answer NLL of `first` minus `second` (nats per token) on the same questions: mean of the per-question
    differences ± Z95 standard errors."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} NLLs against {len(second)}: pair them on common questions first")
    diffs = [x - y for x, y in zip(first, second)]
    n = len(diffs)
    if n == 0:
        return Difference(0.0, -math.inf, math.inf, 0, "paired normal")
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else math.inf
    return Difference(mean, mean - Z95 * se, mean + Z95 * se, n, "paired normal")


@dataclass(frozen=True)
class PairEvidence:
    """One pair's per-question outcomes: for each kind, one outcome tuple per seed of that adapter."""

    sft: tuple[tuple[QuestionOutcome, ...], ...]
    rft: tuple[tuple[QuestionOutcome, ...], ...]

    def seeds(self, kind: str) -> tuple[tuple[QuestionOutcome, ...], ...]:
        return self.sft if kind == "sft" else self.rft

    @property
    def graded(self) -> bool:
        return bool(self.sft) and bool(self.rft) and all(self.sft) and all(self.rft)


def _seed_matrix(evidence: PairEvidence, kind: str, questions: list[tuple[int, str]]) -> list[list[bool]]:
    return [[o.correct for o in aligned(seed, questions)] for seed in evidence.seeds(kind)]


def _points_of(kind: str, matrix: list[list[bool]], draw: list[int]) -> float:
    """Mean over seeds of the homework points at each seed's accuracy on the drawn questions."""
    n = len(draw)
    return sum(homework_points(kind, sum(row[i] for i in draw) / n) for row in matrix) / len(matrix)


def kind_questions(first: PairEvidence, second: PairEvidence, kind: str) -> list[tuple[int, str]]:
    """The questions of one kind that every seed of both pairs' adapters was graded on."""
    return common_questions(*first.seeds(kind), *second.seeds(kind))


def pair_points(evidence: PairEvidence, questions: dict[str, list[tuple[int, str]]]) -> float:
    """A pair's homework points on the given questions of each kind (each adapter: the mean over its seeds)."""
    return sum(_points_of(kind, _seed_matrix(evidence, kind, questions[kind]), list(range(len(questions[kind]))))
               for kind in ("sft", "rft"))


def seed_spread(evidence: PairEvidence, questions: dict[str, list[tuple[int, str]]] | None = None) -> float | None:
    """The pair's seed standard deviation in points: each kind's sample SD of its seeds' points, added in
    quadrature; None when neither adapter has two seeds."""
    total, measured = 0.0, False
    for kind in ("sft", "rft"):
        seeds = evidence.seeds(kind)
        if len(seeds) < 2:
            continue
        asked = questions[kind] if questions else common_questions(*seeds)
        values = [homework_points(kind, sum(row) / len(row)) for row in _seed_matrix(evidence, kind, asked) if row]
        if len(values) < 2:
            continue
        mean = sum(values) / len(values)
        total += sum((v - mean) ** 2 for v in values) / (len(values) - 1)
        measured = True
    return math.sqrt(total) if measured else None


def points_difference(first: PairEvidence, second: PairEvidence, *, resamples: int = RESAMPLES,
                      seed: int = 0) -> Difference:
    """Points of pair `first` minus pair `second` on the questions both were graded on, with a paired
    percentile bootstrap 95% interval over questions (`resamples` draws from numpy's generator seeded `seed`)."""
    questions = {kind: kind_questions(first, second, kind) for kind in ("sft", "rft")}
    n = min(len(questions["sft"]), len(questions["rft"]))
    spreads = [s for s in (seed_spread(first, questions), seed_spread(second, questions)) if s is not None]
    spread = max(spreads) if spreads else None
    method = f"paired bootstrap over questions ({resamples} resamples, seed {seed})"
    if n == 0:
        return Difference(0.0, -math.inf, math.inf, 0, method, spread)
    import numpy as np

    rng = np.random.default_rng(seed)
    same = questions["sft"] == questions["rft"]
    draws: dict[str, np.ndarray] = {}
    for kind in ("sft", "rft"):
        size = len(questions[kind])
        draws[kind] = draws["sft"] if kind == "rft" and same else rng.integers(0, size, (resamples, size))
    to_points = np.vectorize(homework_points, otypes=[float])
    estimate, values = 0.0, np.zeros(resamples)
    for kind in ("sft", "rft"):
        for sign, pair in ((1, first), (-1, second)):
            matrix = np.array(_seed_matrix(pair, kind, questions[kind]), dtype=float)  # seeds x questions
            estimate += sign * to_points(kind, matrix.mean(axis=1)).mean()
            accuracies = matrix[:, draws[kind]].mean(axis=2)  # seeds x resamples
            values += sign * to_points(kind, accuracies).mean(axis=0)
    # Rounded as the frontier rounds points: 25 - 24.999999999999996 is a tie, not a decisive win.
    estimate, values = round(float(estimate), 9), np.round(values, 9)
    low, high = np.quantile(values, [0.025, 0.975])
    return Difference(float(estimate), float(min(low, estimate)), float(max(high, estimate)), n, method, spread)
