"""Size prediction: predicted against measured adapter bytes.

Raw: for both SmolLM2 shapes, fp32 and fp16, and the given ranks, an all-linear LoRA is built on the meta
device, given real memory (`to_empty`) and saved with peft's `save_pretrained` (as tests/test_sizing.py
does); its adapter_model.safetensors size is compared with `sweep.sizing.adapter_size(...).raw_bytes`.
Zipped: LoRAs trained a few real steps on the embedded model with ranksweep's trainer (fp32, and the same
weights cast to fp16) are zipped as the submission zips them, and compared with the predicted bound,
which must never be below the truth and should be within 2% above it.

    python bench/size_prediction.py [--ranks 1,2,3,...] [--trained-ranks 4,16] [--steps 6] [--adapters DIR,...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table, write_result  # noqa: E402

KEEP = Path(__file__).resolve().parent.parent / "runs" / "bench" / "adapters"  # runs/ is never committed
DEFAULT_RANKS = "1,2,3,4,8,16,31,32,64"


def _meta_peft(config, rank: int):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
        peft_model = get_peft_model(model, LoraConfig(r=rank, target_modules="all-linear", bias="none",
                                                      task_type="CAUSAL_LM"))
    return peft_model.to_empty(device="cpu")


def raw_checks(ranks: list[int], tmp: Path) -> list[dict]:
    from sweep.sizing import adapter_size, config_for

    rows = []
    for shape in ("smollm2-135m", "smollm2-360m"):
        config = config_for(shape)
        for rank in ranks:
            peft_model = _meta_peft(config, rank)
            for dtype in ("fp32", "fp16"):
                if dtype == "fp16":
                    for name, p in peft_model.named_parameters():
                        if "lora_" in name:
                            p.data = p.data.half()
                peft_model.save_pretrained(tmp / dtype)
                saved = tmp / dtype / "adapter_model.safetensors"
                measured = saved.stat().st_size
                predicted = adapter_size(config, rank, dtype).raw_bytes
                rows.append({"shape": shape, "rank": rank, "dtype": dtype, "predicted": predicted,
                             "measured": measured, "diff": predicted - measured})
                saved.unlink()
            del peft_model
        print(f"raw: {shape} done", file=sys.stderr)
    return rows


def zipped_checks(ranks: list[int], steps: int, batch_size: int, adapters: list[Path]) -> list[dict]:
    """Train an SFT adapter per rank for `steps` steps, add the given already-trained fp32 adapter folders
    (e.g. from `ranksweep train`), and check each fp32 and fp16 copy's zipped size against the bound."""
    import json
    import shutil

    from sweep.sizing import config_for
    from trainers.data import read_qa
    from trainers.models import load_model
    from trainers.training import TrainConfig, sft_examples, train_adapter
    from trainers.unitgen import builtin_data

    rows = []
    if ranks:
        loaded = load_model("embedded", "cpu")
        examples = sft_examples(read_qa(builtin_data()[0])[: steps * batch_size])
        for rank in ranks:
            fp32 = KEEP / f"r{rank}-fp32"  # kept for bench/grading_throughput.py
            config = TrainConfig(kind="sft", rank=rank, lr=1e-3, batch_size=batch_size, seed=0)
            shutil.rmtree(fp32, ignore_errors=True)
            result = train_adapter(loaded, examples, config, fp32, progress=False)
            rows += _zip_rows(loaded.model.config, rank, fp32, result.steps)
    for folder in adapters:
        rank = json.loads((folder / "adapter_config.json").read_text())["r"]
        steps_run = json.loads((folder / "ranksweep.json").read_text())["steps"]
        rows += _zip_rows(config_for("embedded"), rank, folder, steps_run)
    return rows


def _zip_rows(config, rank: int, fp32: Path, steps: int) -> list[dict]:
    """The fp32 adapter and an fp16 copy of the same weights, each zipped as the submission zips it."""
    import shutil

    from safetensors.torch import load_file, save_file

    from sweep import sizing
    from sweep.bundle import submission_bytes

    fp16 = KEEP / f"{fp32.name}-as-fp16"
    shutil.rmtree(fp16, ignore_errors=True)
    shutil.copytree(fp32, fp16)
    weights = load_file(fp32 / "adapter_model.safetensors")
    save_file({k: v.half() for k, v in weights.items()}, fp16 / "adapter_model.safetensors", metadata={"format": "pt"})
    rows = []
    for dtype, folder in (("fp32", fp32), ("fp16", fp16)):
        predicted = sizing.adapter_size(config, rank, dtype)
        raw = (folder / "adapter_model.safetensors").stat().st_size
        zipped = submission_bytes(None, sft_dir=folder)  # one adapter folder zipped alone
        bound = predicted.compressed_bytes + sizing.ZIP_END_RECORD
        rows.append({"shape": "embedded 135M (trained)", "rank": rank, "dtype": dtype, "steps": steps,
                     "raw_predicted": predicted.raw_bytes, "raw_measured": raw, "zip_measured": zipped,
                     "zip_bound": bound, "bound_over_truth": bound / zipped - 1, "zip_ratio": zipped / raw})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default=DEFAULT_RANKS, help="ranks for the raw check (1..64 in full: '1-64')")
    parser.add_argument("--trained-ranks", default="4,16", help="ranks trained for --steps here ('' for none)")
    parser.add_argument("--adapters", default="", help="comma list of fp32 adapter folders trained elsewhere "
                        "(e.g. by `ranksweep train ... --epochs 1`) to check as well")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import warnings

    warnings.filterwarnings("ignore")
    if "-" in args.ranks:
        low, high = map(int, args.ranks.split("-"))
        ranks = list(range(low, high + 1))
    else:
        ranks = [int(r) for r in args.ranks.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        raw = raw_checks(ranks, Path(tmp))
    trained = [int(r) for r in args.trained_ranks.split(",") if r]
    zipped = zipped_checks(trained, args.steps, args.batch_size, [Path(a) for a in args.adapters.split(",") if a])
    exact = sum(r["diff"] == 0 for r in raw)
    payload = {
        "raw_ranks": ranks,
        "raw_checks": len(raw),
        "raw_exact": exact,
        "raw_max_abs_diff_bytes": max(abs(r["diff"]) for r in raw),
        "raw": raw,
        "zipped": zipped,
        "zip_bound_never_below": all(r["zip_bound"] >= r["zip_measured"] for r in zipped),
        "zip_bound_max_over": max(r["bound_over_truth"] for r in zipped),
    }
    print(f"raw: {exact}/{len(raw)} exact to the byte (max |diff| {payload['raw_max_abs_diff_bytes']} bytes)")
    print(table([r for r in raw if r["rank"] in (1, 16, 64)], ["shape", "rank", "dtype", "predicted", "measured", "diff"]))
    print(table(zipped, ["shape", "rank", "dtype", "raw_measured", "zip_measured", "zip_bound", "bound_over_truth",
                         "zip_ratio"]))
    print("wrote", write_result("size_prediction", args, payload))


if __name__ == "__main__":
    main()
