"""What `launch` and `worker` share: the folder check, the builder a study's trials use, the loop and its
closing lines."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sweep.builder import PairBuilder
from sweep.commands.common import command, mask_url
from sweep.homework.check import FirstAdapterCheck
from sweep.homework.study import HomeworkBuilder
from sweep.settings import StudySettings
from sweep.study import run_study
from sweep.trial import RanksweepBuilder
from trainers.errors import RanksweepError


def writable_folder(folder: Path, flag: str) -> Path:
    """Refuse a folder that cannot be created (a path under a regular file, a read-only parent) before the
    study is created or anything trained; nothing is written here."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RanksweepError(f"Cannot write to {flag} '{folder}': '{existing}' is not a writable folder; "
                             "choose another path.")
    return folder


def builder_for(settings: StudySettings, *, progress: bool) -> PairBuilder:
    """The builder that makes a trial's two adapters, by `settings.trainer`."""
    if settings.trainer == "ranksweep":
        builder = RanksweepBuilder(settings, progress=progress)
        if settings.homework is not None:  # its first trained adapter is graded by the homework's code too
            return FirstAdapterCheck(builder, settings)
        return builder
    if settings.trainer == "homework":  # the user's own commands, in scratch copies of the tree
        return HomeworkBuilder(settings)
    raise RanksweepError(f"Unknown trainer '{settings.trainer}'.")


def execute(opened, settings, *, progress: bool) -> int:
    """Run the study loop and print where it stands; shared by launch and worker."""
    storage = mask_url(settings.storage)  # printed commands are quoted for pasting, passwords masked
    resume = command("ranksweep", "launch", "--study", settings.name, "--storage", storage)
    try:
        state = run_study(opened, settings, builder_for(settings, progress=progress), progress=progress)
    except KeyboardInterrupt:
        print(f"\nStopped: the running trial was marked failed and will be retried. Resume with: {resume} "
              "(same flags)", file=sys.stderr)
        return 130
    done = len(state.completed)
    if done >= settings.trials:
        print(f"Study '{settings.name}': {done} pairs trained and graded.")
    elif state.running:
        print(f"Study '{settings.name}': {done} pairs complete; the last {len(state.running)} are running in other "
              "processes.")
    else:
        print(f"Study '{settings.name}': every feasible pair has been tried ({done} complete, "
              f"{settings.trials} asked for).")
    print(f"See it with: {command('ranksweep', 'status', '--study', settings.name, '--storage', storage)}   "
          f"and: {command('ranksweep', 'report', '--study', settings.name, '--storage', storage)}")
    return 0
