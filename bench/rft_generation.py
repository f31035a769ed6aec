"""RFT sampling: `trainers.generation.sample` against the sampler it replaced and against plain HF `generate`.

All sides sample K completions per question for the same first N built-in training questions, with the
same few-shot chat prompt as RFT data generation, temperature and token budget. `sample` is the decode
loop RFT data uses (the shared few-shot prefix encoded once, each prompt's tail prefilled once and its KV
cache copied K times, rows leave as they close `</answer>`), batch-size sequences wide, on a copy of the
model in bf16 weights where the CPU has avx512_bf16 (as RFT data runs it), else float32. The previous sampler is the same loop 16 sequences
wide, as RFT data ran it before. The plain baseline is HF `generate(do_sample=True,
num_return_sequences=K)` with top-k and top-p switched off, so every side draws from the same
distribution; it stops only at EOS or the token budget, and its text is cut after `</answer>` as ours
is. Sides alternate.

    python bench/rft_generation.py [--model embedded] [--level metric-prefix] [--questions 8] [--k 8]
                                   [--max-new-tokens 64] [--repeats 2]

Reported: completions/s, and success rates (correct completions / completions; questions with at least
one correct completion / questions).
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


def previous_sampler(loaded, prompts, k, temperature, max_new_tokens, per_batch, seed):
    """RFT sampling as it ran before: trainers.generation's decode loop, float32, 16 sequences wide."""
    import torch

    from trainers.generation import _decode_batch, eval_mode, _length_batches

    generator = torch.Generator().manual_seed(seed)

    def pick(logits):
        return torch.multinomial(torch.softmax(logits.float() / temperature, dim=-1), 1, generator=generator).squeeze(-1)

    out: list[list[str]] = [[] for _ in prompts]
    with torch.inference_mode(), eval_mode(loaded.model):
        for indices in _length_batches(loaded.tokenizer, prompts, per_batch):
            texts = _decode_batch(loaded.model, loaded.tokenizer, [prompts[i] for i in indices], k, max_new_tokens,
                                  STOP, pick)
            for n, i in enumerate(indices):
                out[i] = texts[n * k : (n + 1) * k]
    return out


def memory_bandwidth_gb_s(megabytes: int = 512, repeats: int = 5) -> float:
    """Best copy rate of a large float32 tensor (read + write bytes per second), in GB/s."""
    import torch

    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128, help="sequences decoded together (K per question)")
    parser.add_argument("--level", default="metric-prefix", help="built-in data level and its few-shot prompt")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sides", default=None, help="comma list of side names to run (default: all four)")
    parser.add_argument("--label", default=None, help="suffix of the result file")
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    from trainers.data import read_qa
    from trainers.generation import sample
    from trainers.grading import answer_is_hopeless, is_correct, parse_answer
    from trainers.fewshot import few_shot_named
    from trainers.models import load_model
    from trainers.rft_data import sampling_dtype
    from trainers.unitgen import builtin_data

    import os

    os.environ["RANKSWEEP_CPU_BF16"] = "0"  # the previous sampler and HF generate ran float32 weights
    loaded = load_model(args.model, "cpu")
    os.environ.pop("RANKSWEEP_CPU_BF16")
    rows = read_qa(builtin_data(args.level)[0])[: args.questions]
    prompts = [few_shot_named(args.level).render(loaded.tokenizer, r.question) for r in rows]
    per_batch = max(1, args.batch_size // args.k)
    previous_per_batch = max(1, 16 // args.k)  # RFTSettings.batch_size before this change

    # RFT data samples with its own copy of the model, in bf16 weights where the CPU runs bf16 fast.
    generator = load_model(args.model, "cpu")  # bf16 weights where the CPU has native bf16 (trainers.models)
    generator_dtype = sampling_dtype("cpu")

    def ours(rep):
        return sample(generator.model, generator.tokenizer, prompts, k=args.k, temperature=args.temperature,
                      max_new_tokens=args.max_new_tokens, stop=STOP, seed=rep, batch_size=args.batch_size,
                      give_up=answer_is_hopeless)

    def without_give_up(rep):
        return sample(generator.model, generator.tokenizer, prompts, k=args.k, temperature=args.temperature,
                      max_new_tokens=args.max_new_tokens, stop=STOP, seed=rep, batch_size=args.batch_size)

    def theirs(rep):
        return hf_generate(loaded, prompts, args.k, args.temperature, args.max_new_tokens, per_batch, rep)

    def previous(rep):
        return previous_sampler(loaded, prompts, args.k, args.temperature, args.max_new_tokens, previous_per_batch, rep)

    every = {"sample (ranksweep)": ours, "sample before hopeless chains stopped": without_give_up,
             "previous sampler": previous, "HF generate(num_return_sequences=K)": theirs}
    sides = {name: every[name] for name in args.sides.split(",")} if args.sides else every
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
    seconds_of = {n: summary[n]["median_seconds"] for n in sides}
    ours_s = seconds_of["sample (ranksweep)"]
    speedups = {f"vs {n}": s / ours_s for n, s in seconds_of.items() if n != "sample (ranksweep)"}
    bandwidth = memory_bandwidth_gb_s()
    weight_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    # A decode step reads every weight at least once: the step rate memory allows, and the tokens/s that
    # gives at the batch width actually used (an upper bound only while the batch stays full).
    steps_per_s_limit = bandwidth * 1e9 / weight_bytes
    payload = {"model": args.model, "per_batch_prompts": per_batch, "sides": summary, "ours_dtype": generator_dtype,
               "speedups": speedups,
               "memory_bandwidth_gb_s": bandwidth, "weight_bytes": weight_bytes,
               "bandwidth_limited_steps_per_s": steps_per_s_limit}
    print(table([{"side": n, **s} for n, s in summary.items()],
                ["side", "median_seconds", "completions_per_s", "completion_success_rate", "question_success_rate",
                 "answer_rate"]))
    print("speedups of sample (ranksweep): " + ", ".join(f"{v:.2f}x {k}" for k, v in speedups.items()))
    print(f"memory bandwidth {bandwidth:.1f} GB/s: at most {steps_per_s_limit:.1f} decode steps/s of a "
          f"{weight_bytes / 1e6:.0f} MB model")
    print("wrote", write_result("rft_generation" + (f"_{args.label}" if args.label else ""), args, payload))


if __name__ == "__main__":
    main()
