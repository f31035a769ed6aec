"""Grading throughput: bf16 weights against float32 ones, and the batched greedy grader against a per-question loop.

`--compare dtype` (one process): the first N validation questions of the quick preset's level graded with an
SFT and an RFT adapter as grading ran before (float32 weights, every row decoded until `</answer>`, EOS or
its budget) and as now (the base held in bf16 where the CPU has native bf16, and a row stops at the first
token its answer cannot survive, trainers.grading.answer_is_hopeless). Reported per adapter: questions/s of
each side, their accuracies, and how often their answers agree (same parsed number, same verdict), with
the questions only one side got right (a paired comparison). The adapters are `--sft-adapter` and
`--rft-adapter`, else trained once with the quick preset's settings under runs/bench/adapters/ (the RFT one
on chains sampled for `--rft-questions` training questions).

    python bench/grading_throughput.py --compare dtype [--questions 200]

`--compare loop` (default before): the batched greedy grader against a per-question `generate` loop.

Both sides answer the same first N validation questions of the built-in data with the same model and
SFT adapter, greedy, with the same token budget (the SFT grading budget, 32 new tokens); the loop calls
HF `generate` once per question, as a homework grader does, stopping at EOS (both cut the text after
`</answer>`; `stop_strings` is left out of generate: it adds a large fixed cost to every call).
The adapter is `--adapter DIR`, else the rank-16 fp32 one bench/size_prediction.py leaves in
runs/bench/adapters/, else a fresh one trained for --train-steps steps. Sides alternate.

    python bench/grading_throughput.py [--model embedded] [--questions 48] [--repeats 2] [--adapter DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_gflops, median, table, write_result  # noqa: E402
from trainers.grading import BATCH_SIZE  # noqa: E402

STOP = "</answer>"
DEFAULT_ADAPTER = Path(__file__).resolve().parent.parent / "runs" / "bench" / "adapters" / "r16-fp32"


def per_question_loop(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """One `generate` call per question, greedy, stopping at EOS; the text is cut after `</answer>`."""
    import torch

    texts = []
    with torch.inference_mode():
        for prompt in prompts:
            encoded = tokenizer(prompt, return_tensors="pt")
            out = model.generate(**encoded, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)
            text = tokenizer.decode(out[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
            at = text.find(STOP)
            texts.append(text if at < 0 else text[: at + len(STOP)])
    return texts


def _quick_adapters(args, loaded) -> dict:
    """SFT and RFT adapters trained with the quick preset's settings (rank 16), made once under runs/bench/."""
    from sweep.space import PRESETS
    from trainers.data import read_qa
    from trainers.rft_data import RFTSettings, generate_rft
    from trainers.training import TrainConfig, rft_examples, sft_examples, train_adapter
    from trainers.unitgen import builtin_data

    quick = PRESETS["quick"]
    root = Path(__file__).resolve().parent.parent / "runs" / "bench" / "adapters"
    train = read_qa(builtin_data(quick.level)[0])
    config = dict(rank=16, lr=quick.space.lrs[0], epochs=quick.space.epochs[0], batch_size=quick.effort.batch_size,
                  max_examples=quick.effort.max_examples, seed=0)
    paths = {"sft": args.sft_adapter or root / "quick-sft-r16", "rft": args.rft_adapter or root / "quick-rft-r16"}
    if not (paths["sft"] / "adapter_model.safetensors").is_file():
        train_adapter(loaded, sft_examples(train), TrainConfig(kind="sft", **config), paths["sft"], progress=True)
    if not (paths["rft"] / "adapter_model.safetensors").is_file():
        settings = RFTSettings(questions=args.rft_questions, samples=quick.effort.rft_samples,
                               max_new_tokens=quick.effort.rft_max_new_tokens, prompt=quick.level)
        report = generate_rft(loaded, train, settings, progress=True)
        print(f"RFT data: kept {report.kept} of {report.asked}", file=sys.stderr)
        train_adapter(loaded, rft_examples(report.rows), TrainConfig(kind="rft", **config), paths["rft"],
                      progress=True)
    return paths


