"""Peak memory of each stage of the quick demo, in one process as the study runs them.

The stages run in the demo's order and at its widths, one batch each (a stage's peak is reached in its
widest batch, so more batches would only cost time): load the base model, train an SFT adapter, grade it,
sample RFT chains with the generator's own copy of the model, train an RFT adapter on them, grade it.
Before each stage the kernel's peak-RSS counter is reset (`/proc/self/clear_refs`, value 5), so each
stage's peak is its own; the RSS held after it is what the next stage starts from. `--convert` first
converts the embedded model in a child process with an empty cache and reports that process's peak.

    python bench/stage_memory.py [--model embedded] [--convert] [--label now] [--code CHECKOUT]

`--code` imports `trainers` from another checkout (e.g. the commit before a change) to measure it the same way.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result  # noqa: E402


def _status(field: str) -> float:
    """A VmXXX line of /proc/self/status, in MiB."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1)) / 1024


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def convert_peak() -> dict:
    """Convert the embedded GGUF in a child process with an empty cache: its wall seconds and peak RSS."""
    with tempfile.TemporaryDirectory() as cache:
        code = ("import resource, time; from trainers.models import embedded_model_dir; t = time.perf_counter(); "
                "embedded_model_dir(); print(time.perf_counter() - t, "
                "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                              env={"RANKSWEEP_CACHE": cache, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
        seconds, peak = map(float, done.stdout.split())
    return {"stage": "convert GGUF (own process)", "seconds": seconds, "peak_mib": peak, "held_after_mib": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--convert", action="store_true")
    parser.add_argument("--label", default="now")
    parser.add_argument("--code", type=Path, default=None, help="checkout whose trainers/ to measure")
    args = parser.parse_args()
    if args.code is not None:
        sys.path.insert(0, str(args.code.resolve()))

    import warnings

    warnings.filterwarnings("ignore")
    import torch

    import trainers
    from trainers.data import RFTRow, read_qa
    from trainers.grading import grade_model
    from trainers.models import load_model
    from trainers.rft_data import RFTSettings, generate_rft, sampling_dtype
    from trainers.training import TrainConfig, rft_examples, sft_examples, train_adapter
    from trainers.unitgen import builtin_data

    from sweep.space import PRESETS

    print("trainers from", Path(trainers.__file__).parent, file=sys.stderr)
    quick = PRESETS["quick"]
    effort = quick.effort
    train_path, valid_path = builtin_data(quick.level)
    train, valid = read_qa(train_path), read_qa(valid_path)
    stages = [convert_peak()] if args.convert else []
    state: dict = {}
    out = Path(tempfile.mkdtemp(prefix="stage-memory-"))

    def stage(name, fn):
        _reset_peak()
        start = time.perf_counter()
        fn()
        row = {"stage": name, "seconds": time.perf_counter() - start, "peak_mib": _status("VmHWM"),
               "held_after_mib": _status("VmRSS")}
        stages.append(row)
        print(json.dumps(row), file=sys.stderr)

    def load():
        state["loaded"] = load_model(args.model, "cpu")

    def config(kind, rank):
        return TrainConfig(kind=kind, rank=rank, lr=quick.space.lrs[0], epochs=quick.space.epochs[0],
                           batch_size=effort.batch_size, max_examples=effort.max_examples, seed=0)

    def sft_train():
        train_adapter(state["loaded"], sft_examples(train), config("sft", 16), out / "sft", progress=False, steps=2)

    def sft_grade():
        grade_model(state["loaded"], valid, kind="sft", adapter_dir=out / "sft", questions=64, progress=False)

    def rft_sample():
        generator = load_model(args.model, "cpu")  # RFT data samples with a copy of its own, as ensure_rft_data does
        if sampling_dtype("cpu") == "bfloat16":
            generator.model.to(torch.bfloat16)
        settings = RFTSettings(questions=RFTSettings.batch_size // effort.rft_samples, samples=effort.rft_samples,
                               max_new_tokens=effort.rft_max_new_tokens, prompt=quick.level)
        report = generate_rft(generator, train, settings, progress=False)
        state["rft_rows"] = report.rows or [RFTRow(r.question, r.answer, f"So <answer>{r.answer:g}</answer>")
                                            for r in train[:16]]
        del generator

    def rft_train():
        train_adapter(state["loaded"], rft_examples(state["rft_rows"]), config("rft", 16), out / "rft",
                      progress=False, steps=2)

    def rft_grade():
        grade_model(state["loaded"], valid, kind="rft", adapter_dir=out / "rft", questions=64, progress=False)

    for name, fn in [("load base model", load), ("SFT training, 2 steps of 16", sft_train),
                     ("SFT grading, 64 questions x 32 tokens", sft_grade),
                     ("RFT sampling, 32 questions x 4 chains x 64 tokens", rft_sample),
                     ("RFT training, 2 steps of 16", rft_train),
                     ("RFT grading, 64 questions x 128 tokens", rft_grade)]:
        stage(name, fn)
    payload = {"label": args.label, "code": str(args.code or ROOT), "stages": stages,
               "process_peak_mib": max(s["peak_mib"] for s in stages)}
    for row in stages:
        print(f"{row['stage']:<52} {row['seconds']:7.1f} s  peak {row['peak_mib']:7.0f} MiB  held after "
              f"{row['held_after_mib'] or 0:7.0f} MiB")
    print("wrote", write_result(f"stage_memory_{args.label}", args, payload))


if __name__ == "__main__":
    main()
