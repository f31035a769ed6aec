"""Does the sampler learn the budget? Over-budget proposals early and late in a real study.

Runs `python -m sweep launch` on `tiny` (real training and grading, small data) over a 6×6 rank grid
(1..32) with a budget that half of the 36 pairs exceed (0.135 MiB), asking for every feasible pair, then
reads the first 24 trials back. After a pair is skipped the loop steers the next trial to a random
untried pair; those steered trials are not the sampler's choice, so a trial counts as a *proposal* only
when the trial before it was not skipped. Reported per half (trials 0-11, 12-23): proposals, and how
many of them were over the budget. `--code DIR` runs the same study with another checkout's code (for
the before/after comparison: the loop before the size constraint was written on over-budget trials).

    python bench/budget_learning.py [--seeds 0,1] [--code /path/to/other/checkout] [--label after]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, table, write_result  # noqa: E402
from tests.small_data import write_small_data  # noqa: E402

RANKS = "1,2,4,8,16,32"
BUDGET_MB = 0.135  # 18 of the 36 pairs fit on `tiny`
FEASIBLE = 18
FIRST = 24


def halves(trials) -> dict:
    """Proposals and over-budget proposals in trials 0-11 and 12-23 (numbers in trial order)."""
    trials = sorted(trials, key=lambda t: t.number)[:FIRST]
    counts = {}
    for name, part in (("first", range(0, FIRST // 2)), ("second", range(FIRST // 2, FIRST))):
        proposals = [t for t in trials if t.number in part
                     and (t.number == 0 or trials[t.number - 1].state.name != "PRUNED")]
        over = [t for t in proposals if t.user_attrs.get("skipped") == "over-budget"]
        counts[name] = {"proposals": len(proposals), "over_budget": len(over)}
    return counts


def run(code: Path, seed: int, work: Path) -> dict:
    import optuna

    data = write_small_data(work)
    url = f"sqlite:///{work}/studies.db"
    args = ["launch", "--study", "b", "--storage", url, "--base-model", "tiny", "--device", "cpu",
            "--preset", "quick", "--sft-ranks", RANKS, "--rft-ranks", RANKS, "--budget-mb", str(BUDGET_MB),
            "--trials", str(FEASIBLE), "--train-data", str(data / "train.json"), "--valid-data",
            str(data / "valid.json"), "--rft-data", str(data / "rft.json"), "--max-examples", "16",
            "--questions", "4", "--artifacts", str(work / "artifacts"), "--no-progress", "--seed", str(seed)]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sweep", *args], cwd=code, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(code)})
    seconds = time.perf_counter() - start
    trials = optuna.load_study(study_name="b", storage=url).get_trials()
    return {"seed": seed, "trials": len(trials), "seconds": round(seconds, 1), **halves(trials)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose `sweep` runs the study")
    parser.add_argument("--label", default="after")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run(args.code.resolve(), seed, Path(tmp)))
        print(rows[-1], flush=True)
    total = {h: {k: sum(r[h][k] for r in rows) for k in ("proposals", "over_budget")} for h in ("first", "second")}
    columns = ["seed", "trials", "trials 0-11: over/proposals", "trials 12-23: over/proposals", "seconds"]
    print(table([{"seed": r["seed"], "trials": r["trials"], "seconds": r["seconds"],
                  columns[2]: f"{r['first']['over_budget']}/{r['first']['proposals']}",
                  columns[3]: f"{r['second']['over_budget']}/{r['second']['proposals']}"} for r in rows], columns))
    print("total", total)
    args.code = str(args.code)
    write_result(f"budget_learning_{args.label}", args, {"ranks": RANKS, "budget_mb": BUDGET_MB, "runs": rows,
                                                         "total": total})


if __name__ == "__main__":
    main()
