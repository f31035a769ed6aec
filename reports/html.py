"""The report as one self-contained HTML page: figures embedded as base64, tables, the pick and the config."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from html import escape
from typing import TYPE_CHECKING

from reports.tables import readable_adapters, readable_frontier, state_counts
from sweep.frontier import SEPARATE_ADVICE
from sweep.sizing import MIB

if TYPE_CHECKING:
    from reports.report import Report

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1180px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 13px; } td, th { padding: 3px 9px; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pick { background: #eef6ee; border-left: 4px solid #2e7d32; padding: 0.6em 1em; }
.warn { background: #fff6e5; border-left: 4px solid #e69500; padding: 0.6em 1em; }
img { max-width: 100%; height: auto; } code { background: #f3f3f3; padding: 0 3px; }
"""


def report_html(report: Report, pareto_png: bytes, ranks_png: bytes) -> str:
    """The page as a string; every value from the study is escaped."""
    states = escape(state_counts(report.trials))
    trials = "1 trial" if len(report.trials) == 1 else f"{len(report.trials)} trials"
    running = int((report.trials["state"] == "RUNNING").sum())
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>ranksweep report: {escape(report.study)}</title>',
        f"<style>{STYLE}</style></head><body>",
        f"<h1>ranksweep report: study <code>{escape(report.study)}</code></h1>",
        f"<p>{trials} ({states}); budget {report.budget_bytes / MIB:.2f} MiB; "
        f"objective <code>{escape(report.goal.name)}</code>. Made {made} from "
        f"<code>{escape(report.storage)}</code>.</p>",
    ]
    if running:
        in_progress = "1 trial" if running == 1 else f"{running} trials"
        parts.append(f'<p class="warn">The study is still running ({in_progress} in progress): '
                     "report again later for the final picture.</p>")
    parts += ["<h2>Recommended pair</h2>", _pick(report)]
    parts += [
        "<h2>Size against score</h2>",
        _img(pareto_png, "Pareto plot: zipped size against the objective"),
        "<p>Every combination of a graded SFT adapter with a graded RFT adapter is a pair. Trained trials "
        "are measured; other pairs are computed, their size summed from the adapters' zipped parts plus the "
        "rest of the homework. Bars span the score the adapters' 95% Wilson bounds allow.</p>",
        "<h2>Pareto frontier</h2>",
        _table(readable_frontier(report.pairs, report.goal),
               empty="no graded trials yet" if report.pairs.empty else "no pair fits the budget"),
        "<p>Full numbers: <code>frontier.csv</code> (this table) and <code>trials.csv</code> (every trial). "
        "Answer NLL: the mean negative log-likelihood per token of the true answer (nats, lower is better), "
        "averaged over the pair's two adapters, ± its standard error; '-' where the adapters were graded "
        "before ranksweep recorded it.</p>",
        "<h2>Graded adapters</h2>",
        _table(readable_adapters(report.adapters), empty="no graded adapters yet"),
        "<h2>Accuracy against rank</h2>",
        _img(ranks_png, "Accuracy against LoRA rank for SFT and RFT adapters"),
        "<h2>Study configuration</h2>",
        _config(report.config.to_attrs()),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _pick(report: Report) -> str:
    rec = report.recommendation
    if rec is None:
        return f'<p class="warn">No recommendation: {escape(report.problem or "")}</p>'
    trial = f"trial {rec.trial}" if rec.trial is not None else "never trained together as one trial"
    rows = [
        ("SFT rank / RFT rank", f"{rec.sft_rank} / {rec.rft_rank}"),
        ("lora_alpha (SFT / RFT)", f"{rec.sft_alpha:g} / {rec.rft_alpha:g}"),
        ("adapter dtype", rec.adapter_dtype),
        ("zipped size", f"{rec.size_bytes / MIB:.2f} MiB ({rec.size_bytes:,} bytes)"),
        ("homework points", f"{rec.points:.2f}"),
        *([(report.goal.noun, report.goal.show(rec.objective_value))] if report.goal.name != "points" else []),
        ("source", trial),
        ("SFT adapter", rec.sft_dir),
        ("RFT adapter", rec.rft_dir),
    ]
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    note = ""
    if rec.overlaps:
        note = f"<p>Note: its 95% {escape(report.goal.noun)} {escape(rec.overlaps)}; {escape(SEPARATE_ADVICE)}.</p>"
    if report.margins:  # the pick against its rivals, paired on the same questions (sweep/verdict.py)
        note += ("<p>Margins (paired: the same questions, points difference with a 95% bootstrap interval):</p><ul>"
                 + "".join(f"<li>{escape(m.relation)}: {escape(m.sentence())}</li>" for m in report.margins)
                 + "</ul>")
    if report.rank_steps:
        note += ("<p>Neighbouring ranks (paired on the same questions, larger rank minus smaller):</p><ul>"
                 + "".join(f"<li>{escape(step.sentence())}</li>" for step in report.rank_steps) + "</ul>")
    return (f'<div class="pick"><p><b>SFT rank {rec.sft_rank}, RFT rank {rec.rft_rank}.</b> {escape(rec.reason)}</p>'
            f"{note}<table>{body}</table></div>")


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _table(frame, empty: str) -> str:
    if frame.empty:
        return f"<p><i>{escape(empty)}</i></p>"
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for values in frame.itertuples(index=False):
        cells = "".join(f'<td class="num">{escape(str(v))}</td>' for v in values)
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _config(config: dict) -> str:
    rows = "".join(
        f"<tr><th>{escape(str(key))}</th><td><code>{escape(json.dumps(value, default=str))}</code></td></tr>"
        for key, value in sorted(config.items())
    )
    return f"<table>{rows}</table>"
