"""`launch --trainer homework`: each trial made with the user's own commands, in a scratch copy of the tree.

Per adapter (cached by kind, rank, base model, the training command and a hash of the user's tree, so a
new RFT rank never retrains SFT): copy the tree, write the rank into its constant with the export
machinery, point its checkpoint at the study's base model, run its training command, keep what it saved
in homework/<kind>_model/. Per trial: a fresh copy with both ranks and both adapters, the submission zip
built by the tree's own bundle.py (else by ranksweep's bundle rules), graded by its course grader on
that zip (`python -m grader <zip>`, its `N / M` lines) or else by its own loader and benchmark. The size
recorded is the real zip's; every command's output goes to the trial's folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from sweep import bundle
from sweep.builder import PairOutcome
from sweep.cache import AdapterSpec, ArtifactCache
from sweep.homework.config import HomeworkConfig, read_config
from sweep.homework.run import HomeworkCommandError, last_lines, run_logged
from sweep.homework.tree import (ADAPTER_HOMES, base_model_path, check_homework, code_fingerprint, place_adapter,
                                 scratch_copy, set_string_constant)
from sweep.records import AdapterResult, Pair
from sweep.shell import command
from trainers.data import checked_number
from trainers.errors import RanksweepError

TRAINER = "homework"
ZIP_NAME = "submission"
TRIALS_FOLDER = "homework-trials"


class HomeworkTrialFailed(Exception):
    """One of the homework's commands failed in this trial: the trial fails, the study goes on."""


