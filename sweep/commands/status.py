"""`ranksweep status`: a table of a study's trials and how many trainings it cost."""

from __future__ import annotations

import argparse
import json

from reports.build import build, margin_lines
from sweep.commands.common import add_storage
from sweep.records import TrialResult
from sweep.sizing import mib
from sweep.study import load_existing
from trainers.errors import RanksweepError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "status",
        help="show a study's trials: ranks, size, accuracy, points, state",
        description="Print one row per trial of a study (complete, failed, pruned and running ones) and how "
        "many adapters were trained versus reused from the cache. Trainings count every adapter a trial trained "
        "and cached, also in trials that failed or were killed afterwards.",
    )
    p.add_argument("--study", required=True, help="study name")
    add_storage(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def study_status(study) -> dict:
    """The status document: one entry per trial plus training counts (what --json prints)."""
    trials, trainings = [], {"sft": 0, "rft": 0, "reused": 0, "derived_sft": 0, "derived_rft": 0}
    sealed: set[tuple[str, str]] = set()  # (kind, cache key) of each adapter the study trained
    sealed_derived: set[tuple[str, str]] = set()
    for t in study.get_trials(deepcopy=False):
        r = TrialResult.from_trial(t)
        trials.append({
            "number": t.number,
            "state": t.state.name,
            "sft_rank": r.sft_rank,
            "rft_rank": r.rft_rank,
            "size_bytes": r.size,
            "points": r.points,
            "sft_accuracy": r.sft.accuracy if r.sft else None,
            "rft_accuracy": r.rft.accuracy if r.rft else None,
            # Nats per answer token, lower is better; None where the adapter was graded without it.
            "sft_answer_nll": r.sft.answer_nll if r.sft else None,
            "sft_answer_nll_se": r.sft.answer_nll_se if r.sft else None,
            "rft_answer_nll": r.rft.answer_nll if r.rft else None,
            "rft_answer_nll_se": r.rft.answer_nll_se if r.rft else None,
            "feasible": r.feasible,
            "skipped": r.skipped,
            "error": r.error,
        })
        if r.trained is not None or r.derived is not None:
            # Recorded as each adapter was sealed into the cache, whatever became of the trial afterwards.
            sealed.update((kind, key) for kind, key in r.sealed("trained"))
            sealed_derived.update((kind, key) for kind, key in r.sealed("derived"))
            if t.state.name == "COMPLETE":
                trainings["reused"] += sum(a.cache_hit for a in r.adapters())
        elif t.state.name == "COMPLETE":  # a trial recorded before those attrs: read from its adapters
            for adapter in r.adapters():
                if adapter.cache_hit:
                    trainings["reused"] += 1
                elif adapter.parent_key is None:  # trained on its own (by ranksweep or the homework's command)
                    sealed.add((adapter.kind, adapter.key))
                else:  # derived from a parent, which the trial trained when train_seconds > 0
                    sealed_derived.add((adapter.kind, adapter.key))
                    if adapter.train_seconds > 0:
                        sealed.add((adapter.kind, adapter.parent_key))
    for kind, _ in sealed:
        trainings[kind] += 1
    for kind, _ in sealed_derived:
        trainings[f"derived_{kind}"] += 1
    return {"study": study.study_name, "trials": trials, "trainings": trainings}


def _cell(value, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _nll(nll: float | None, se: float | None) -> str:
    """'0.842±0.031' (nats per answer token), without the SE when there is none, '-' when not recorded."""
    if nll is None:
        return "-"
    return f"{nll:.3f}" if se is None else f"{nll:.3f}±{se:.3f}"


def run(args) -> int:
    doc = study_status(load_existing(args.study, args.storage).study)
    report = _report(args)
    if args.json:
        doc["margins"] = [m.to_dict() for m in report.margins] if report is not None else []
        print(json.dumps(doc, indent=1))
        return 0
    header = (f"{'#':>4} {'state':9} {'sft':>4} {'rft':>4} {'MiB':>7} {'points':>7} {'sft acc':>8} {'rft acc':>8} "
              f"{'sft NLL':>11} {'rft NLL':>11}  note")
    print(header)
    for t in doc["trials"]:
        note = t["skipped"] or (t["error"] or "")[:60] or ("" if t["feasible"] in (True, None) else "over budget")
        size = None if t["size_bytes"] is None else mib(t["size_bytes"])
        print(f"{t['number']:>4} {t['state']:9} {_cell(t['sft_rank']):>4} {_cell(t['rft_rank']):>4} "
              f"{_cell(size, '{:.2f}'):>7} {_cell(t['points'], '{:.1f}'):>7} "
              f"{_cell(t['sft_accuracy'], '{:.0%}'):>8} {_cell(t['rft_accuracy'], '{:.0%}'):>8} "
              f"{_nll(t['sft_answer_nll'], t['sft_answer_nll_se']):>11} "
              f"{_nll(t['rft_answer_nll'], t['rft_answer_nll_se']):>11}  {note}")
    n = doc["trainings"]
    derived = f"; adapters derived from them: {n['derived_sft']} SFT + {n['derived_rft']} RFT" if (
        n["derived_sft"] + n["derived_rft"]) else ""
    if any(t["sft_answer_nll"] is not None or t["rft_answer_nll"] is not None for t in doc["trials"]):
        print("NLL: mean negative log-likelihood per token of the true answer ± its standard error (nats, lower is "
              "better)")
    print(f"trainings run: {n['sft']} SFT + {n['rft']} RFT{derived}; adapters reused from the cache: {n['reused']}")
    if report is not None and report.recommendation is not None:
        rec = report.recommendation
        print(f"Recommended: SFT rank {rec.sft_rank}, RFT rank {rec.rft_rank} ({rec.points:.1f} points).")
        for line in margin_lines(report):
            print(line)
    return 0


def _report(args):
    """The study's computed report (for the pick and its paired margins), or None where it has none yet."""
    try:
        return build(args.storage, args.study)
    except RanksweepError:  # no budget in its config, or an objective it cannot rank: the trial table still shows
        return None
