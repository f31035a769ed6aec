"""Every rank from one training: shrink (+ recovery steps) and nested ranks against training each rank.

On the embedded 135M model and the learnable built-in level (metric-prefix questions with whole amounts),
one SFT adapter is trained at R = 32 and cut to each rank with peft's conversion (then 0, 25 or 50 recovery
steps at the target rank), one nested adapter is trained at R = 32 with a random prefix per step, and one
adapter is trained directly at each rank (independent). Every adapter is graded on the level's validation
questions (accuracy with a Wilson 95% interval) and scored by its mean answer NLL (nats per answer token,
the answer tag and EOS included, lower is better). The JSON is rewritten after every adapter, so an
interrupted run keeps what it finished.

    python bench/one_training.py [--rows 1000] [--questions 200] [--ranks 1 2 4 8 16] [--parent-rank 32] [--threads 1]

The two R = 32 parents are trained but not graded. Training is SFT, 1 epoch, lr 2e-3, batch 16 by default.

The wall time of a 5x5 study under each strategy is computed from the measured times (not run): per kind,
the trainings and derivations a study needs plus one grading per adapter, with SFT times standing in for
both kinds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table, write_result  # noqa: E402

NAME = "one_training"


def answer_nll(loaded, rows, adapter_dir) -> float:
    """Mean NLL (nats per labelled token) of each question's true answer tag with the adapter loaded."""
    import torch

    from trainers.batching import collate, tokenize_rows
    from trainers.shrink import attached_adapter
    from trainers.training import batch_loss, format_answer

    tokens, _ = tokenize_rows(loaded.tokenizer, [(r.question, format_answer(r.answer)) for r in rows], 256)
    pad = loaded.tokenizer.pad_token_id
    total, count = 0.0, 0
    with attached_adapter(loaded, adapter_dir) as peft_model, torch.no_grad():
        core = peft_model.get_base_model()
        for start in range(0, len(tokens), 32):
            part = tokens[start : start + 32]
            labelled = sum(r.labelled_tokens for r in part)
            total += batch_loss(core, collate(part, pad)).item() * labelled
            count += labelled
    return total / count


class Bench:
    """Runs the pieces, times them, grades each adapter and keeps the JSON current."""

    def __init__(self, args, loaded, examples, valid, work: Path):
        self.args, self.loaded, self.examples, self.valid, self.work = args, loaded, examples, valid, work
        self.rows: list[dict] = []
        self.times: dict[str, float] = {}

    def grade(self, strategy: str, rank: int, adapter_dir: Path, **extra) -> None:
        from trainers.grading import grade_model

        grade = grade_model(self.loaded, self.valid, kind="sft", adapter_dir=adapter_dir,
                            questions=self.args.questions, progress=False)
        started = time.perf_counter()
        nll = answer_nll(self.loaded, self.valid[: self.args.questions], adapter_dir)
        row = {
            "strategy": strategy, "rank": rank, "accuracy": grade.accuracy, "ci_low": grade.ci_low,
            "ci_high": grade.ci_high, "correct": grade.correct, "questions": grade.questions,
            "answer_rate": grade.answer_rate, "answer_nll": nll, "grade_seconds": grade.seconds,
            "nll_seconds": time.perf_counter() - started, **extra,
        }
        self.rows.append(row)
        print(f"{strategy:>10} r={rank:<3} acc {grade.accuracy:.3f} [{grade.ci_low:.3f}, {grade.ci_high:.3f}] "
              f"nll {nll:.3f} ({grade.seconds:.0f} s)", file=sys.stderr, flush=True)
        self.save(partial=True)

    def save(self, partial: bool) -> None:
        payload = {"partial": partial, "model": self.args.model, "level": self.args.level, "rows_trained": len(self.examples),
                   "questions": self.args.questions, "times": self.times, "results": self.rows}
        if not partial:
            payload["study_5x5"] = study_cost(self.times, self.rows, self.args.ranks, self.args.recover)
        write_result(self.args.name, self.args, payload)

    def config(self, rank: int):
        from trainers.training import TrainConfig

        a = self.args
        return TrainConfig(kind="sft", rank=rank, lr=a.lr, epochs=a.epochs, batch_size=a.batch_size, seed=0)

    def train(self, rank: int, out: Path) -> float:
        from trainers.training import train_adapter

        return train_adapter(self.loaded, self.examples, self.config(rank), out, progress=False).seconds


