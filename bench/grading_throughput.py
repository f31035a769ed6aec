"""Grading throughput: the batched greedy grader against a per-question `generate` loop.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
