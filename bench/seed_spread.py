"""Seed spread of one SFT rank on the quick preset, against the rank effect the quick demo showed.

Trains the quick preset's SFT adapter (embedded model, metric-prefix level, 320 rows, 2 epochs, lr 2e-3,
batch 16) at one rank with seeds 0, 1, 2 (the seed shuffles the rows, draws the batches and initialises LoRA)
and grades each on the level's 200 validation questions, as the quick study grades. Reports each seed's
accuracy, the sample standard deviation over seeds, the paired (McNemar) differences between seeds, and that
spread against the demo's rank effect (SFT rank 2 42.5% against rank 16 49% on the same 200 questions).
Adapters live under bench/known_answer.py's work folder, so a seed-0 adapter trained there is reused, and the
grade of a seed is reused from a previous run's result.

    python bench/seed_spread.py [--rank 16] [--seeds 0 1 2] [--name seed_spread]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_result  # noqa: E402
from known_answer import LEVEL, adapter_name, trained  # noqa: E402

from sweep.paired import accuracy_difference  # noqa: E402
from trainers.outcomes import outcomes_from_json, outcomes_to_json  # noqa: E402

NAME = "seed_spread"
DEMO_RANK_EFFECT = (2, 0.425, 16, 0.49)  # docs/benchmarks.md §6: the quick demo's SFT ranks on 200 questions


def pooled_outcomes(name: str, questions: int):
    """The adapter's outcomes on the first `questions` questions of bench/known_answer.py's pool (the validation
    file's questions, in order), or None where that run did not grade it so far."""
    path = RESULTS / "known_answer_outcomes.json"
    if not path.is_file():
        return None
    found = outcomes_from_json(json.loads(path.read_text()).get(name)) or ()
    return list(found[:questions]) if len(found) >= questions else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default=NAME, help="results/<name>.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    import warnings

    warnings.filterwarnings("ignore")
    from trainers.data import read_qa
    from trainers.grading import grade_model, wilson_interval
    from trainers.models import load_model
    from trainers.training import sft_examples
    from trainers.unitgen import builtin_data

    started = time.perf_counter()
    train_path, valid_path = builtin_data(LEVEL)
    examples, valid = sft_examples(read_qa(train_path)), read_qa(valid_path)[: args.questions]
    loaded = load_model("embedded", "cpu")
    path = RESULTS / f"{args.name}.json"
    earlier = {r["adapter"]: r for r in json.loads(path.read_text()).get("seeds", [])} if path.is_file() else {}
    times: dict[str, float] = {}
    rows, outcomes = [], {}
    for seed in args.seeds:
        name = adapter_name(args.rank, args.epochs, seed)
        pooled = pooled_outcomes(name, len(valid))
        if name in earlier and earlier[name]["questions"] == len(valid):
            row = earlier[name]
        elif pooled is not None:  # bench/known_answer.py graded it on the same validation questions first
            correct = sum(o.correct for o in pooled)
            low, high = wilson_interval(correct, len(pooled))
            row = {"adapter": name, "seed": seed, "accuracy": correct / len(pooled), "ci_low": low, "ci_high": high,
                   "questions": len(pooled), "answer_nll": statistics.mean(o.nll for o in pooled),
                   "outcomes": outcomes_to_json(pooled), "graded_by": "bench/known_answer.py"}
        else:
            folder = trained(loaded, examples, args.rank, args.epochs, seed, times)
            grade = grade_model(loaded, valid, kind="sft", adapter_dir=folder, questions=None, progress=False)
            times[f"grade {name}"] = grade.seconds
            row = {"adapter": name, "seed": seed, "accuracy": grade.accuracy, "ci_low": grade.ci_low,
                   "ci_high": grade.ci_high, "questions": grade.questions, "answer_nll": grade.answer_nll,
                   "outcomes": outcomes_to_json(grade.outcomes)}
        print(f"{name}: {row['accuracy']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]", file=sys.stderr,
              flush=True)
        rows.append(row)
        outcomes[seed] = [o.correct for o in outcomes_from_json(row["outcomes"])]
        write_result(args.name, args, {"partial": True, "times": times, "seeds": rows})
    accuracies = [r["accuracy"] for r in rows]
    sd = statistics.stdev(accuracies) if len(accuracies) > 1 else None
    pairs = {f"{a}-{b}": accuracy_difference(outcomes[a], outcomes[b]).to_dict()
             for i, a in enumerate(args.seeds) for b in args.seeds[i + 1:]}
    low_rank, low_acc, high_rank, high_acc = DEMO_RANK_EFFECT
    effect = high_acc - low_acc
    summary = {"mean_accuracy": statistics.mean(accuracies), "sd_accuracy": sd,
               "range_accuracy": max(accuracies) - min(accuracies), "seed_pairs_mcnemar": pairs,
               "demo_rank_effect": {"ranks": [low_rank, high_rank], "accuracy": [low_acc, high_acc],
                                    "difference": effect},
               "rank_effect_in_seed_sds": effect / sd if sd else None}
    times["wall"] = time.perf_counter() - started
    write_result(args.name, args, {"partial": False, "times": times, "seeds": rows, **summary})
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
