"""How many of a study's neighbouring-rank comparisons are decisive: unpaired (two Wilson intervals that do not
overlap) against paired (the exact McNemar interval excludes 0), and the pick's margins. Reads a finished study;
trains and grades nothing, so run it before and after `ranksweep decide` to see what the phase bought.

    python bench/paired_decisions.py --study demo [--storage sqlite:///studies.db]

Not run for issue 22 on 2026-12-07 (no study of this version on the embedded model yet; see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse

from common import ROOT  # noqa: F401  (puts the project on sys.path)

from reports.build import build
from sweep.paired import common_questions
from sweep.settings import config_grading_key
from sweep.evidence import adapter_outcomes
from trainers.grading import wilson_interval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage", default="sqlite:///studies.db")
    args = parser.parse_args()
    report = build(args.storage, args.study)
    key = config_grading_key(report.config)
    paired = unpaired = 0
    for step in report.rank_steps:
        low, high = adapter_outcomes(step.low_dir, key), adapter_outcomes(step.high_dir, key)
        asked = set(common_questions(low, high))
        a = sum(o.correct for o in high if o.identity in asked)
        b = sum(o.correct for o in low if o.identity in asked)
        a_low, a_high = wilson_interval(a, len(asked))
        b_low, b_high = wilson_interval(b, len(asked))
        apart = a_low > b_high or b_low > a_high
        unpaired += apart
        paired += step.accuracy.decisive
        print(f"{step.sentence()}; unpaired Wilson intervals {'apart' if apart else 'overlap'}")
    print(f"decisive: {paired} of {len(report.rank_steps)} paired, {unpaired} unpaired")
    for margin in report.margins:
        print(f"{margin.relation}: {margin.sentence()}")


if __name__ == "__main__":
    main()
