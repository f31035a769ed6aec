"""Does the homework's own code agree with ranksweep's grade of an adapter? Used where ranksweep trained the
adapters: `export --with-adapters` warns, and a `launch --homework` study stops after its first trained
adapter when the homework's accuracy falls outside ranksweep's 95% interval (usually a prompt format
that differs: see `--prompt-template`)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from sweep.homework.config import HomeworkConfig, read_config
from sweep.homework.grade import grade_with_homework
from sweep.records import TrialResult
from sweep.storage import open_storage
from trainers.errors import RanksweepError


def _defines(root: Path, spec: str) -> bool:
    """Whether `module:attribute` names a top-level def, class or assignment in a file of the tree."""
    module, _, attribute = spec.partition(":")
    base = root / Path(*module.split("."))
    path = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
    if not path.is_file():
        return False
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError):
        return True  # let the homework's own run say what is wrong
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return attribute.split(".")[0] in names


def grading_available(root: Path, kind: str) -> HomeworkConfig | None:
    """The tree's settings when its loader, dataset and benchmark for `kind` exist; None otherwise."""
    if root is None or not (Path(root) / "homework").is_dir():
        return None
    config = read_config(root)
    loader = config.sft_loader if kind == "sft" else config.rft_loader
    if all(_defines(Path(root), spec) for spec in (loader, config.dataset, config.benchmark)):
        return config
    return None


@dataclass(frozen=True)
class Agreement:
    """ranksweep's grade and the homework's of one adapter (fractions), and whether they disagree."""

    kind: str
    ours: float
    ours_low: float
    ours_high: float
    theirs: float
    theirs_answer_rate: float
    questions: int

    @property
    def disagree(self) -> bool:
        return not self.ours_low <= self.theirs <= self.ours_high

    def sentence(self) -> str:
        return (f"the homework's own code graded the {self.kind.upper()} adapter {self.theirs:.1%} (answer rate "
                f"{self.theirs_answer_rate:.0%}) where ranksweep graded it {self.ours:.1%} (95% interval "
                f"{self.ours_low:.1%}–{self.ours_high:.1%}, {self.questions} questions)")


def compare(root: Path, adapter: Path, kind: str, *, accuracy: float, ci_low: float, ci_high: float,
            questions: int | None, base_model: str, config: HomeworkConfig) -> Agreement:
    """Grade `adapter` with the homework's code on the same questions and put it next to ranksweep's numbers."""
    theirs = grade_with_homework(root, adapter, kind, questions=questions, config=config, base_model=base_model)
    return Agreement(kind, accuracy, ci_low, ci_high, theirs.accuracy, theirs.answer_rate, theirs.questions)


ADVICE = ("train with the text your format_prompt returns (--prompt-template, e.g. '{question} '), or let the "
          "homework's own code train and grade (launch --trainer homework)")


def export_warnings(root: Path, storage: str, study: str, choice) -> list[str]:
    """`export --with-adapters`: one warning per exported adapter that the homework's code grades outside the
    study's interval (none when the tree cannot grade, or the study's grades came from the homework already)."""
    import optuna

    wanted = {"sft": choice.sft_dir, "rft": choice.rft_dir}
    found = {}
    for trial in optuna.load_study(study_name=study, storage=open_storage(storage, must_exist=True)).get_trials(
            deepcopy=False):
        for adapter in TrialResult.from_trial(trial).adapters():
            if wanted.get(adapter.kind) is not None and Path(adapter.dir) == Path(wanted[adapter.kind]):
                found[adapter.kind] = adapter
    warnings = []
    for kind, adapter in sorted(found.items()):
        config = grading_available(root, kind)
        if config is None or adapter.origin == "homework" or adapter.ci_low is None:
            continue
        try:
            result = compare(root, Path(adapter.dir), kind, accuracy=adapter.accuracy, ci_low=adapter.ci_low,
                             ci_high=adapter.ci_high, questions=adapter.questions, base_model=choice.base_model,
                             config=config)
        except RanksweepError as exc:
            warnings.append(f"could not grade the {kind.upper()} adapter with the homework's code: "
                            f"{str(exc).splitlines()[0]}")
            continue
        if result.disagree:
            warnings.append(f"{result.sentence()}: the study's numbers will not carry over; {ADVICE}.")
    return warnings


class FirstAdapterCheck:
    """Wraps a `PairBuilder` (sweep/builder.py): after the first pair this process trains, grade its SFT adapter
    (else RFT) with the homework's code once, and stop the study when the two graders disagree."""

    def __init__(self, builder, settings):
        self.builder, self.settings, self.done = builder, settings, False

    def build(self, pair):
        outcome = self.builder.build(pair)
        if not self.done:
            for adapter in (outcome.sft, outcome.rft):
                config = grading_available(self.settings.homework, adapter.kind)
                if config is None or adapter.ci_low is None:
                    continue
                self.done = True
                result = compare(self.settings.homework, Path(adapter.dir), adapter.kind, accuracy=adapter.accuracy,
                                 ci_low=adapter.ci_low, ci_high=adapter.ci_high, questions=adapter.questions,
                                 base_model=self.settings.base_model, config=config)
                if result.disagree:
                    raise RanksweepError(f"Stopped: {result.sentence()}, so this study would rank pairs by numbers "
                                         f"your code will not reproduce; {ADVICE}.")
                break
        return outcome
