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
import time
from dataclasses import dataclass, replace
from pathlib import Path

from sweep import bundle
from sweep.bundle import ADAPTER_HOMES
from sweep.builder import PairOutcome, adapter_result, adapter_zip_bytes
from sweep.cache import AdapterSpec, ArtifactCache, Entry
from sweep.changeset import inside
from sweep.export import apply, parse_var, rank_changes
from sweep.homework.config import HomeworkConfig, read_config
from sweep.homework.grade import grade_with_homework
from sweep.homework.points import parse_grader_output
from sweep.homework.run import HomeworkCommandError, last_lines, run_logged
from sweep.homework.tree import (base_model_path, check_homework, code_fingerprint, place_adapter, scratch_copy,
                                 set_string_constant)
from sweep.rank_constants import read_constant
from sweep.records import AdapterResult, Pair
from sweep.shell import command
from trainers.data import checked_number
from trainers.errors import RanksweepError
from trainers.grading import points
from trainers.models import resolve_device
from trainers.outcomes import outcomes_to_json
from trainers.training import KINDS, TrainConfig

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
        # Checked in the user's tree, before the study exists: a trial would find it only in its scratch copy.
        path = inside(root, rank_var.file, f"ranksweep.toml names {rank_var.name} in a file, and that file")
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
        self.settings = settings
        self.cache = ArtifactCache(settings.artifacts)
        self.device = resolve_device(settings.device)
        self.config = check_homework_trainer(settings)
        self.root = settings.homework
        # Hashed once: the user's tree must not change under a running study (a new hash would mean new adapters).
        self.tree_sha256 = code_fingerprint(self.root)

    def spec(self, kind: str, pair: Pair) -> HomeworkSpec:
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
            adapters = {kind: self.ensure(kind, pair, folder) for kind in KINDS}
            return self.grade_pair(pair, adapters, folder)
        except HomeworkCommandError as exc:
            raise HomeworkTrialFailed(str(exc)) from None

    def _scratch(self, folder: Path, pair: Pair) -> Path:
        """A fresh copy of the tree in the trial folder, with the pair's ranks and the study's base model."""
        tree = folder / "tree"
        if tree.exists():
            shutil.rmtree(tree)
        scratch_copy(self.root, tree)
        changes = rank_changes(tree, parse_var(self.config.sft_rank), parse_var(self.config.rft_rank),
                               pair.sft_rank, pair.rft_rank)
        apply(tree, changes, backup=False)
        set_string_constant(tree, self.config.checkpoint, base_model_path(self.settings.base_model))
        return tree

    def ensure(self, kind: str, pair: Pair, folder: Path) -> tuple[HomeworkSpec, Entry]:
        """The cached adapter of this kind and rank, trained by the homework's command when missing; the entry's
        seconds are the command's own."""
        spec = self.spec(kind, pair)
        timed = {"seconds": 0.0}

        def train(entry: Path) -> None:
            tree = self._scratch(folder, pair)
            args = self.config.command(f"train_{kind}", python=_python(), zip="", name="")
            started = time.perf_counter()
            run_logged(args, cwd=tree, log=folder / f"train-{kind}.log", timeout=self.config.train_timeout_s,
                       what=f"The homework's {kind.upper()} training ({command(*args)})")
            timed["seconds"] = time.perf_counter() - started
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
            shutil.rmtree(tree)

        entry = self.cache.ensure(spec, train, facts=lambda entry: {
            "zip_bytes": adapter_zip_bytes(kind, entry), "train_seconds": round(timed["seconds"], 3),
            "trainer": TRAINER})
        return spec, replace(entry, seconds=timed["seconds"])

    def grade_pair(self, pair: Pair, adapters: dict, folder: Path) -> PairOutcome:
        """Build the real submission with both adapters and grade it; the outcome carries the real zip's size."""
        tree = self._scratch(folder, pair)
        for kind, (spec, _) in adapters.items():
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
            for kind, (spec, _) in adapters.items():
                result = grade_with_homework(self.root, self._entry(spec), kind,
                                             questions=self.settings.effort.questions, config=self.config,
                                             base_model=self.settings.base_model, log=folder / f"grade-{kind}.log")
                grades[kind] = {"accuracy": result.accuracy, "points": points(kind, result.accuracy),
                                "ci_low": result.ci_low, "ci_high": result.ci_high,
                                "answer_rate": result.answer_rate, "questions": result.questions,
                                # Per question where the homework's benchmark returns samples; None: totals only.
                                "outcomes": outcomes_to_json(result.outcomes)}
        grade_seconds = time.perf_counter() - started
        shutil.rmtree(tree)
        (folder / "trial.json").write_text(json.dumps({"zip_bytes": zip_size, "grades": grades}, indent=1))
        sft, rft = (self._result(kind, pair, *adapters[kind], grades[kind], grade_seconds / len(adapters))
                    for kind in KINDS)
        # The real zip, not the sum of its parts: the tree's own bundle.py decides what goes in.
        return PairOutcome(sft, rft, zip_bytes=zip_size, device=self.device)

    def _entry(self, spec: HomeworkSpec) -> Path:
        return self.cache.adapter_dir(spec)

    def _result(self, kind, pair: Pair, spec: HomeworkSpec, entry: Entry, grade: dict,
                grade_seconds: float) -> AdapterResult:
        folder = self._entry(spec)
        # The tree's own code chose the rank and alpha it saved; the pair's lr and epochs name the setting.
        adapter_config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        return adapter_result(
            spec, folder, entry, grade, self.settings.base_model, grade_seconds=grade_seconds,
            rank=int(checked_number(adapter_config.get("r", spec.rank), f"{folder}/adapter_config.json r")),
            alpha=checked_number(adapter_config.get("lora_alpha", 0), f"{folder}/adapter_config.json lora_alpha"),
            lr=pair.lr, epochs=pair.epochs, origin=TRAINER)
