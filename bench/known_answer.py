"""Known-answer check of the decision rule: two SFT adapters whose true difference is known from a large pool.

Two SFT adapters are trained with the quick preset's settings on the embedded model and the metric-prefix level
(320 rows, lr 2e-3, batch 16; by default rank 16 for 1 epoch against rank 16 for 2 epochs, a clear gap) and
graded question by question on a large pool of built-in questions: the level's 200 validation questions, then
fresh questions of the same generator that are in neither file. Grading alternates the two adapters in chunks
of 100 questions and rewrites the outcomes file after each chunk, so a run stopped at its time limit keeps a
paired pool of whatever size it reached (`--minutes`). The difference on the whole pool is the truth.

Then, with no more grading (outcomes are per question), it draws `--draws` validation pools of 100 to 200
questions from the graded pool and runs the decision phase's rule on each (sweep/decision.py): the first
ROUND_QUESTIONS questions graded as a trial would, then rounds of ROUND_QUESTIONS until the pool is spent,
stopping at the first round where the paired points difference (sweep/paired.points_difference, the function
`decide` uses through sweep/verdict.compare; the two pairs share one RFT adapter, so the difference is the
SFT points difference) is decisive. Seeds are not simulated: retraining is not graded here. The same is done
with the exact McNemar accuracy interval (sweep/paired.accuracy_difference) as a second rule. It counts how
often each says "decisive", how often a decisive verdict names the truly better adapter, the mean questions
graded (against grading the whole drawn pool at once), and the smallest fixed number of questions (graded once, one test) whose rate of failing to name the
better adapter decisively is no higher than the sequential rule's.

`--null` swaps each question's two outcomes by a coin before drawing, so neither adapter is better: the share of
decisive verdicts is then the rule's false-alarm rate, looks at every round included.

    python bench/known_answer.py [--pool 2000] [--minutes 40] [--draws 100] [--analyse-only] [--null]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, write_result  # noqa: E402

from sweep.decision import ROUND_QUESTIONS  # noqa: E402
from sweep.paired import PairEvidence, accuracy_difference, points_difference  # noqa: E402
from trainers.outcomes import QuestionOutcome, outcomes_from_json, outcomes_to_json  # noqa: E402

NAME = "known_answer"
LEVEL = "metric-prefix"
WORK = Path("/tmp/ranksweep-bench-r22")  # adapters, reused by a rerun and by bench/seed_spread.py
EXTRA_SEED = 22  # seed of the fresh questions beyond the validation file
CHUNK = 100


def quick_config(rank: int, epochs: float, seed: int = 0):
    """The quick preset's SFT training settings (sweep/space.py) at one rank, epochs and seed."""
    from sweep.space import PRESETS
    from trainers.training import TrainConfig

    preset = PRESETS["quick"]
    return TrainConfig(kind="sft", rank=rank, lr=preset.space.lrs[0], epochs=epochs,
                       batch_size=preset.effort.batch_size, max_examples=preset.effort.max_examples, seed=seed)


def adapter_name(rank: int, epochs: float, seed: int) -> str:
    return f"sft-r{rank}-e{epochs:g}-s{seed}"


def trained(loaded, examples, rank: int, epochs: float, seed: int, times: dict) -> Path:
    """The adapter's folder under WORK, trained now unless an earlier run left it there."""
    from trainers.adapter_files import is_adapter_folder
    from trainers.training import train_adapter

    folder = WORK / adapter_name(rank, epochs, seed)
    if not is_adapter_folder(folder):
        result = train_adapter(loaded, examples, quick_config(rank, epochs, seed), folder, progress=False)
        times[f"train {folder.name}"] = result.seconds
        print(f"trained {folder.name} in {result.seconds:.0f} s", file=sys.stderr, flush=True)
    return folder


def question_pool(size: int):
    """The level's validation questions, then fresh ones of its generator in neither file: `size` in all."""
    from trainers.data import read_qa
    from trainers.unitgen import builtin_data, generate_questions

    train_path, valid_path = builtin_data(LEVEL)
    train, valid = read_qa(train_path), read_qa(valid_path)
    extra = max(0, size - len(valid))
    seen = {r.question for r in train} | {r.question for r in valid}
    return (valid + generate_questions(extra, EXTRA_SEED, exclude=seen, level=LEVEL))[:size], train


