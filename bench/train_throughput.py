"""SFT training throughput: ranksweep's trainer against the homework-style HF Trainer baseline.

Both sides train the same rows (the first steps × batch-size built-in training questions) for the same
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


def _examples(steps: int, batch_size: int):
    from trainers.data import read_qa
    from trainers.training import sft_examples
    from trainers.unitgen import builtin_data

    train_path, _ = builtin_data()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="embedded | smollm2-360m (random weights)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", choices=["ranksweep", "hf"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    gflops = []
    runs = {"ranksweep": [], "hf": []}
    for rep in range(args.repeats):
        gflops.append(matmul_gflops())
        order = ("ranksweep", "hf") if rep % 2 == 0 else ("hf", "ranksweep")
        for side in order:
            cmd = [sys.executable, __file__, "--worker", side, "--model", args.model, "--steps", str(args.steps),
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