def study_cost(times: dict[str, float], rows: list[dict], ranks: list[int], recover: list[int]) -> dict:
    """Seconds of a 5x5 study (5 SFT x 5 RFT ranks) per strategy, from the measured pieces; both kinds alike."""
    grading = {}
    for row in rows:
        key = row["strategy"]
        grading.setdefault(key, []).append(row["grade_seconds"])
    mean_grade = sum(sum(v) for v in grading.values()) / sum(len(v) for v in grading.values())
    grades = len(ranks) * mean_grade  # one grading per distinct adapter, the same for every strategy
    per_kind = {"independent": sum(times.get(f"train_r{r}", float("nan")) for r in ranks)}
    for steps in recover:
        per_kind[f"shrink+{steps}"] = times.get("train_parent", float("nan")) + sum(
            times.get(f"shrink{steps}_r{r}", float("nan")) for r in ranks)
    per_kind["nested"] = times.get("train_nested", float("nan")) + sum(
        times.get(f"nested_r{r}", float("nan")) for r in ranks)
    out = {name: {"train_and_derive_s": 2 * s, "grading_s": 2 * grades, "total_s": 2 * (s + grades)}
           for name, s in per_kind.items()}
    base = out["independent"]["total_s"]
    for entry in out.values():
        entry["speedup_vs_independent"] = base / entry["total_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--parent-rank", type=int, default=32)
    parser.add_argument("--recover", type=int, nargs="+", default=[0, 25, 50])
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--level", default="metric-prefix")
    parser.add_argument("--model", default="embedded", help="embedded (the benchmark) or tiny (a smoke run)")
    parser.add_argument("--name", default=NAME, help="results/<name>.json")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared, oversubscribed CPU a 768² matmul ran 1.55x faster "
                             "with 1 thread than with 2)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    import warnings

    warnings.filterwarnings("ignore")
    from trainers.data import read_qa
    from trainers.models import load_model
    from trainers.nested import prefix_adapter, train_nested
    from trainers.shrink import convert, write_shrunk
    from trainers.training import sft_examples
    from trainers.unitgen import builtin_data

    train_path, valid_path = builtin_data(args.level)
    examples = sft_examples(read_qa(train_path))[: args.rows]
    valid = read_qa(valid_path)
    if len(valid) < args.questions:
        sys.exit(f"only {len(valid)} validation questions, {args.questions} asked")
    loaded = load_model(args.model, "cpu")
    print("machine:", machine(), file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="one-training-") as tmp:
        work = Path(tmp)
        bench = Bench(args, loaded, examples, valid, work)
        R = args.parent_rank
        # Order: rank by rank, the baseline and the two one-training strategies side by side, smallest ranks
        # (where plain truncation fails) first, recovery last; a run cut short still compares what it finished.
        # The two R = 32 parents are not graded: no strategy's study asks for them at R.
        bench.times["train_parent"] = bench.train(R, work / "parent")
        started = time.perf_counter()
        train_nested(loaded, examples, bench.config(R), work / "nested", args.ranks, progress=False)
        bench.times["train_nested"] = time.perf_counter() - started
        bench.save(partial=True)
        shrunk = {}
        for r in args.ranks:
            bench.times[f"train_r{r}"] = bench.train(r, work / f"independent-r{r}")
            bench.grade("independent", r, work / f"independent-r{r}", train_seconds=bench.times[f"train_r{r}"])
            result = prefix_adapter(loaded, work / "nested", r, work / f"nested-r{r}")
            bench.times[f"nested_r{r}"] = result.seconds
            bench.grade("nested", r, result.adapter_dir, derive_seconds=result.seconds)
            shrunk[r] = convert(loaded, work / "parent", r)
            if 0 in args.recover:
                # result.seconds includes the conversion (Shrunk.seconds): each recovery setting is charged with it.
                result = write_shrunk(loaded, shrunk[r], work / "parent", work / f"shrink0-r{r}")
                bench.times[f"shrink0_r{r}"] = result.seconds
                bench.grade("shrink+0", r, result.adapter_dir, derive_seconds=result.seconds)
        for steps in [s for s in args.recover if s > 0]:
            for r in args.ranks:
                result = write_shrunk(loaded, shrunk[r], work / "parent", work / f"shrink{steps}-r{r}",
                                      recover_steps=steps, examples=examples)
                bench.times[f"shrink{steps}_r{r}"] = result.seconds
                bench.grade(f"shrink+{steps}", r, result.adapter_dir, derive_seconds=result.seconds)
        bench.save(partial=False)
    print(table(bench.rows, ["strategy", "rank", "accuracy", "ci_low", "ci_high", "answer_nll", "grade_seconds"]))


if __name__ == "__main__":
    main()
