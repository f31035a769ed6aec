"""Sweep cost: trainings run, wall time and orchestration overhead of a real study.

Runs `python -m sweep launch` (as a user does) on `tiny` (or `--base-model embedded`) with small
homework-format data and a given `--rft-data` (so no RFT sampling), a 6×6 rank grid and 24 trials, then
reads the study back:
  trainings run versus the naive 2 per completed trial, and versus the distinct adapters needed;
  orchestration overhead = the study loop's span (first trial's start to last trial's end, from Optuna's
  datetimes) minus the seconds the trials spent training and grading. So it counts everything else the
  loop does, in and between trials: reading the study, sampling, creating and finishing trials, size
  prediction, cache locks and hash checks, zipping for the measured size, storage writes, skipped pairs.
  The bench then zips each newly trained adapter again and reports the overhead without that time too:
  what remains is sampling and storage (the issue's "orchestration"). For scale it also times a bare
  Optuna loop (ask six categorical parameters, tell two values) on SQLite: the floor per trial.

    python bench/sweep_cost.py [--trials 24] [--ranks 1,2,4,8,16,32] [--max-examples 16] [--questions 4]
    python bench/sweep_cost.py --base-model embedded --ranks 2,8 --trials 4 --questions 8
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
from common import ROOT, median, table, write_result  # noqa: E402
from tests.small_data import write_small_data  # noqa: E402


def _zip_seconds(trials) -> float:
    """Seconds to deflate each adapter the study trained, timed again here: the part of the overhead that
    measures sizes (each new adapter is zipped once, as the submission zips it) rather than sampling or storage."""
    from sweep.bundle import submission_bytes

    seconds = 0.0
    for t in trials:
        for kind in ("sft", "rft"):
            if t.user_attrs.get(f"{kind}_cache_hit") is False:
                start = time.perf_counter()
                submission_bytes(None, **{f"{kind}_dir": Path(t.user_attrs[f"{kind}_dir"])})
                seconds += time.perf_counter() - start
    return seconds


def _optuna_floor(root: Path, ranks: str, asks: int) -> float:
    """Seconds per trial of a bare Optuna loop on the same kind of storage: `ask` with the study's six
    categorical parameters, `tell` two values, nothing else (no attrs, no work). A floor for what any study
    loop built on Optuna's storage API pays per trial on this machine."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    choices = [int(r) for r in ranks.split(",")]
    space = {"sft_rank": choices, "rft_rank": choices, "alpha_ratio": [4.0], "lr": [1e-3], "epochs": [1.0],
             "adapter_dtype": ["fp32"]}
    distributions = {k: CategoricalDistribution(v) for k, v in space.items()}
    sampler = optuna.samplers.TPESampler(seed=0, multivariate=True, n_startup_trials=4)
    study = optuna.create_study(storage=f"sqlite:///{root}/floor.db", directions=["maximize", "minimize"],
                                sampler=sampler)
    start = time.perf_counter()
    for _ in range(asks):
        trial = study.ask(distributions)
        study.tell(trial, [0.0, float(trial.params["sft_rank"] + trial.params["rft_rank"])])
    return (time.perf_counter() - start) / asks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--ranks", default="1,2,4,8,16,32", help="SFT and RFT rank grid (6×6 by default)")
    parser.add_argument("--max-examples", type=int, default=16)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--budget-mb", type=float, default=50.0, help="large: every pair of the grid fits")
    parser.add_argument("--base-model", default="tiny", choices=["tiny", "embedded"])
    args = parser.parse_args()

    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_small_data(root)
        storage = f"sqlite:///{root}/studies.db"
        cmd = [sys.executable, "-m", "sweep", "launch", "--study", "bench", "--storage", storage,
               "--base-model", args.base_model, "--device", "cpu", "--preset", "quick", "--sft-ranks", args.ranks,
               "--rft-ranks", args.ranks, "--budget-mb", str(args.budget_mb), "--trials", str(args.trials),
               "--train-data", str(root / "train.json"), "--valid-data", str(root / "valid.json"),
               "--rft-data", str(root / "rft.json"), "--max-examples", str(args.max_examples),
               "--questions", str(args.questions), "--artifacts", str(root / "artifacts"), "--no-progress"]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"launch failed:\n{done.stderr[-3000:]}")
        study = optuna.load_study(study_name="bench", storage=storage)
        trials = study.get_trials(deepcopy=False)
        zip_seconds = _zip_seconds(trials)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        floor = _optuna_floor(root, args.ranks, len(trials))

    states = optuna.trial.TrialState
    complete = [t for t in trials if t.state == states.COMPLETE]
    pruned = [t for t in trials if t.state == states.PRUNED]
    trained = [(k, t.user_attrs[f"{k}_key"]) for t in complete for k in ("sft", "rft")
               if not t.user_attrs[f"{k}_cache_hit"]]
    distinct = {(k, t.user_attrs[f"{k}_key"]) for t in complete for k in ("sft", "rft")}

    def seconds(t):
        return (t.datetime_complete - t.datetime_start).total_seconds()

    def work(t):
        return sum(t.user_attrs[f"{k}_{w}_seconds"] for k in ("sft", "rft") for w in ("train", "grade"))

    per_trial = [{"trial": t.number, "sft_rank": t.user_attrs["sft_rank"], "rft_rank": t.user_attrs["rft_rank"],
                  "wall_s": seconds(t), "train_grade_s": work(t), "in_trial_overhead_s": seconds(t) - work(t)}
                 for t in complete]
    finished = complete + pruned
    loop_span = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in trials)).total_seconds()
    work_s = sum(work(t) for t in complete)
    overhead = loop_span - work_s
    payload = {
        "base_model": args.base_model,
        "grid": f"{len(args.ranks.split(','))}x{len(args.ranks.split(','))}",
        "launch_wall_s": wall,
        "trials_total": len(trials),
        "trials_complete": len(complete),
        "trials_pruned": len(pruned),
        "pruned_reasons": sorted({t.user_attrs.get("skipped") for t in pruned} - {None}),
        "trainings_run": len(trained),
        "trainings_naive": 2 * len(complete),
        "distinct_adapters": len(distinct),
        "loop_span_s": loop_span,
        "train_grade_s": work_s,
        "overhead_s": overhead,
        "overhead_share": overhead / loop_span,
        "overhead_per_trial_s": overhead / len(trials),
        "zip_new_adapters_s": zip_seconds,
        "overhead_without_zip_per_trial_s": (overhead - zip_seconds) / len(trials),
        "overhead_without_zip_share": (overhead - zip_seconds) / loop_span,
        "optuna_floor_per_trial_s": floor,
        "optuna_floor_share": floor * len(trials) / loop_span,
        "median_in_trial_overhead_s": median([p["in_trial_overhead_s"] for p in per_trial]),
        "outside_loop_s": wall - loop_span,
        "per_trial": per_trial,
    }
    keys = ["launch_wall_s", "outside_loop_s", "loop_span_s", "trials_complete", "trials_pruned", "trainings_run",
            "trainings_naive", "distinct_adapters", "train_grade_s", "overhead_s", "overhead_per_trial_s",
            "overhead_share", "median_in_trial_overhead_s", "zip_new_adapters_s", "overhead_without_zip_per_trial_s",
            "overhead_without_zip_share", "optuna_floor_per_trial_s", "optuna_floor_share"]
    print(table([{"metric": k, "value": payload[k]} for k in keys], ["metric", "value"]))
    name = "sweep_cost" if args.base_model == "tiny" else f"sweep_cost_{args.base_model}"
    print("wrote", write_result(name, args, payload))


if __name__ == "__main__":
    main()
