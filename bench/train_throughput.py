"""SFT training throughput: a float32 base against a base held in bf16, and ranksweep against HF Trainer.

Default (`--compare dtype`), one process: the quick preset's SFT training (metric-prefix rows, batch 16,
rank 16, lr 2e-3) with the base model as it was held before (float32 weights under bf16 autocast, which
casts every frozen weight on every call) and as now (weights held in bf16 once, LoRA weights and
optimizer state in float32, under autocast), the same rows, seed and steps, the two sides alternating
run by run. Reported per side: the median step time (from the trainer's own log, first step left out),
the fixed cost of a call (all but the steps: tokenizing, injecting LoRA, saving), useful 6·N·tokens/s
against the float32 and bf16 2048² matmul rates measured in the same run, and the loss curves of the
two sides on the same seed.

    python bench/train_throughput.py [--steps 12] [--repeats 2] [--curve-steps 40]

`--compare hf`: ranksweep's trainer against the homework-style HF Trainer baseline. Both sides train the same rows (the first steps × batch-size built-in training questions) for the same
number of steps, batch size, rank and learning rate on the same base model. The baseline is what the
homework does: HF `Trainer`, every row padded to 128 tokens, gradient checkpointing on, loss over the
full logits. Each side runs in its own subprocess so its peak RSS (ru_maxrss) is its own; sides alternate.

    python bench/train_throughput.py [--model embedded|smollm2-360m] [--steps 4] [--batch-size 16] [--repeats 2]

Reported: real (non-pad) tokens per second, peak RSS, and the usual training FLOP estimate
6 × base params × real tokens per second as a fraction of this machine's dense fp32 2048² matmul rate.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, matmul_gflops, median, peak_rss_mib, table, write_result  # noqa: E402

PAD_TO = 128  # the homework's fixed row length


def _load(model_name: str):
    import torch

    from trainers.models import LoadedModel, load_model

    if model_name == "smollm2-360m":
        # SmolLM2-360M's shape with random weights: the speed of the target model without downloading it.
        from transformers import AutoModelForCausalLM

        from sweep.sizing import config_for

        tokenizer = load_model("tiny", "cpu").tokenizer
        config = config_for("smollm2-360m")
        config.pad_token_id = tokenizer.pad_token_id
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).float().eval()
        return LoadedModel(model=model, tokenizer=tokenizer, device="cpu", name="smollm2-360m (random weights)")
    return load_model(model_name, "cpu")


def _examples(steps: int, batch_size: int, level: str | None = None):
    from trainers.data import read_qa
    from trainers.training import sft_examples
    from trainers.unitgen import builtin_data

    train_path, _ = builtin_data(level) if level else builtin_data()
    return sft_examples(read_qa(train_path)[: steps * batch_size])


def _run_ranksweep(loaded, examples, args, out: Path) -> float:
    from trainers.training import TrainConfig, train_adapter

    config = TrainConfig(kind="sft", rank=args.rank, lr=args.lr, epochs=1.0, batch_size=args.batch_size, seed=0)
    result = train_adapter(loaded, examples, config, out / "ranksweep", progress=False)
    assert result.steps == args.steps, result.steps
    return result.seconds  # the whole call: tokenize, inject LoRA, train, save


def _run_hf(loaded, rows, args, out: Path) -> float:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from trainers.batching import collate

    pad_id = loaded.tokenizer.pad_token_id
    batch = collate(rows, pad_id, pad_to=PAD_TO)
    data = [
        {"input_ids": batch.input_ids[i], "attention_mask": batch.attention_mask[i], "labels": batch.labels[i]}
        for i in range(len(rows))
    ]
    torch.manual_seed(0)
    lora = LoraConfig(r=args.rank, lora_alpha=4 * args.rank, lora_dropout=0.05, target_modules="all-linear",
                      bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(loaded.model, lora)
    model.enable_input_require_grads()  # what the homework does for gradient checkpointing with LoRA
    training_args = TrainingArguments(
        output_dir=str(out / "hf"), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        learning_rate=args.lr, gradient_checkpointing=True, report_to="none", save_strategy="no",
        logging_strategy="no", use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=data)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start  # trainer.train() only: setup outside it is not charged to the baseline
    model.save_pretrained(out / "hf" / "adapter")
    return seconds


def worker(args) -> None:
    """One side, one repetition: print a JSON line with seconds, tokens and peak RSS."""
    import warnings

    warnings.filterwarnings("ignore")
    from trainers.batching import tokenize_rows

    loaded = _load(args.model)
    examples = _examples(args.steps, args.batch_size)
    rows, dropped = tokenize_rows(loaded.tokenizer, [(e.prompt, e.completion) for e in examples], PAD_TO)
    assert not dropped
    base_params = sum(p.numel() for p in loaded.model.parameters())
    setup_rss = peak_rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        if args.worker == "ranksweep":
            seconds = _run_ranksweep(loaded, examples, args, Path(tmp))
        else:
            seconds = _run_hf(loaded, rows, args, Path(tmp))
    line = json.dumps({
        "side": args.worker, "seconds": seconds, "real_tokens": sum(len(r.ids) for r in rows),
        "labelled_tokens": sum(r.labelled_tokens for r in rows), "computed_tokens_hf": len(rows) * PAD_TO,
        "rows": len(rows), "base_params": base_params, "setup_peak_rss_mib": setup_rss,
        "peak_rss_mib": peak_rss_mib(),
    })
    # Also kept under runs/ (never committed), so an interrupted run still leaves its finished repetitions.
    log = ROOT / "runs" / "bench" / "train_workers.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    print(line)


def _load_as(model_name: str, bf16: str):
    """The model loaded with RANKSWEEP_CPU_BF16 set to `bf16` ("0": float32 weights, "1": bf16 weights)."""
    import os

    saved = os.environ.get("RANKSWEEP_CPU_BF16")
    os.environ["RANKSWEEP_CPU_BF16"] = bf16
    try:
        return _load(model_name)
    finally:
        if saved is None:
            os.environ.pop("RANKSWEEP_CPU_BF16")
        else:
            os.environ["RANKSWEEP_CPU_BF16"] = saved


def _train_log(loaded, examples, args, steps: int, out: Path) -> dict:
    """One train_adapter call: its wall seconds and its log (per-step seconds and losses)."""
    import csv

    from trainers.training import TrainConfig, train_adapter

    config = TrainConfig(kind="sft", rank=args.rank, lr=args.lr, epochs=1.0, batch_size=args.batch_size, seed=0)
    result = train_adapter(loaded, examples, config, out, progress=False, steps=steps)
    with open(out / "training_log.csv", newline="") as f:
        log = list(csv.DictReader(f))
    ends = [float(r["seconds"]) for r in log]
    step_seconds = [b - a for a, b in zip([0.0, *ends], ends)]
    return {"seconds": result.seconds, "step_seconds": step_seconds, "losses": result.losses,
            "fixed_seconds": result.seconds - sum(step_seconds)}


def compare_dtypes(args) -> None:
    """Before (float32 weights under autocast) and now (bf16 weights held once), in this one process."""
    import os
    import warnings

    warnings.filterwarnings("ignore")
    from trainers.batching import schedule, tokenize_rows

    if os.environ.get("RANKSWEEP_CPU_BF16") == "0":
        sys.exit("RANKSWEEP_CPU_BF16=0 turns autocast off for both sides: unset it")
    sides = {"before: float32 base, bf16 autocast": _load_as(args.model, "0"),
             "now: base held in bf16, float32 LoRA, autocast": _load_as(args.model, "1")}
    examples = _examples(max(args.steps, args.curve_steps), args.batch_size, args.level)
    loaded = next(iter(sides.values()))
    rows, _ = tokenize_rows(loaded.tokenizer, [(e.prompt, e.completion) for e in examples], 256)
    lengths = [len(r.ids) for r in rows]
    plan = schedule(lengths, args.batch_size, args.steps, 0)
    tokens_per_step = [sum(lengths[i] for i in batch) for batch in plan]
    base_params = sum(p.numel() for p in loaded.model.parameters())

    rates = {"float32": [matmul_gflops(dtype="float32")], "bfloat16": [matmul_gflops(dtype="bfloat16")]}
    runs = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name in (list(sides) if rep % 2 == 0 else list(sides)[::-1]):
                out = Path(tmp) / f"{len(runs[name])}-{name[:3]}"
                runs[name].append(_train_log(sides[name], examples, args, args.steps, out))
                print(f"rep {rep} {name}: {runs[name][-1]['seconds']:.1f} s", file=sys.stderr)
        rates["float32"].append(matmul_gflops(dtype="float32"))
        rates["bfloat16"].append(matmul_gflops(dtype="bfloat16"))
        curves = {}
        if args.curve_steps:
            for name, side in sides.items():
                curves[name] = _train_log(side, examples, args, args.curve_steps, Path(tmp) / f"curve-{name[:3]}")
                print(f"curve {name}: final loss {curves[name]['losses'][-1]:.4f}", file=sys.stderr)
    fp32, bf16 = median(rates["float32"]), median(rates["bfloat16"])

    summary = {}
    for name, results in runs.items():
        # Step 1 pays one-time costs (first-call allocations): left out of the median.
        step = median([s for r in results for s in r["step_seconds"][1:]])
        tokens = median(tokens_per_step[1:])
        useful = 6 * base_params * tokens / step / 1e9
        summary[name] = {"median_step_seconds": step, "fixed_seconds": median([r["fixed_seconds"] for r in results]),
                         "call_seconds": median([r["seconds"] for r in results]), "tokens_per_s": tokens / step,
                         "useful_gflops_6N": useful, "of_bf16_matmul": useful / bf16, "of_fp32_matmul": useful / fp32,
                         "runs": results}
    before, now = (summary[n]["median_step_seconds"] for n in sides)
    payload = {"model": args.model, "level": args.level, "base_params": base_params, "steps": args.steps,
               "tokens_per_step": tokens_per_step, "matmul_gflops_2048": {"float32": fp32, "bfloat16": bf16},
               "matmul_samples": rates, "sides": summary, "step_speedup": before / now,
               "flop_formula": "6 x base params x real (non-pad) tokens per step / median step seconds"}
    if curves:
        a, b = (curves[n]["losses"] for n in sides)
        tail = max(1, len(a) // 4)
        payload["curves"] = {n: c["losses"] for n, c in curves.items()}
        payload["curve_mean_abs_diff"] = sum(abs(x - y) for x, y in zip(a, b)) / len(a)
        payload["curve_last_quarter_mean"] = {n: sum(c["losses"][-tail:]) / tail for n, c in curves.items()}
    print(table([{"side": n, **s} for n, s in summary.items()],
                ["side", "median_step_seconds", "fixed_seconds", "tokens_per_s", "useful_gflops_6N",
                 "of_bf16_matmul", "of_fp32_matmul"]))
    print(f"matmul 2048²: float32 {fp32:.0f}, bf16 {bf16:.0f} GFLOP/s; step speedup {payload['step_speedup']:.2f}x")
    if curves:
        print(f"loss curves ({args.curve_steps} steps, same seed): mean |diff| {payload['curve_mean_abs_diff']:.4f}; "
              f"last-quarter means {payload['curve_last_quarter_mean']}")
    print("wrote", write_result(f"train_throughput_dtype_{args.label}", args, payload))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=["dtype", "hf"], default="dtype")
    parser.add_argument("--model", default="embedded", help="embedded | smollm2-360m (random weights)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: 12 for dtype, 4 for hf)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rank", type=int, default=None, help="LoRA rank (default: 16 for dtype, 8 for hf)")
    parser.add_argument("--lr", type=float, default=None, help="default: 2e-3 for dtype (the quick preset), 1e-3 for hf")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--curve-steps", type=int, default=40, help="dtype: steps of the loss-curve run per side")
    parser.add_argument("--level", default="metric-prefix", help="dtype: built-in data level (the quick preset's)")
    parser.add_argument("--label", default="now", help="dtype: names the result file")
    parser.add_argument("--worker", choices=["ranksweep", "hf"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    dtype = args.compare == "dtype"
    args.steps = args.steps or (12 if dtype else 4)
    args.rank = args.rank or (16 if dtype else 8)
    args.lr = args.lr or (2e-3 if dtype else 1e-3)
    if args.worker:
        worker(args)
        return
    if dtype:
        compare_dtypes(args)
        return

    gflops = []
    runs = {"ranksweep": [], "hf": []}
    for rep in range(args.repeats):
        gflops.append(matmul_gflops())
        order = ("ranksweep", "hf") if rep % 2 == 0 else ("hf", "ranksweep")
        for side in order:
            cmd = [sys.executable, __file__, "--compare", "hf", "--worker", side, "--model", args.model,
                   "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--rank", str(args.rank), "--lr", str(args.lr)]
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"{side} worker failed:\n{done.stderr[-3000:]}")
            runs[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"rep {rep} {side}: {runs[side][-1]['seconds']:.1f} s", file=sys.stderr)
    gflops.append(matmul_gflops())
    matmul = median(gflops)

    summary = {}
    for side, results in runs.items():
        seconds = median([r["seconds"] for r in results])
        first = results[0]
        tokens_per_s = first["real_tokens"] / seconds
        achieved = 6 * first["base_params"] * tokens_per_s / 1e9
        summary[side] = {
            "median_seconds": seconds,
            "seconds": [r["seconds"] for r in results],
            "real_tokens": first["real_tokens"],
            "real_tokens_per_s": tokens_per_s,
            "peak_rss_mib": median([r["peak_rss_mib"] for r in results]),
            "setup_peak_rss_mib": median([r["setup_peak_rss_mib"] for r in results]),
            "achieved_gflops_6N": achieved,
            "fraction_of_fp32_matmul": achieved / matmul,
        }
    first = runs["ranksweep"][0]
    payload = {
        "model": args.model,
        "base_params": first["base_params"],
        "rows": first["rows"],
        "real_tokens": first["real_tokens"],
        "labelled_tokens": first["labelled_tokens"],
        "hf_computed_tokens": first["computed_tokens_hf"],
        "matmul_fp32_gflops_2048": matmul,
        "matmul_samples": gflops,
        "flop_formula": "6 x base params x real (non-pad) tokens / seconds",
        "memory": "ru_maxrss of the side's own subprocess (includes the loaded model)",
        "sides": summary,
        "speedup": summary["hf"]["median_seconds"] / summary["ranksweep"]["median_seconds"],
    }
    rows = [{"side": side, **{k: v for k, v in s.items() if k != "seconds"}} for side, s in summary.items()]
    print(table(rows, ["side", "median_seconds", "real_tokens_per_s", "peak_rss_mib", "setup_peak_rss_mib",
                       "achieved_gflops_6N", "fraction_of_fp32_matmul"]))
    print(f"matmul fp32 2048²: {matmul:.1f} GFLOP/s; speedup (hf / ranksweep): {payload['speedup']:.2f}x")
    name = "train_throughput" if args.model == "embedded" else f"train_throughput_{args.model}"
    print("wrote", write_result(name, args, payload))


if __name__ == "__main__":
    main()
