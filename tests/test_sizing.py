"""Adapter sizes predicted from the config alone, checked against real peft save_pretrained files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from sweep import sizing
from sweep.bundle import rest_bytes, submission_bytes
from sweep.sizing import (
    DEFAULT_SFT_RANKS,
    adapter_size,
    adapter_tensors,
    budget_bytes,
    check_budget,
    config_for,
    largest_feasible_pairs,
    pair_size,
    safetensors_header,
)
from trainers.errors import RanksweepError

PARAMS_PER_RANK = {"smollm2-135m": 305_280, "smollm2-360m": 542_720}


def _peft_model(config, rank: int):
    """An all-linear LoRA built on the meta device, then given real but uninitialised memory (no init cost)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
        peft_model = get_peft_model(
            model, LoraConfig(r=rank, target_modules="all-linear", bias="none", task_type="CAUSAL_LM")
        )
    return peft_model.to_empty(device="cpu")


def _to_fp16(peft_model) -> None:
    for name, parameter in peft_model.named_parameters():
        if "lora_" in name:
            parameter.data = parameter.data.half()


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("shape", sorted(PARAMS_PER_RANK))
def test_raw_bytes_equal_real_save_pretrained(shape: str, tmp_path: Path):
    config = config_for(shape)
    for rank in (1, 3, 16, 64):
        peft_model = _peft_model(config, rank)
        for dtype in ("fp32", "fp16"):
            if dtype == "fp16":
                _to_fp16(peft_model)  # what a user does before save_pretrained to halve the file
            peft_model.save_pretrained(tmp_path / dtype)
            saved = tmp_path / dtype / "adapter_model.safetensors"
            predicted = adapter_size(config, rank, dtype)
            header = safetensors_header(adapter_tensors(config, rank), dtype)
            with saved.open("rb") as handle:
                assert handle.read(len(header)) == header, (shape, rank, dtype)
            assert saved.stat().st_size == predicted.raw_bytes, (shape, rank, dtype)
            assert predicted.header_bytes == len(header)
            assert predicted.params == rank * PARAMS_PER_RANK[shape]
            saved.unlink()  # up to 139 MB each


@pytest.mark.fast
def test_product_figures_and_params_per_rank():
    small, large = config_for("smollm2-135m"), config_for("smollm2-360m")
    assert adapter_size(large, 16).raw_bytes == 34_793_120
    assert adapter_size(small, 4).raw_bytes == 4_938_648
    for rank in (1, 7, 256):
        assert adapter_size(large, rank).params == 542_720 * rank
        assert adapter_size(small, rank).params == 305_280 * rank
    names = [name for name, _ in adapter_tensors(large, 1)]
    assert names[0] == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert len(names) == 32 * 7 * 2 and not any("lm_head" in name for name in names)
    # fp16 halves the data, not the header.
    fp32, fp16 = adapter_size(large, 16, "fp32"), adapter_size(large, 16, "fp16")
    assert fp32.raw_bytes - fp32.header_bytes == 2 * (fp16.raw_bytes - fp16.header_bytes)


@pytest.mark.fast
def test_budget_is_mib_and_pairs_add_up():
    assert budget_bytes(50) == 52_428_800
    assert budget_bytes(0.5) == 524_288
    config = config_for("smollm2-360m")
    pair = pair_size(config, 8, 16, rest_bytes=10_000)
    assert pair.total_raw_bytes == 17_425_352 + 34_793_120
    # Deflate keeps 0.92-0.925 of trained fp32 LoRA weights (docs/benchmarks.md §5, zipped bound), so rank 8 +
    # rank 16 on the 360M model zips to about 45.5 MiB, not the 32-35 MB a guess from text files would give.
    assert 45.3 < pair.total_compressed_bytes / 2**20 < 46.5
    assert pair.total_compressed_bytes > 0.915 * pair.total_raw_bytes + 10_000
    for bad in (0, -1, float("nan")):
        with pytest.raises(RanksweepError):
            budget_bytes(bad)
    with pytest.raises(RanksweepError, match="rank 0 is not valid"):
        adapter_size(config, 0)


@pytest.mark.fast
def test_budget_below_the_smallest_pair_names_its_size():
    config = config_for("smollm2-135m")
    smallest = pair_size(config, 2, 4)
    check_budget(config, [2, 8], [4, 16], smallest.total_compressed_bytes, "fp32")  # just fits: no error
    with pytest.raises(RanksweepError) as error:
        check_budget(config, [2, 8], [4, 16], smallest.total_compressed_bytes - 1, "fp32")
    assert f"{smallest.total_compressed_bytes / 2**20:.2f} MiB" in str(error.value)
    assert "SFT rank 2, RFT rank 4" in str(error.value)


@pytest.mark.fast
def test_largest_feasible_pairs_are_tight():
    config = config_for("smollm2-135m")
    budget = budget_bytes(20)
    pairs = largest_feasible_pairs(config, budget, "fp16", rest_bytes=50_000)
    # fp16 rank 32 is 18.6 MiB; rank 64 alone would be 37 MiB.
    assert [p.sft.rank for p in pairs] == [r for r in DEFAULT_SFT_RANKS if r <= 32]
    for pair in pairs:
        assert pair.total_compressed_bytes <= budget
        assert pair_size(config, pair.sft.rank, pair.rft.rank + 1, "fp16", 50_000).total_compressed_bytes > budget