def grade_pool(args) -> dict:
    """Train both adapters and grade them on the pool in alternating chunks until it is spent or time is up."""
    import torch

    torch.set_num_threads(args.threads)
    import warnings

    warnings.filterwarnings("ignore")
    from trainers.grading import grade_model
    from trainers.models import load_model
    from trainers.training import sft_examples

    started = time.perf_counter()
    pool, train = question_pool(args.pool)
    examples = sft_examples(train)
    loaded = load_model("embedded", "cpu")
    times: dict[str, float] = {}
    adapters = {"a": trained(loaded, examples, args.rank_a, args.epochs_a, 0, times),
                "b": trained(loaded, examples, args.rank_b, args.epochs_b, 0, times)}
    path = RESULTS / f"{NAME}_outcomes.json"
    state = json.loads(path.read_text()) if path.is_file() else {}
    outcomes = {name: list(outcomes_from_json(state.get(folder.name)) or ()) for name, folder in
                ((n, f) for n, f in adapters.items())}
    grade_seconds = 0.0
    while True:
        done = min(len(v) for v in outcomes.values())
        if done >= len(pool) or time.perf_counter() - started > args.minutes * 60:
            break
        end = min(len(pool), done + CHUNK)
        for name, folder in adapters.items():
            if len(outcomes[name]) >= end:
                continue
            grade = grade_model(loaded, pool[done:end], kind="sft", adapter_dir=folder, questions=None,
                                progress=False, first_index=done)
            grade_seconds += grade.seconds
            outcomes[name] += grade.outcomes
        path.write_text(json.dumps({folder.name: outcomes_to_json(outcomes[name])
                                    for name, folder in adapters.items()}) + "\n")
        print(f"graded {end} of {len(pool)} questions ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
              flush=True)
    times["grading (this run)"] = grade_seconds
    times["wall (this run)"] = time.perf_counter() - started
    return times


def sequential(first: list[QuestionOutcome], second: list[QuestionOutcome], rule: str, seed: int,
               fixed: bool = False) -> tuple[str, int]:
    """The decision rule on one drawn pool: ('first' | 'second' | 'not decisive', questions graded). Rounds of
    ROUND_QUESTIONS from the first round on, stopping when decisive; `fixed`: one test on the whole pool."""
    n = len(first)
    steps = [n] if fixed else list(range(ROUND_QUESTIONS, n, ROUND_QUESTIONS)) + [n]
    for graded in steps:
        a, b = tuple(first[:graded]), tuple(second[:graded])
        if rule == "points":
            shared_rft = (a,)  # one RFT adapter shared by both pairs: its points cancel in every resample
            diff = points_difference(PairEvidence(sft=(a,), rft=shared_rft), PairEvidence(sft=(b,), rft=shared_rft),
                                     seed=seed)
        else:
            diff = accuracy_difference([o.correct for o in a], [o.correct for o in b])
        if diff.decisive:
            return ("first" if diff.estimate > 0 else "second"), graded
    return "not decisive", n