def compare_dtypes(args) -> None:
    """Grading before (float32, no early stop) and now (bf16 where native, hopeless answers stop), one process."""
    import os

    from trainers.data import read_qa
    from trainers.grading import grade_model, is_correct, parse_answer
    from trainers.models import load_model
    from trainers.unitgen import builtin_data

    from sweep.space import PRESETS

    def load_as(bf16: str):
        os.environ["RANKSWEEP_CPU_BF16"] = bf16
        try:
            return load_model(args.model, "cpu")
        finally:
            os.environ.pop("RANKSWEEP_CPU_BF16")

    now, before = load_as("1"), load_as("0")
    adapters = _quick_adapters(args, now)
    rows = read_qa(builtin_data(PRESETS["quick"].level)[1])[: args.questions]
    import trainers.grading as grading

    sides = {"before: float32, decode to </answer>": (before, False),
             "now: bf16 weights, stop hopeless answers": (now, True)}
    report = {}
    for kind, adapter in adapters.items():
        if args.kinds and kind not in args.kinds.split(","):
            continue
        texts, seconds = {}, {}
        for rep in range(args.repeats):
            for name in (list(sides) if rep % 2 == 0 else list(sides)[::-1]):
                loaded, stop_hopeless = sides[name]
                captured = {}
                original = grading.score

                def keep(kind_, completions, truths, seconds=0.0):
                    captured["texts"] = completions
                    return original(kind_, completions, truths, seconds)

                grading.score = keep
                try:
                    grade = grade_model(loaded, rows, kind=kind, adapter_dir=adapter, questions=None, progress=False,
                                        stop_hopeless=stop_hopeless)
                finally:
                    grading.score = original  # grade_model's completions are read as they are scored
                texts[name] = captured["texts"]
                seconds.setdefault(name, []).append(grade.seconds)
                print(f"{kind} rep {rep} {name}: {grade.seconds:.1f} s, accuracy {grade.accuracy:.3f}",
                      file=sys.stderr)
        a, b = (texts[n] for n in sides)
        pa, pb = [parse_answer(t) for t in a], [parse_answer(t) for t in b]
        ca = [is_correct(x, r.answer) for x, r in zip(pa, rows)]
        cb = [is_correct(x, r.answer) for x, r in zip(pb, rows)]
        report[kind] = {
            "adapter": str(adapter),
            "sides": {n: {"median_seconds": median(seconds[n]), "seconds": seconds[n],
                          "questions_per_s": len(rows) / median(seconds[n]),
                          "accuracy": sum(c) / len(rows), "answer_rate": sum(p is not None for p in ps) / len(rows)}
                      for n, c, ps in zip(sides, (ca, cb), (pa, pb))},
            "same_parsed_answer": sum(x == y for x, y in zip(pa, pb)) / len(rows),
            "same_verdict": sum(x == y for x, y in zip(ca, cb)) / len(rows),
            "same_text": sum(x == y for x, y in zip(a, b)) / len(rows),
            "right_only_before": sum(x and not y for x, y in zip(ca, cb)),
            "right_only_now": sum(y and not x for x, y in zip(ca, cb)),
            "speedup": median(seconds[list(sides)[0]]) / median(seconds[list(sides)[1]]),
        }
        r = report[kind]
        print(table([{"side": n, **s} for n, s in r["sides"].items()],
                    ["side", "median_seconds", "questions_per_s", "accuracy", "answer_rate"]))
        print(f"{kind}: speedup {r['speedup']:.2f}x; same answer {r['same_parsed_answer']:.1%}, same verdict "
              f"{r['same_verdict']:.1%}; right only before {r['right_only_before']}, only now {r['right_only_now']}")
        # Written after each adapter, so a long run that is stopped keeps what it measured.
        path = write_result("grading_dtype" + (f"_{args.label}" if args.label else ""), args, {"model": args.model, "questions": len(rows), "adapters": report})
    print("wrote", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=["dtype", "loop"], default="loop")
    parser.add_argument("--sft-adapter", type=Path, default=None)
    parser.add_argument("--rft-adapter", type=Path, default=None)
    parser.add_argument("--rft-questions", type=int, default=96, help="dtype: questions sampled for the RFT adapter")
    parser.add_argument("--kinds", default=None, help="dtype: comma list of adapter kinds to grade (default: both)")
    parser.add_argument("--label", default=None, help="dtype: suffix of the result file")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="the grader's batch size (its default)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--adapter", type=Path, default=None)
    parser.add_argument("--train-steps", type=int, default=6)
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    if args.compare == "dtype":
        if args.repeats == 2 and "--repeats" not in sys.argv:
            args.repeats = 1
        if args.questions == 48 and "--questions" not in sys.argv:
            args.questions = 200
        compare_dtypes(args)
        return
    from trainers.data import read_qa
    from trainers.generation import greedy
    from trainers.grading import score
    from trainers.models import load_model
    from trainers.unitgen import builtin_data

    from peft import PeftModel

    loaded = load_model(args.model, "cpu")
    adapter = args.adapter or DEFAULT_ADAPTER
    if not (adapter / "adapter_model.safetensors").is_file():
        from trainers.training import TrainConfig, sft_examples, train_adapter

        examples = sft_examples(read_qa(builtin_data()[0])[: args.train_steps * 8])
        train_adapter(loaded, examples, TrainConfig(kind="sft", rank=16, batch_size=8), adapter, progress=False)
    model = PeftModel.from_pretrained(loaded.model, adapter).eval()
    rows = read_qa(builtin_data()[1])[: args.questions]
    prompts, truths = [r.question for r in rows], [r.answer for r in rows]

    def batched():
        # What grade_model runs, minus its progress bar and adapter attach.
        return greedy(model, loaded.tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                      batch_size=args.batch_size)

    def loop():
        return per_question_loop(model, loaded.tokenizer, prompts, args.max_new_tokens)

    sides = {"batched greedy (ranksweep)": batched, "per-question generate": loop}
    seconds = {name: [] for name in sides}
    texts = {}
    gflops = [matmul_gflops()]
    for rep in range(args.repeats):
        for name in (list(sides) if rep % 2 == 0 else list(sides)[::-1]):
            start = time.perf_counter()
            texts[name] = sides[name]()
            seconds[name].append(time.perf_counter() - start)
            print(f"rep {rep} {name}: {seconds[name][-1]:.1f} s", file=sys.stderr)
    gflops.append(matmul_gflops())

    a, b = (texts[name] for name in sides)
    summary = {}
    for name in sides:
        grade = score("sft", texts[name], truths)
        s = median(seconds[name])
        summary[name] = {"median_seconds": s, "seconds": seconds[name], "questions_per_s": len(prompts) / s,
                         "accuracy": grade.accuracy, "answer_rate": grade.answer_rate,
                         "mean_completion_chars": sum(map(len, texts[name])) / len(prompts)}
    batched_s, loop_s = (summary[name]["median_seconds"] for name in sides)
    payload = {
        "model": args.model,
        "questions": len(prompts),
        "adapter": str(adapter),
        "identical_completions": sum(x == y for x, y in zip(a, b)) / len(prompts),
        "matmul_fp32_gflops_2048": median(gflops),
        "sides": summary,
        "speedup": loop_s / batched_s,
    }
    print(table([{"side": n, **s} for n, s in summary.items()],
                ["side", "median_seconds", "questions_per_s", "accuracy", "answer_rate", "mean_completion_chars"]))
    print(f"speedup: {payload['speedup']:.2f}x; identical completions: {payload['identical_completions']:.0%}")
    print("wrote", write_result("grading_throughput", args, payload))


if __name__ == "__main__":
    main()
