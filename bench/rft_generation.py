"""RFT sampling: `trainers.generation.sample` (prefill once, KV cache copied K times) against HF `generate`.

Both sides sample K completions per question for the same first N built-in training questions, with the
same few-shot chat prompt as RFT data generation, temperature, token budget and stop string, and the same
prompts per batch (batch-size // K). The baseline is plain `generate(do_sample=True, num_return_sequences=K)`
with top-k and top-p switched off, so both draw from the same distribution; it stops at EOS or the token
budget (`stop_strings` left out: it adds a large fixed cost to every call), and its text is cut after
`</answer>` as ours is. Sides alternate.

    python bench/rft_generation.py [--model embedded] [--questions 8] [--k 8] [--max-new-tokens 64] [--repeats 2]

Reported: completions/s, and success rates (correct completions / completions; questions with at least
one correct completion / questions). The embedded 135M model rarely solves these: expect low rates.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, table, write_result  # noqa: E402

STOP = "</answer>"


def hf_generate(loaded, prompts: list[str], k: int, temperature: float, max_new_tokens: int, per_batch: int, seed: int):
    """K sampled completions per prompt with plain HF generate, `per_batch` prompts per call."""
    import torch

    model, tokenizer = loaded.model, loaded.tokenizer
    torch.manual_seed(seed)
    out_texts: list[list[str]] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), per_batch):
            chunk = prompts[start : start + per_batch]
            encoded = tokenizer(chunk, return_tensors="pt", padding=True)
            out = model.generate(**encoded, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                 num_return_sequences=k, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)
            texts = tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
            texts = [t if t.find(STOP) < 0 else t[: t.find(STOP) + len(STOP)] for t in texts]
            out_texts += [texts[i * k : (i + 1) * k] for i in range(len(chunk))]
    return out_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64, help="sequences decoded together (K per question)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    from trainers.data import read_qa
    from trainers.generation import sample
    from trainers.grading import is_correct, parse_answer
    from trainers.models import load_model
    from trainers.prompts import few_shot_prompt
    from trainers.unitgen import builtin_data

    loaded = load_model(args.model, "cpu")
    rows = read_qa(builtin_data()[0])[: args.questions]
    prompts = [few_shot_prompt(loaded.tokenizer, r.question) for r in rows]
    per_batch = max(1, args.batch_size // args.k)

    def ours(rep):
        return sample(loaded.model, loaded.tokenizer, prompts, k=args.k, temperature=args.temperature,
                      max_new_tokens=args.max_new_tokens, stop=STOP, seed=rep, batch_size=args.batch_size)

    def theirs(rep):
        return hf_generate(loaded, prompts, args.k, args.temperature, args.max_new_tokens, per_batch, rep)

    sides = {"sample (ranksweep)": ours, "HF generate(num_return_sequences=K)": theirs}
    stats = {name: {"seconds": [], "correct": 0, "solved": 0, "parsed": 0, "completions": 0, "questions": 0}
             for name in sides}
    for rep in range(args.repeats):
        for name in (list(sides) if rep % 2 == 0 else list(sides)[::-1]):
            start = time.perf_counter()
            texts = sides[name](rep)
            stats[name]["seconds"].append(time.perf_counter() - start)
            s = stats[name]
            for row, completions in zip(rows, texts):
                ok = [is_correct(parse_answer(t), row.answer) for t in completions]
                s["correct"] += sum(ok)
                s["parsed"] += sum(parse_answer(t) is not None for t in completions)
                s["solved"] += any(ok)
                s["completions"] += len(completions)
                s["questions"] += 1
            print(f"rep {rep} {name}: {s['seconds'][-1]:.1f} s", file=sys.stderr)

    summary = {}
    for name, s in stats.items():
        sec = median(s["seconds"])
        summary[name] = {
            "median_seconds": sec,
            "seconds": s["seconds"],
            "completions_per_s": args.questions * args.k / sec,
            "completion_success_rate": s["correct"] / s["completions"],
            "question_success_rate": s["solved"] / s["questions"],
            "answer_rate": s["parsed"] / s["completions"],
            "completions_counted": s["completions"],
        }
    ours_s, theirs_s = (summary[n]["median_seconds"] for n in sides)
    payload = {"model": args.model, "per_batch_prompts": per_batch, "sides": summary, "speedup": theirs_s / ours_s}
    print(table([{"side": n, **s} for n, s in summary.items()],
                ["side", "median_seconds", "completions_per_s", "completion_success_rate", "question_success_rate",
                 "answer_rate"]))
    print(f"speedup: {payload['speedup']:.2f}x")
    print("wrote", write_result("rft_generation", args, payload))


if __name__ == "__main__":
    main()
