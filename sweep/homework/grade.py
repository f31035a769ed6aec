"""Grade an adapter with the homework's own code: its loader, its dataset and its benchmark, run in a
scratch copy of the tree, so the number is the one the user's code (and so the course grader) will see."""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sweep.homework.config import HomeworkConfig
from sweep.homework.run import HomeworkCommandError, run_logged
from sweep.homework.tree import base_model_path, place_adapter, scratch_copy, set_string_constant
from trainers.errors import RanksweepError
from trainers.grading import wilson_interval
from trainers.outcomes import QuestionOutcome, question_hash

# Run inside the scratch tree as `python -c`: the cwd is on sys.path, as for `python -m homework.sft`.
RUNNER = """
import importlib, json, math, sys
def find(spec):
    module, _, attribute = spec.partition(":")
    found = importlib.import_module(module)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found
loader, dataset, split, benchmark, limit, out = sys.argv[1:]
data = find(dataset)(split)
result = find(benchmark)(find(loader)(), data, int(limit))
get = (lambda k: result[k]) if isinstance(result, dict) else (lambda k: getattr(result, k))
record = {"accuracy": float(get("accuracy")), "answer_rate": float(get("answer_rate")),
          "questions": min(len(data), int(limit))}
# Per-question results where the benchmark returns them: samples naming `question` and `is_correct`
# (attributes or keys, as the course template's BenchmarkResult.Sample does); anything else: totals only.
try:
    samples = list(get("samples"))
    field = (lambda s, k: s[k]) if isinstance(samples[0], dict) else (lambda s, k: getattr(s, k))
    def parsed(s):
        try:
            answer = float(field(s, "answer"))
        except Exception:
            return bool(field(s, "is_correct"))
        return answer == answer
    record["samples"] = [[str(field(s, "question")), bool(field(s, "is_correct")), parsed(s)] for s in samples]
except Exception:
    record["samples"] = None
with open(out, "w") as f:
    json.dump(record, f)
"""


@dataclass(frozen=True)
class HomeworkGrade:
    """The homework benchmark's numbers (fractions), the questions it asked, its Wilson 95% bounds, seconds."""

    kind: str
    accuracy: float
    answer_rate: float
    questions: int
    ci_low: float
    ci_high: float
    seconds: float
    # One per question asked, where the benchmark returns per-question samples (question and is_correct); None
    # where it reports totals only. No answer NLL: the user's code does not compute one.
    outcomes: tuple[QuestionOutcome, ...] | None = None

    @property
    def correct(self) -> int:
        return round(self.accuracy * self.questions)


def grade_with_homework(root: Path, adapter: Path, kind: str, *, questions: int | None, config: HomeworkConfig,
                        base_model: str | None = None, log: Path | None = None) -> HomeworkGrade:
    """Copy the tree, put `adapter` where it loads it, point its checkpoint at `base_model` (when given) and run
    its loader + benchmark on the first `questions` questions (None: all) in a subprocess."""
    with tempfile.TemporaryDirectory(prefix="ranksweep-homework-") as scratch:
        tree = scratch_copy(root, Path(scratch) / "tree")
        if base_model is not None:
            set_string_constant(tree, config.checkpoint, base_model_path(base_model))
        place_adapter(tree, kind, adapter)
        out = Path(scratch) / "grade.json"
        loader = config.sft_loader if kind == "sft" else config.rft_loader
        limit = str(questions if questions is not None else 10**9)
        args = [sys.executable, "-c", RUNNER, loader, config.dataset, config.split, config.benchmark, limit, str(out)]
        what = f"The homework's own {kind.upper()} grading ({loader}, then {config.benchmark})"
        run = run_logged(args, cwd=tree, log=log, timeout=config.grade_timeout_s,
                         what=what)
        try:
            record = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise HomeworkCommandError(f"{what} wrote no result; does {config.benchmark} return accuracy and "
                                       "answer_rate?") from None
    if record["questions"] < 1:
        raise RanksweepError(f"The homework's {config.dataset}('{config.split}') holds no questions.")
    n = record["questions"]
    low, high = wilson_interval(round(record["accuracy"] * n), n)
    return HomeworkGrade(kind=kind, accuracy=record["accuracy"], answer_rate=record["answer_rate"], questions=n,
                         ci_low=low, ci_high=high, seconds=run.seconds, outcomes=benchmark_outcomes(record))


def benchmark_outcomes(record: dict) -> tuple[QuestionOutcome, ...] | None:
    """The per-question outcomes of the runner's record ([question, correct, parsed] per sample, in the order the
    benchmark asked them), or None where the benchmark gave totals only."""
    samples = record.get("samples")
    if not samples:
        return None
    return tuple(QuestionOutcome(i, question_hash(q), bool(p), bool(c)) for i, (q, c, p) in enumerate(samples))


def disagree(homework: HomeworkGrade, ours_low: float, ours_high: float) -> bool:
    """Whether the homework's accuracy falls outside ranksweep's 95% interval for the same adapter."""
    return not ours_low <= homework.accuracy <= ours_high