def analyse(args) -> dict:
    """Truth on the whole graded pool, then the decision rules on `args.draws` drawn pools."""
    from trainers.grading import points

    state = json.loads((RESULTS / f"{NAME}_outcomes.json").read_text())
    names = [adapter_name(args.rank_a, args.epochs_a, 0), adapter_name(args.rank_b, args.epochs_b, 0)]
    first, second = (list(outcomes_from_json(state[n])) for n in names)
    n = min(len(first), len(second))
    first, second = first[:n], second[:n]
    if args.null:  # each question's two outcomes swapped by a coin: no true difference, same disagreement
        coin = random.Random(args.seed + 1)
        for i in range(n):
            if coin.random() < 0.5:
                first[i], second[i] = second[i], first[i]
    truth = accuracy_difference([o.correct for o in first], [o.correct for o in second])
    acc = [sum(o.correct for o in side) / n for side in (first, second)]
    better = "first" if truth.estimate > 0 else "second"
    rng = random.Random(args.seed)
    sizes = [rng.choice((100, 150, 200)) for _ in range(args.draws)]
    draws = [rng.sample(range(n), size) for size in sizes]
    rules = {}
    for rule in ("points", "mcnemar"):
        runs = []
        for i, picked in enumerate(draws):
            a, b = [first[j] for j in picked], [second[j] for j in picked]
            verdict, graded = sequential(a, b, rule, seed=i)
            whole = sequential(a, b, rule, seed=i, fixed=True)[0]  # the same pool graded in full, one test
            runs.append({"pool": len(picked), "verdict": verdict, "graded": graded, "whole_pool": whole})
        decisive = [r for r in runs if r["verdict"] != "not decisive"]
        right = sum(r["verdict"] == better for r in decisive)
        failed = (len(runs) - right) / len(runs)  # not naming the better adapter decisively (wrong or undecided)
        whole_right = sum(r["whole_pool"] == better for r in runs)
        whole_wrong = sum(r["whole_pool"] not in (better, "not decisive") for r in runs)
        fixed = {}
        for size in () if args.null else range(50, 325, 25):  # one test on `size` questions, same number of draws
            if size > n:
                break
            out = [sequential([first[j] for j in picked], [second[j] for j in picked], rule, seed=i, fixed=True)[0]
                   for i, picked in enumerate(rng.sample(range(n), size) for _ in range(args.draws))]
            fixed[size] = {"decisive": sum(v != "not decisive" for v in out) / len(out),
                           "right": sum(v == better for v in out) / len(out),
                           "wrong": sum(v not in (better, "not decisive") for v in out) / len(out)}
        same = next((size for size, f in fixed.items() if 1 - f["right"] <= failed), None)
        rules[rule] = {"draws": len(runs), "decisive": len(decisive), "decisive_right": right,
                       "decisive_wrong": len(decisive) - right,
                       "right_share_of_decisive": right / len(decisive) if decisive else None,
                       "failure_rate": failed, "mean_pool": sum(sizes) / len(sizes),
                       "mean_graded": sum(r["graded"] for r in runs) / len(runs),
                       "whole_pool_right": whole_right, "whole_pool_wrong": whole_wrong, "fixed_n": fixed, "fixed_n_same_failure_rate": same, "runs": runs}
        print(f"{rule}: decisive {len(decisive)}/{len(runs)}, right {right}/{len(decisive)}, "
              f"failure {failed:.3f}, mean graded {rules[rule]['mean_graded']:.0f} (pools {sum(sizes) / len(sizes):.0f});"
              f" fixed N with no more failures: {same}; whole pool graded: right {whole_right}, wrong {whole_wrong}",
              file=sys.stderr, flush=True)
    return {"adapters": names, "pool_questions": n, "accuracy": acc,
            "sft_points": [points("sft", a) for a in acc], "truth": truth.to_dict(), "better": names[better == "second"],
            "rules": rules}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=2000, help="questions to grade both adapters on")
    parser.add_argument("--minutes", type=float, default=40.0, help="stop grading after this long (wall)")
    parser.add_argument("--rank-a", type=int, default=16)
    parser.add_argument("--epochs-a", type=float, default=1.0)
    parser.add_argument("--rank-b", type=int, default=16)
    parser.add_argument("--epochs-b", type=float, default=2.0)
    parser.add_argument("--draws", type=int, default=100, help="resampled validation pools (100-200 questions)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--analyse-only", action="store_true", help="no training or grading: the stored outcomes")
    parser.add_argument("--null", action="store_true",
                        help="swap each question's two outcomes by a coin first (no true difference: every "
                             "decisive verdict is a false one); writes results/known_answer_null.json")
    args = parser.parse_args()
    times = {} if args.analyse_only else grade_pool(args)
    result = analyse(args)
    name = f"{NAME}_null" if args.null else NAME
    previous = RESULTS / f"{name}.json"
    if args.analyse_only and previous.is_file():
        times = json.loads(previous.read_text()).get("times", {})
    write_result(name, args, {"times": times, **result})
    print(json.dumps({k: v for k, v in result.items() if k != "rules"}, indent=1))


if __name__ == "__main__":
    main()
