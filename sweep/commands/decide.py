"""`ranksweep decide`: the decision phase on a study whose search is done (sweep/decision.py)."""

from __future__ import annotations

import argparse

from sweep.commands.common import add_device, add_no_progress, add_storage, positive_float, positive_int
from sweep.commands.running import decide_study
from sweep.decision import DEFAULT_MINUTES, MAX_SEEDS, ROUND_QUESTIONS
from sweep.settings import settings_from_config
from sweep.study import load_existing


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "decide",
        help="grade the recommended pair and its close rivals on more questions (and seeds) until the pick is decisive",
        description="Compare the recommended pair with the next-best feasible pair and every smaller pair whose "
        "interval overlaps it, paired on the same questions. While a comparison is not decisive, grade the "
        "adapters involved on more validation questions in rounds (dropping a rival once it is decisively "
        "behind), and when the questions run out train them again with other seeds. Stops when decisive, "
        "when questions and seeds are spent, or at --minutes. Rerunning continues where it stopped.",
    )
    p.add_argument("--study", required=True, help="study name")
    add_storage(p)
    add_device(p)
    p.add_argument("--minutes", type=positive_float, default=DEFAULT_MINUTES,
                   help=f"time budget of this run in minutes (default: {DEFAULT_MINUTES:g})")
    p.add_argument("--round-questions", type=positive_int, default=ROUND_QUESTIONS,
                   help=f"validation questions added per round (default: {ROUND_QUESTIONS})")
    p.add_argument("--seeds", type=positive_int, default=MAX_SEEDS,
                   help=f"seeds per adapter at most, the first training included (default: {MAX_SEEDS})")
    add_no_progress(p)
    return p


def run(args) -> int:
    # The phase writes its evidence into the study: a read-only storage is refused here, before any grading.
    opened = load_existing(args.study, args.storage, writes=True)
    settings = settings_from_config(opened.config, name=args.study, storage=args.storage, device=args.device,
                                    artifacts=None)
    decide_study(opened, settings, minutes=args.minutes, round_questions=args.round_questions, max_seeds=args.seeds,
                 progress=not args.no_progress)
    return 0
