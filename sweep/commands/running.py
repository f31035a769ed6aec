"""What several commands share: the builder a study's trials use, the loop and its closing lines (launch,
worker), and the decision phase and its verdict (launch, decide)."""

from __future__ import annotations

import sys

from sweep.builder import PairBuilder
from sweep.commands.common import counted, mask_url
from sweep.decision import MAX_SEEDS, ROUND_QUESTIONS, run_decision
from sweep.frontier import budget_bytes, combined_frontier, pick
from sweep.homework.check import FirstAdapterCheck
from sweep.homework.study import HomeworkBuilder
from sweep.objective import objective_for
from sweep.settings import StudySettings
from sweep.shell import command
from sweep.study import run_study
from sweep.study_io import load_trials
from sweep.trial import RanksweepBuilder
from trainers.errors import RanksweepError


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
    status = command("ranksweep", "status", "--study", settings.name, "--storage", storage)
    if not state.completed and state.given_up:  # nothing to report: not a success
        print(f"ranksweep: error: every trial of study '{settings.name}' failed and no pair is complete; see why "
              f"with: {status}", file=sys.stderr)
        return 1
    if done >= state.target:
        print(f"Study '{settings.name}': {counted(done, 'pair')} trained and graded.")
    elif state.running or state.taken >= state.target:
        running = state.taken - done
        print(f"Study '{settings.name}': {counted(done, 'pair')} complete; the last {running} "
              f"{'is' if running == 1 else 'are'} running in {'another process' if running == 1 else 'other processes'}.")
    else:
        print(f"Study '{settings.name}': every feasible pair has been tried ({done} complete, "
              f"{state.target} asked for).")
    report = command("ranksweep", "report", "--study", settings.name, "--storage", storage)
    print(f"See it with: {status}   and: {report}")
    return 0


def decide_study(opened, settings, *, minutes: float, progress: bool, round_questions: int | None = None,
                 max_seeds: int | None = None) -> None:
    """The decision phase on an opened study from its current pick; prints the verdict and the margins (also run
    by `launch` after its trials)."""
    trials, config = load_trials(opened.storage, settings.name)
    goal = objective_for(None, config)
    pairs = combined_frontier(trials, config, goal.name)
    rec = pick(pairs, goal, budget_bytes(config), settings.name)
    out = run_decision(opened.study, settings, pairs, (rec.sft_key, rec.rft_key), minutes=minutes,
                       round_questions=round_questions or ROUND_QUESTIONS, max_seeds=max_seeds or MAX_SEEDS,
                       sign=goal.sign, progress=progress)
    print(f"Decision phase: pick {out.pick}. {out.stopped[0].upper()}{out.stopped[1:]}")
    for margin in out.margins:
        print(f"  {margin.relation}: {margin.sentence()}")