@dataclass(frozen=True)
class HomeworkSpec(AdapterSpec):
    """An adapter made by the homework's own training command: the cache key is the tree, not a TrainConfig."""

    tree_sha256: str = ""
    command: str = ""

    @property
    def key(self) -> str:
        blob = json.dumps({"trainer": TRAINER, "kind": self.kind, "rank": self.rank, "base_model": self.base_model,
                           "tree_sha256": self.tree_sha256, "command": self.command}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _python() -> str:
    return sys.executable


def _which(args: list[str]) -> bool:
    return Path(args[0]).is_file() or shutil.which(args[0]) is not None


def check_homework_trainer(settings) -> HomeworkConfig:
    """Everything a homework-mode study needs, checked before any trial: the tree, its rank and checkpoint
    constants, one value for what its own code decides (alpha, lr, epochs), and commands that can start."""
    from sweep.export import parse_var
    from sweep.rank_constants import read_constant

    if settings.homework is None:
        raise RanksweepError("--trainer homework runs your homework's own commands: pass --homework DIR.")
    root = check_homework(settings.homework)
    config = read_config(root)
    many = [flag for flag, values in (("--alpha-ratios", settings.space.alpha_ratios), ("--lrs", settings.space.lrs),
                                      ("--epochs", settings.space.epochs)) if len(values) > 1]
    if many:
        raise RanksweepError(f"With --trainer homework your code sets these itself; drop {', '.join(many)} "
                             "(only the ranks are searched).")
    for var in (config.sft_rank, config.rft_rank):
        rank_var = parse_var(var)
        path = root / rank_var.file
        if not path.is_file():
            raise RanksweepError(f"{root} has no {rank_var.file}, where {rank_var.name} should be; "
                                 "name it in ranksweep.toml (sft_rank / rft_rank = \"FILE:NAME\").")
        read_constant(path.read_bytes(), rank_var.name, label=rank_var.file)
    with tempfile.TemporaryDirectory(prefix="ranksweep-check-") as scratch:
        tree = scratch_copy(root, Path(scratch) / "tree")
        set_string_constant(tree, config.checkpoint, "checked")
    keys = ["train_sft", "train_rft"] + [k for k, present in (("bundle", (root / "bundle.py").is_file()),
                                                              ("grader", (root / "grader").is_dir())) if present]
    for key in keys:
        args = config.command(key, python=_python(), zip=f"{ZIP_NAME}.zip", name=ZIP_NAME)
        if not _which(args):
            raise RanksweepError(f"The {key} command of {root} cannot start: '{args[0]}' is not a program on PATH "
                                 "(set it in ranksweep.toml).")
    return config


def homework_rest_bytes(settings, config: HomeworkConfig) -> int:
    """The zipped bytes of the submission without its adapters, as the tree's own bundle builds it (ranksweep's
    bundle rules when it has no bundle.py): what the adapters share the budget with."""
    root = settings.homework
    if not (root / "bundle.py").is_file():
        return bundle.rest_bytes(root)
    with tempfile.TemporaryDirectory(prefix="ranksweep-rest-") as scratch:
        tree = scratch_copy(root, Path(scratch) / "tree")
        for home in ADAPTER_HOMES.values():
            shutil.rmtree(tree / home, ignore_errors=True)
        try:
            return _bundle(tree, config, None)  # a scratch tree: an error carries the output, names no log
        except HomeworkCommandError as exc:
            raise RanksweepError(f"Measuring the homework without adapters: {exc}") from None


def _bundle(tree: Path, config: HomeworkConfig, log: Path | None) -> int:
    """Build the submission zip in `tree` (its bundle.py, else ranksweep's rules); its size in bytes. `log`: where
    the bundle command's output is kept (None: nowhere)."""
    target = tree / f"{ZIP_NAME}.zip"
    if (tree / "bundle.py").is_file():
        args = config.command("bundle", python=_python(), zip=target.name, name=ZIP_NAME)
        what = f"The homework's bundle command ({command(*args)})"
        run = run_logged(args, cwd=tree, log=log, timeout=config.grader_timeout_s, what=what)
        if not target.is_file():
            raise HomeworkCommandError(f"{what} wrote no {target.name}; {last_lines(run.output(), log)}")
        return target.stat().st_size
    return bundle.write_zip(bundle.bundle_members(tree), target)


class HomeworkBuilder:
    """The `PairBuilder` (sweep/builder.py) of `--trainer homework`: the user's commands make and grade the pair."""

    def __init__(self, settings):
        from trainers.models import resolve_device

        self.settings = settings
        self.cache = ArtifactCache(settings.artifacts)
        self.device = resolve_device(settings.device)
        self.config = check_homework_trainer(settings)
        self.root = settings.homework
        # Hashed once: the user's tree must not change under a running study (a new hash would mean new adapters).
        self.tree_sha256 = code_fingerprint(self.root)

    def spec(self, kind: str, pair: Pair) -> HomeworkSpec:
        from trainers.training import TrainConfig

        # The tree's own code decides alpha, lr and epochs; its hash (data/ included) stands for them.
        config = TrainConfig(kind=kind, rank=pair.rank(kind), adapter_dtype=pair.adapter_dtype)
        return HomeworkSpec(config=config, base_model=self.settings.base_model, data_sha256=self.tree_sha256,
                            tree_sha256=self.tree_sha256, command=getattr(self.config, f"train_{kind}"))

    def trial_dir(self, pair: Pair) -> Path:
        label = f"sft{pair.sft_rank}-rft{pair.rft_rank}"
        digest = hashlib.sha256(json.dumps(pair.params(), sort_keys=True).encode()).hexdigest()[:8]
        return self.settings.artifacts / TRIALS_FOLDER / self.settings.name / f"{label}-{digest}"

    def build(self, pair: Pair) -> PairOutcome:
        folder = self.trial_dir(pair)
        if folder.exists():
            shutil.rmtree(folder)  # a retried pair starts clean
        folder.mkdir(parents=True)
        try:
            adapters = {kind: self.ensure(kind, pair, folder) for kind in ("sft", "rft")}
            return self.grade_pair(pair, adapters, folder)
        except HomeworkCommandError as exc:
            raise HomeworkTrialFailed(str(exc)) from None

    def _scratch(self, folder: Path, pair: Pair) -> Path:
        """A fresh copy of the tree in the trial folder, with the pair's ranks and the study's base model."""
        from sweep.export import apply, parse_var, rank_changes

        tree = folder / "tree"
        if tree.exists():
            shutil.rmtree(tree)
        scratch_copy(self.root, tree)
        changes = rank_changes(tree, parse_var(self.config.sft_rank), parse_var(self.config.rft_rank),
                               pair.sft_rank, pair.rft_rank)
        apply(tree, changes, backup=False)
        set_string_constant(tree, self.config.checkpoint, base_model_path(self.settings.base_model))
        return tree

    def ensure(self, kind: str, pair: Pair, folder: Path) -> tuple[HomeworkSpec, float, bool]:
        """The cached adapter of this kind and rank, trained by the homework's command when missing."""
        import time

        spec = self.spec(kind, pair)
        cache = self.cache
        entry = cache.adapter_dir(spec)
        with cache.lock(spec):
            if cache.verify(spec) is not None:
                return spec, 0.0, True
            tree = self._scratch(folder, pair)
            args = self.config.command(f"train_{kind}", python=_python(), zip="", name="")
            started = time.perf_counter()
            run_logged(args, cwd=tree, log=folder / f"train-{kind}.log", timeout=self.config.train_timeout_s,
                       what=f"The homework's {kind.upper()} training ({command(*args)})")
            seconds = time.perf_counter() - started
            trained = tree / ADAPTER_HOMES[kind]
            missing = [n for n in bundle.ADAPTER_FILES if not (trained / n).is_file()]
            if missing:
                raise HomeworkCommandError(f"The homework's {kind.upper()} training finished but left no "
                                           f"{', '.join(missing)} in {ADAPTER_HOMES[kind]}/.")
            if entry.exists():
                shutil.rmtree(entry)
            entry.mkdir(parents=True)
            for name in bundle.ADAPTER_FILES:
                shutil.copyfile(trained / name, entry / name)
            cache.seal(spec, zip_bytes=bundle.submission_bytes(None, **{f"{kind}_dir": entry}),
                       train_seconds=round(seconds, 3), trainer=TRAINER)
            shutil.rmtree(tree)
        return spec, seconds, False

    def grade_pair(self, pair: Pair, adapters: dict, folder: Path) -> PairOutcome:
        """Build the real submission with both adapters and grade it; the outcome carries the real zip's size."""
        import time

        from sweep.homework.grade import grade_with_homework
        from sweep.homework.points import parse_grader_output
        from trainers.grading import points, wilson_interval

        tree = self._scratch(folder, pair)
        for kind, (spec, _, _) in adapters.items():
            place_adapter(tree, kind, self._entry(spec))
        zip_size = _bundle(tree, self.config, folder / "bundle.log")
        zip_path = folder / f"{ZIP_NAME}.zip"
        shutil.move(tree / f"{ZIP_NAME}.zip", zip_path)
        started = time.perf_counter()
        grades = {}
        if (tree / "grader").is_dir():
            args = self.config.command("grader", python=_python(), zip=str(zip_path.resolve()), name=ZIP_NAME)
            run = run_logged(args, cwd=tree, log=folder / "grader.log", timeout=self.config.grader_timeout_s,
                             what=f"The homework's grader ({command(*args)})")
            scores = parse_grader_output(run.output())
            for kind in adapters:
                if kind not in scores:
                    raise HomeworkCommandError(f"The homework's grader printed no `N / M` line for {kind.upper()}; "
                                               f"{last_lines(run.output(), run.log)}")
                score = scores[kind]
                grades[kind] = {"accuracy": score.accuracy, "points": score.points, "ci_low": None, "ci_high": None,
                                "answer_rate": None, "questions": None}
        else:
            for kind, (spec, _, _) in adapters.items():
                result = grade_with_homework(self.root, self._entry(spec), kind,
                                             questions=self.settings.effort.questions, config=self.config,
                                             base_model=self.settings.base_model, log=folder / f"grade-{kind}.log")
                grades[kind] = {"accuracy": result.accuracy, "points": points(kind, result.accuracy),
                                "ci_low": result.ci_low, "ci_high": result.ci_high,
                                "answer_rate": result.answer_rate, "questions": result.questions}
        grade_seconds = time.perf_counter() - started
        shutil.rmtree(tree)
        (folder / "trial.json").write_text(json.dumps({"zip_bytes": zip_size, "grades": grades}, indent=1))
        sft, rft = (self._result(kind, pair, *adapters[kind], grades[kind], grade_seconds / len(adapters))
                    for kind in ("sft", "rft"))
        # The real zip, not the sum of its parts: the tree's own bundle.py decides what goes in.
        return PairOutcome(sft, rft, zip_bytes=zip_size, device=self.device)

    def _entry(self, spec: HomeworkSpec) -> Path:
        return self.cache.adapter_dir(spec)

    def _result(self, kind, pair: Pair, spec, train_seconds, cache_hit, grade, grade_seconds) -> AdapterResult:
        from sweep.sizing import adapter_size, config_for
        from trainers.grading import points

        entry = self._entry(spec)
        adapter_config = json.loads((entry / "adapter_config.json").read_text(encoding="utf-8"))
        predicted = adapter_size(config_for(self.settings.base_model), spec.rank, pair.adapter_dtype)
        ci_low, ci_high = grade["ci_low"], grade["ci_high"]
        return AdapterResult(
            kind=kind, rank=int(checked_number(adapter_config.get("r", spec.rank), f"{entry}/adapter_config.json r")),
            alpha=checked_number(adapter_config.get("lora_alpha", 0), f"{entry}/adapter_config.json lora_alpha"),
            lr=pair.lr, epochs=pair.epochs, dtype=pair.adapter_dtype, accuracy=grade["accuracy"],
            key=spec.key, dir=str(entry.resolve()), params=predicted.params,
            raw_bytes_predicted=predicted.raw_bytes, raw_bytes=(entry / "adapter_model.safetensors").stat().st_size,
            zip_bytes=bundle.submission_bytes(None, **{f"{kind}_dir": entry}), ci_low=ci_low, ci_high=ci_high,
            answer_rate=grade["answer_rate"], questions=grade["questions"], points=grade["points"],
            points_low=points(kind, ci_low) if ci_low is not None else None,
            points_high=points(kind, ci_high) if ci_high is not None else None,
            train_seconds=round(train_seconds, 3), grade_seconds=round(grade_seconds, 3), cache_hit=cache_hit,
            origin=TRAINER,
        )
