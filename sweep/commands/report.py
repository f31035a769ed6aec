"""`ranksweep report`: a study's Pareto frontier as CSV tables, two figures and one HTML page."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from reports.build import FILES, build, render, report_folder, summary, write_files
from sweep.commands.common import add_storage, check_output, mask_url
from sweep.objective import OBJECTIVES



def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="write a study's Pareto frontier: trials.csv, frontier.csv, margins.csv, pareto.png, ranks.png, report.html",
        description="Read a study (finished or still running; nothing is trained), combine every graded SFT "
        "adapter with every graded RFT adapter, find the pairs that no other pair beats on both zipped size and "
        "score within the budget, and write the tables, the figures and one self-contained HTML page. The "
        "frontier and the recommended pair are printed too.",
    )
    p.add_argument("--study", required=True, help="study name")
    add_storage(p)
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the report files: new, empty, or an earlier report (default: runs/<study>/report/)")
    p.add_argument("--objective", choices=tuple(OBJECTIVES), default=None,
                   help="score pairs by this instead of the study's objective (points are tie-broken by answer NLL, "
                   "or mean accuracy for adapters graded without one; answer-nll is minimised)")
    return p


def _is_report_folder(path: Path) -> bool:
    """A folder holding report files only (and temp files of an interrupted write), so rewriting it loses nothing."""
    return path.is_dir() and all(e.is_file() and (e.name in FILES or e.name.startswith(".")) for e in path.iterdir())


def run(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else report_folder(args.study)
    check_output(out, "--out", ours=_is_report_folder, what="a ranksweep report folder")  # before the study is read
    report = build(args.storage, args.study, args.objective)
    files = render(replace(report, storage=mask_url(report.storage)))  # the page names its storage, never a password
    written = write_files(files, out)
    print(summary(report))
    print(f"Wrote {len(written)} files to {out}/: " + ", ".join(path.name for path in written))
    return 0
