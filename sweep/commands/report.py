"""`ranksweep report`: a study's Pareto frontier as CSV tables, two figures and one HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path

from sweep.commands.common import add_storage

OBJECTIVES = ("points", "rft-accuracy", "sft-accuracy", "mean-accuracy")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="write a study's Pareto frontier: trials.csv, frontier.csv, pareto.png, ranks.png, report.html",
        description="Read a study (finished or still running; nothing is trained), combine every graded SFT "
        "adapter with every graded RFT adapter, find the pairs that no other pair beats on both zipped size and "
        "score within the budget, and write the tables, the figures and one self-contained HTML page. The "
        "frontier and the recommended pair are printed too.",
    )
    p.add_argument("--study", required=True, help="study name")
    add_storage(p)
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the report files (default: runs/<study>/report/)")
    p.add_argument("--objective", choices=OBJECTIVES, default=None,
                   help="score pairs by this instead of the study's objective (points are tie-broken by mean "
                   "accuracy)")
    return p


def run(args: argparse.Namespace) -> int:
    from reports.build import build, default_out, render, summary, write_files

    report = build(args.storage, args.study, args.objective)
    files = render(report)
    out = args.out if args.out is not None else default_out(args.study)
    written = write_files(files, out)
    print(summary(report))
    print(f"Wrote {len(written)} files to {out}/: " + ", ".join(path.name for path in written))
    return 0