@pytest.mark.fast
def test_prediction_from_a_folder_with_only_config_json(tmp_path: Path):
    config_for("smollm2-135m").save_pretrained(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
    assert adapter_size(config_for(str(tmp_path)), 4).raw_bytes == 4_938_648


def _train_lora(loaded, rank: int, steps: int):
    """A few AdamW steps of an all-linear LoRA so that lora_B holds trained, non-zero values."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(
        copy.deepcopy(loaded.model),
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", bias="none", task_type="CAUSAL_LM"),
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    texts = [f"How many gram are there per {n} kg? <answer>{n * 1000}</answer>" for n in range(1, 5)]
    batch = loaded.tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_compressed_bound_holds_on_a_trained_adapter(tiny, tmp_path: Path):
    rank = 256  # about 2 MB of weights on the tiny model, so the file is mostly data as on real models
    # Trained past its init: after 12 steps the fp16 bound sat 2.1% above the truth, after 40 steps 1.4%.
    model = _train_lora(tiny, rank, steps=40)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert all(p.abs().max() > 0 for p in lora_b)
    for dtype in ("fp32", "fp16"):
        if dtype == "fp16":
            _to_fp16(model)
        folder = tmp_path / dtype
        model.save_pretrained(folder)
        predicted = adapter_size(tiny.model.config, rank, dtype)
        assert (folder / "adapter_model.safetensors").stat().st_size == predicted.raw_bytes
        # One adapter folder zipped alone: its members plus the 22-byte end record.
        zipped = submission_bytes(None, sft_dir=folder)
        bound = predicted.compressed_bytes + sizing.ZIP_END_RECORD
        assert zipped <= bound <= 1.02 * zipped, (dtype, zipped, bound, bound / zipped)


def test_size_without_ranks_lists_tight_pairs(cli):
    result = cli("size", "--base-model", "smollm2-360m", "--budget-mb", "30", "--adapter-dtype", "fp16", "--json")
    assert result.returncode == 0, result.stderr
    pairs = json.loads(result.stdout)
    config = config_for("smollm2-360m")
    assert [p["sft"]["rank"] for p in pairs] == [1, 2, 4, 8, 16]  # fp16 rank 32 alone is 33.1 MiB
    for pair in pairs:
        assert pair["fits"] and pair["total_compressed_bytes"] <= budget_bytes(30)
        bigger = pair_size(config, pair["sft"]["rank"], pair["rft"]["rank"] + 1, "fp16")
        assert bigger.total_compressed_bytes > budget_bytes(30)


def test_size_json_on_a_config_only_folder_with_homework(cli, tmp_path: Path):
    model = tmp_path / "model"
    config_for("smollm2-135m").save_pretrained(model)
    (tmp_path / "hw" / "homework").mkdir(parents=True)
    (tmp_path / "hw" / "homework" / "sft.py").write_text("DEFAULT_LORA_RANK = 8\n" * 100)
    result = cli("size", "--base-model", model, "--sft-rank", "4", "--rft-rank", "16", "--homework", tmp_path / "hw",
                 "--budget-mb", "20", "--json")
    assert result.returncode == 0, result.stderr  # a question, not a check: no error when it does not fit
    report = json.loads(result.stdout)
    assert {k: report["sft"][k] for k in ("rank", "params", "raw_bytes")} == {
        "rank": 4, "params": 1_221_120, "raw_bytes": 4_938_648}
    assert {k: report["rft"][k] for k in ("rank", "params", "raw_bytes")} == {
        "rank": 16, "params": 4_884_480, "raw_bytes": 19_593_064}
    assert report["total_raw_bytes"] == 4_938_648 + 19_593_064
    assert report["rest_bytes"] == rest_bytes(tmp_path / "hw") < 300  # 2,200 bytes of repeated text
    expected = pair_size(config_for("smollm2-135m"), 4, 16, rest_bytes=report["rest_bytes"])
    assert report["total_compressed_bytes"] == expected.total_compressed_bytes
    assert report["budget_bytes"] == 20 * 2**20
    assert report["fits"] is False  # about 21.0 MiB zipped


@pytest.mark.fast
def test_size_text_says_whether_it_fits(capsys):
    from sweep.cli import main

    assert main(["size", "--base-model", "smollm2-360m", "--sft-rank", "8", "--rft-rank", "16"]) == 0
    fits = capsys.readouterr().out
    assert "17,425,352" in fits and "34,793,120" in fits and "Fits: " in fits
    assert main(["size", "--base-model", "smollm2-360m", "--sft-rank", "16", "--rft-rank", "16"]) == 0
    assert "Does not fit: up to 11.73" in capsys.readouterr().out  # 61.73 MiB against 50


@pytest.mark.fast
def test_unknown_model_is_a_user_error():
    with pytest.raises(RanksweepError, match="Base model 'no-such-model' was not found"):
        config_for("no-such-model")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--sft-rank", "0", "--rft-rank", "4"], "--sft-rank '0' is not valid"),
        (["--sft-rank", "4", "--rft-rank", "2.5"], "--rft-rank '2.5' is not valid"),
        (["--sft-rank", "4"], "Give both --sft-rank and --rft-rank"),
        (["--budget-mb", "-3"], "--budget-mb '-3' is not valid"),
        (["--homework", "/nonexistent-ranksweep-dir"], "no homework/ folder"),
    ],
)
def test_size_bad_input_is_one_line(cli, args, words):
    result = cli("size", "--base-model", "smollm2-135m", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr


def test_size_budget_below_every_pair_exits_2_with_the_size(cli):
    result = cli("size", "--base-model", "smollm2-360m", "--budget-mb", "1")
    assert result.returncode == 2
    smallest = pair_size(config_for("smollm2-360m"), 1, 1)
    assert f"{smallest.total_compressed_bytes / 2**20:.2f} MiB" in result.stderr
    assert result.stderr.count("\n") == 1
