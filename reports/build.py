"""Assemble a study's report: compute everything, render the six files in memory, then write them.

Rendering finishes before the first byte is written, and each file lands by temp file + rename, so an
error never leaves a half-written report behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from reports.html import report_html
from reports.plots import pareto_figure, png_bytes, ranks_figure
from reports.report import Report
from reports.tables import frontier_table, margin_table, readable_frontier, state_counts, trial_table
from sweep.files import unusable_study_name
from sweep.frontier import SEPARATE_ADVICE, adapter_table, budget_bytes, combined_frontier, decided, pick
from sweep.evidence import load_record
from sweep.objective import objective_for
from sweep.settings import config_grading_key
from sweep.sizing import MIB
from sweep.study_io import load_trials
from sweep.verdict import margins, rank_steps, seconds_per_question, seed_spreads
from trainers.errors import RanksweepError

if TYPE_CHECKING:
    import pandas as pd

FILES = ("trials.csv", "frontier.csv", "margins.csv", "pareto.png", "ranks.png", "report.html")


def build(storage: str, study_name: str, objective: str | None = None) -> Report:
    """Read the study and compute its tables and recommendation; trains nothing, writes nothing."""
    trials, config = load_trials(storage, study_name)
    goal = objective_for(objective, config)
    budget = budget_bytes(config)
    pairs = combined_frontier(trials, config, goal.name)
    recommendation, problem = None, None
    decision = load_record(storage, study_name)
    try:
        recommendation = decided(pick(pairs, goal, budget, study_name), pairs, goal, budget, study_name, decision)
    except RanksweepError as exc:  # a report without a pick is still a report: it says why
        problem = str(exc)
    found = _margins(trials, config, pairs, recommendation, goal, decision)
    adapters = adapter_table(trials)
    return Report(study_name, storage, config, goal, budget, trials, adapters, pairs, recommendation, problem,
                  tuple(found), decision, tuple(rank_steps(adapters, config_grading_key(config))))


def _margins(trials, config, pairs, recommendation, goal, record):
    """The pick's paired margins over its rivals (sweep/verdict.py); none without a pick."""
    if recommendation is None:
        return []
    keys = (recommendation.sft_key, recommendation.rft_key)
    return margins(pairs, keys, config_grading_key(config), record, seconds_per_question(trials), goal.sign)


def render(report: Report) -> dict[str, bytes]:
    """The six report files as bytes, by file name."""
    shown = "answer NLL" if report.goal.name == "answer-nll" else report.goal.noun
    title = f"Study '{report.study}': {shown} against zipped size"
    pareto = png_bytes(pareto_figure(marked_pairs(report), report.trials, report.goal, report.budget_bytes, title))
    ranks = png_bytes(ranks_figure(report.adapters, report.config))
    return {
        "trials.csv": _csv(trial_table(report.trials, report.budget_bytes)),
        "frontier.csv": _csv(frontier_table(report.pairs)),
        "margins.csv": _csv(margin_table(report.margins)),
        "pareto.png": pareto,
        "ranks.png": ranks,
        "report.html": report_html(report, pareto, ranks).encode(),
    }


def marked_pairs(report: Report) -> pd.DataFrame:
    """The pairs with `is_pick` and `indistinct` (a rival the paired test cannot tell from the pick) columns."""
    pairs = report.pairs
    keys = list(zip(pairs["sft_key"], pairs["rft_key"]))
    rec = report.recommendation
    pick = (rec.sft_key, rec.rft_key) if rec is not None else None
    open_rivals = {m.other_keys for m in report.margins if not m.decisive}
    return pairs.assign(is_pick=[k == pick for k in keys], indistinct=[k in open_rivals for k in keys])


def _csv(frame: pd.DataFrame) -> bytes:
    # Ten significant digits: whole bytes stay whole, 1.2499999999999942 points reads 1.25.
    return frame.to_csv(index=False, float_format="%.10g").encode()


def default_out(study_name: str) -> Path:
    """runs/<study>/report/ under the working directory, the study name made safe as one folder name."""
    return Path("runs") / (re.sub(r"[^\w.-]+", "_", study_name).strip(".") or "study") / "report"


def report_folder(name: str) -> Path:
    """runs/<study>/report/, for a study name that can name a folder; a name the folder spells differently
    ("a b" -> "a_b") gets a short hash of the real name, so two studies never share a report folder."""
    problem = unusable_study_name(name)
    if problem:
        raise RanksweepError(f"Study {problem}, or name a report folder with --out.")
    out = default_out(name)
    if out.parent.name != name:
        out = out.parent.with_name(f"{out.parent.name}-{hashlib.sha256(name.encode()).hexdigest()[:8]}") / out.name
    return out


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
        lines += margin_lines(report)
    return "\n".join(lines)


def margin_lines(report: Report) -> list[str]:
    """The pick's paired margins and the decision phase's conclusion, as the terminal shows them."""
    lines = []
    if report.margins:
        lines.append("Margins (paired: the same questions, points difference with a 95% bootstrap interval):")
        lines += [f"  {m.relation}: {m.sentence()}" for m in report.margins]
    if report.rank_steps:
        lines.append("Neighbouring ranks (paired on the same questions, larger rank minus smaller):")
        lines += [f"  {step.sentence()}" for step in report.rank_steps]
    decision = report.decision
    if decision is not None and decision.rounds + len(decision.seeds):
        seeds = sum(len(v) for v in decision.seeds.values())
        lines.append(f"Decision phase: {decision.rounds} round(s), {decision.questions} questions per adapter, "
                     f"{seeds} extra seed(s), {decision.seconds / 60:.1f} min; {decision.verdict or 'not finished'}")
        spreads = seed_spreads(report.pairs, config_grading_key(report.config), decision)
        if spreads:
            lines.append("Seed spread (an adapter's points are the mean over its seeds):")
            lines += [f"  {line}" for line in spreads]
    return lines
