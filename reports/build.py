"""Assemble a study's report: compute everything, render the five files in memory, then write them.

Rendering finishes before the first byte is written, and each file lands by temp file + rename, so an
error never leaves a half-written report behind.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from reports.frontier import MIB, SEPARATE_ADVICE, adapter_table, budget_bytes, combined_frontier, load_trials, pick
from reports.objective import objective_for
from reports.report import Report
from trainers.errors import RanksweepError

if TYPE_CHECKING:
    import pandas as pd

FILES = ("trials.csv", "frontier.csv", "pareto.png", "ranks.png", "report.html")


def build(storage: str, study_name: str, objective: str | None = None) -> Report:
    """Read the study and compute its tables and recommendation; trains nothing, writes nothing."""
    trials, config = load_trials(storage, study_name)
    goal = objective_for(objective, config)
    budget = budget_bytes(config)
    pairs = combined_frontier(trials, config, goal.name)
    recommendation, problem = None, None
    try:
        recommendation = pick(pairs, goal, budget, study_name)
    except RanksweepError as exc:  # a report without a pick is still a report: it says why
        problem = str(exc)
    return Report(study_name, storage, config, goal, budget, trials, adapter_table(trials), pairs,
                  recommendation, problem)


def render(report: Report) -> dict[str, bytes]:
    """The five report files as bytes, by file name."""
    from reports.html import report_html
    from reports.plots import pareto_figure, png_bytes, ranks_figure
    from reports.tables import frontier_table, trial_table

    shown = "answer NLL" if report.goal.name == "answer-nll" else report.goal.noun
    title = f"Study '{report.study}': {shown} against zipped size"
    pareto = png_bytes(pareto_figure(report.pairs, report.trials, report.goal, report.budget_bytes, title))
    ranks = png_bytes(ranks_figure(report.adapters, report.config))
    return {
        "trials.csv": _csv(trial_table(report.trials, report.budget_bytes)),
        "frontier.csv": _csv(frontier_table(report.pairs)),
        "pareto.png": pareto,
        "ranks.png": ranks,
        "report.html": report_html(report, pareto, ranks).encode(),
    }


def _csv(frame: pd.DataFrame) -> bytes:
    # Ten significant digits: whole bytes stay whole, 1.2499999999999942 points reads 1.25.
    return frame.to_csv(index=False, float_format="%.10g").encode()


def default_out(study_name: str) -> Path:
    """runs/<study>/report/ under the working directory, the study name made safe as one folder name."""
    return Path("runs") / (re.sub(r"[^\w.-]+", "_", study_name).strip(".") or "study") / "report"


def write_files(files: dict[str, bytes], out: Path) -> list[Path]:
    """Write each file into `out` (created if missing) by temp file + rename; returns the paths written."""
    if out.exists() and not out.is_dir():
        raise RanksweepError(f"--out {out} is a file; name a folder for the report.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RanksweepError(f"Cannot create {out} ({exc.strerror}); pass another --out folder.") from None
    umask = os.umask(0)
    os.umask(umask)  # mkstemp makes owner-only files; a report is as readable as any file the user writes
    written = []
    for name, data in files.items():
        handle, temp = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.chmod(temp, 0o666 & ~umask)
            os.replace(temp, out / name)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        written.append(out / name)
    return written


def summary(report: Report) -> str:
    """What the terminal shows: trial counts, the frontier table, the recommended pair and why."""
    from reports.tables import readable_frontier, state_counts

    states = state_counts(report.trials)
    trials = "1 trial" if len(report.trials) == 1 else f"{len(report.trials)} trials"
    lines = [f"Study '{report.study}': {trials} ({states}); "
             f"budget {report.budget_bytes / MIB:.2f} MiB; objective {report.goal.name}."]
    front = readable_frontier(report.pairs, report.goal)
    if front.empty:
        lines.append("Pareto frontier: empty (" + ("no graded trials yet" if report.pairs.empty
                                                   else "no pair fits the budget") + ").")
    else:
        lines += ["Pareto frontier (pairs no other pair beats on both size and score; trial '-' = never trained "
                  "together):", front.to_string(index=False)]
    rec = report.recommendation
    if rec is None:
        lines.append(f"No recommendation: {report.problem}")
    else:
        which = f"trial {rec.trial}" if rec.trial is not None else "not trained as one trial"
        lines.append(f"Recommended: SFT rank {rec.sft_rank}, RFT rank {rec.rft_rank} (alpha {rec.sft_alpha:g}/"
                     f"{rec.rft_alpha:g}, {rec.adapter_dtype}, {rec.size_bytes / MIB:.2f} MiB, {which}).")
        lines.append(f"Why: {rec.reason}")
        if rec.overlaps:
            lines.append(f"Note: its 95% {report.goal.noun} {rec.overlaps}; {SEPARATE_ADVICE}.")
    return "\n".join(lines)
